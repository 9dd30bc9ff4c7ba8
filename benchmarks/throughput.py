"""Throughput of ``klio-assets run downsampled_audio`` against a plain loop, and rerun cost.

Measured side by side in one run, on the same real files (page cache warmed first):

(a) ``plain_downsample.py``: soundfile + soxr in a 2-process pool, timed from process start;
(c) ``klio-assets run downsampled_audio`` on a fresh home, timed from process start (Dagster
    run, one Beam job, per-track bookkeeping, everything a user waits for);
then the same ``klio-assets run`` again (everything already materialized).

Usage (from the repo root)::

    python benchmarks/throughput.py [--corpus dev-corpus] [--tracks N] [--workers 2]

The corpus is ``../shared/corpus/build_dev_corpus.sh dev-corpus`` (real music and speech from
Debian packages; not committed). Only formats the plain loop reads are used (M4A and Opus are
left out: libsndfile reads neither completely). Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import REPO, corpus_files, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(REPO, "dev-corpus"))
    parser.add_argument("--tracks", type=int, default=None, help="at most this many files (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    files = corpus_files(os.path.abspath(args.corpus), args.tracks)
    for path in files:  # warm the page cache so that neither side pays the disk
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    work = tempfile.mkdtemp(prefix="klio-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env["KLIO_ASSETS_HOME"] = os.path.join(work, "home")
    env["OPENBLAS_NUM_THREADS"] = "1"
    python = sys.executable
    try:
        wall_a, cpu_a, plain = timed(
            [python, os.path.join(REPO, "benchmarks", "plain_downsample.py"), "--out", os.path.join(work, "plain"),
             "--workers", str(args.workers), *files], env)
        if plain.returncode:
            sys.exit(plain.stderr)
        plain_out = json.loads(plain.stdout.strip().splitlines()[-1])
        audio_s = plain_out["audio_s"]

        manifest = os.path.join(work, "tracks.csv")
        with open(manifest, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["track_id", "path"])
            for i, path in enumerate(files):
                writer.writerow([f"t{i:05d}", path])
        cli = [python, "-m", "klio_assets.cli"]
        add = subprocess.run([*cli, "add", "--manifest", manifest, "--allow-root", "/"], env=env,
                             capture_output=True, text=True)
        if add.returncode:
            sys.exit(add.stderr)

        wall_c, cpu_c, first = timed([*cli, "run", "downsampled_audio", "--json"], env)
        first_out = json.loads(first.stdout)
        wall_r, cpu_r, rerun = timed([*cli, "run", "downsampled_audio", "--json"], env)
        rerun_out = json.loads(rerun.stdout)
        floor, _, _ = timed([python, "-c", "import dagster, klio_assets.launch"], env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    counts = first_out["assets"]["downsampled_audio"]
    beam_s = first_out["beam_seconds"]
    figures = {
        "tracks": len(files),
        "audio_hours": round(audio_s / 3600, 3),
        "plain_wall_s": round(wall_a, 2),
        "plain_cpu_s": round(cpu_a, 2),
        "klio_wall_s": round(wall_c, 2),
        "klio_cpu_s": round(cpu_c, 2),
        "klio_beam_job_s": beam_s,
        "klio_counts": counts,
        "plain_audio_s_per_wall_s": round(audio_s / wall_a, 1),
        "klio_audio_s_per_wall_s": round(audio_s / wall_c, 1),
        "plain_audio_s_per_cpu_s": round(audio_s / cpu_a, 1),
        "klio_audio_s_per_cpu_s": round(audio_s / cpu_c, 1),
        "ratio_c_over_a": round(wall_a / wall_c, 3),
        "ratio_beam_job_over_a": round(wall_a / beam_s, 3) if beam_s else None,
        "plain_cores_busy": round(cpu_a / wall_a, 2),
        "klio_cores_busy": round(cpu_c / wall_c, 2),
        "rerun_wall_s": round(wall_r, 2),
        "rerun_over_first": round(wall_r / wall_c, 4),
        "rerun_counts": rerun_out["assets"]["downsampled_audio"],
        "rerun_runs_launched": len(rerun_out["runs"]),
        "python_dagster_import_floor_s": round(floor, 2),
        "rerun_minus_import_floor_over_first": round(max(0.0, wall_r - floor) / wall_c, 4),
    }
    print(f"{len(files)} real tracks, {audio_s / 3600:.2f} h of audio")
    print(f"(a) plain soundfile+soxr, {args.workers} processes: {wall_a:6.1f} s wall, {cpu_a:6.1f} CPU-s, "
          f"{audio_s / wall_a:5.0f} audio-s/s, {cpu_a / wall_a:.2f} cores busy")
    print(f"(c) klio-assets run:                   {wall_c:6.1f} s wall, {cpu_c:6.1f} CPU-s, "
          f"{audio_s / wall_c:5.0f} audio-s/s, {cpu_c / wall_c:.2f} cores busy (Beam job {beam_s:.1f} s)")
    print(f"c/a throughput: {wall_a / wall_c:.3f} end to end, {wall_a / beam_s:.3f} for the Beam job alone"
          if beam_s else "")
    print(f"rerun: {wall_r:.2f} s = {wall_r / wall_c:.4f} x first; {len(rerun_out['runs'])} runs launched; "
          f"python + import dagster alone: {floor:.2f} s")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
