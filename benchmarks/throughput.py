"""Throughput of ``klio-assets run downsampled_audio`` against a plain loop and plain Dagster + Beam.

Measured side by side in one run, on the same real tracks (200 by default, see ``corpus.py``;
page cache warmed first), each timed from process start with its children's CPU:

(a) ``plain_downsample.py``: soundfile + soxr in a 2-process pool (the decoder's limit);
(b) ``plain_dagster_beam.py``: the same hand-written as a plain Dagster asset + plain Beam
    pipeline with the same skip check (one ranged Dagster run, one Beam job);
(c) ``klio-assets run downsampled_audio`` on a fresh home (Dagster run, one Beam job per
    batch, per-track bookkeeping, everything a user waits for).

Reports audio-seconds per wall second and per CPU-second, c/a, cores busy, and the lines of
code of (b) against the ``downsampled_audio`` definition. ``rerun.py`` measures running the
same batch again.

Usage (from the repo root)::

    python benchmarks/throughput.py [--corpus dev-corpus] [--tracks 200] [--workers 2]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

from corpus import DEFAULT_CORPUS, bench_files, warm
from harness import PYTHON, REPO, clean_env, code_lines, final_json, klio_home, klio_run, timed

TARGET_C_OVER_A = 0.9
TARGET_CORES = 1.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    files = bench_files(args.corpus, args.tracks)
    warm(files)
    work = tempfile.mkdtemp(prefix="klio-bench-")
    env = clean_env()
    here = os.path.join(REPO, "benchmarks")
    try:
        wall_a, cpu_a, plain = timed(
            [
                PYTHON,
                os.path.join(here, "plain_downsample.py"),
                "--out",
                os.path.join(work, "plain"),
                "--workers",
                str(args.workers),
                *files,
            ],
            env,
        )
        audio_s = json.loads(plain.stdout.strip().splitlines()[-1])["audio_s"]
        wall_b, cpu_b, plain_beam = timed(
            [
                PYTHON,
                os.path.join(here, "plain_dagster_beam.py"),
                "--home",
                os.path.join(work, "plain-home"),
                "--out",
                os.path.join(work, "plain-beam"),
                "--workers",
                str(args.workers),
                *files,
            ],
            env,
        )
        out_b = json.loads(plain_beam.stdout.strip().splitlines()[-1])
        env = klio_home(
            os.path.join(work, "home"), [(f"t{i:05d}", path) for i, path in enumerate(files)]
        )
        wall_c, cpu_c, out_c = klio_run(["downsampled_audio"], env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    beam_s = out_c["beam_seconds"]
    loc_b = code_lines(
        os.path.join(here, "plain_dagster_beam.py"),
        "# --- user code ---",
        "# --- end of user code ---",
    )
    loc_c = code_lines(os.path.join(REPO, "klio_assets", "analyses", "downsampled_audio.py"))
    figures = {
        "tracks": len(files),
        "audio_hours": round(audio_s / 3600, 3),
        "plain_wall_s": round(wall_a, 2),
        "plain_cpu_s": round(cpu_a, 2),
        "plain_dagster_beam_wall_s": round(wall_b, 2),
        "plain_dagster_beam_cpu_s": round(cpu_b, 2),
        "plain_dagster_beam_computed": out_b["computed"],
        "klio_wall_s": round(wall_c, 2),
        "klio_cpu_s": round(cpu_c, 2),
        "klio_beam_job_s": beam_s,
        "klio_counts": out_c["assets"]["downsampled_audio"],
        "plain_audio_s_per_wall_s": round(audio_s / wall_a, 1),
        "plain_dagster_beam_audio_s_per_wall_s": round(audio_s / wall_b, 1),
        "klio_audio_s_per_wall_s": round(audio_s / wall_c, 1),
        "plain_audio_s_per_cpu_s": round(audio_s / cpu_a, 1),
        "plain_dagster_beam_audio_s_per_cpu_s": round(audio_s / cpu_b, 1),
        "klio_audio_s_per_cpu_s": round(audio_s / cpu_c, 1),
        "ratio_c_over_a": round(wall_a / wall_c, 3),
        "ratio_b_over_a": round(wall_a / wall_b, 3),
        "ratio_c_over_b": round(wall_b / wall_c, 3),
        "ratio_beam_job_over_a": round(wall_a / beam_s, 3) if beam_s else None,
        "plain_cores_busy": round(cpu_a / wall_a, 2),
        "plain_dagster_beam_cores_busy": round(cpu_b / wall_b, 2),
        "klio_cores_busy": round(cpu_c / wall_c, 2),
        "loc_plain_dagster_beam": loc_b,
        "loc_klio_downsampled_audio": loc_c,
        "loc_reduction": round(1 - loc_c / loc_b, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    figures["targets"] = {
        "c_over_a>=0.9": figures["ratio_c_over_a"] >= TARGET_C_OVER_A,
        "klio_cores_busy>=1.8": figures["klio_cores_busy"] >= TARGET_CORES,
    }
    print(
        f"{len(files)} real tracks, {audio_s / 3600:.2f} h of audio (load average {figures['load_average_1m']})"
    )
    for label, wall, cpu in (
        ("(a) plain soundfile+soxr pool", wall_a, cpu_a),
        ("(b) plain Dagster asset + Beam", wall_b, cpu_b),
        ("(c) klio-assets run", wall_c, cpu_c),
    ):
        print(
            f"{label:32s} {wall:7.1f} s wall {cpu:7.1f} CPU-s  {audio_s / wall:6.0f} audio-s/s "
            f"{audio_s / cpu:6.0f} audio-s/CPU-s  {cpu / wall:.2f} cores busy"
        )
    print(
        f"c/a {wall_a / wall_c:.3f} (target >= {TARGET_C_OVER_A}), b/a {wall_a / wall_b:.3f}, "
        f"c/b {wall_b / wall_c:.3f}; klio's Beam job alone {beam_s:.1f} s"
    )
    print(
        f"lines of code: plain Dagster + Beam {loc_b}, downsampled_audio {loc_c} "
        f"({100 * (1 - loc_c / loc_b):.0f} % less)"
    )
    final_json("throughput", figures)


if __name__ == "__main__":
    main()
