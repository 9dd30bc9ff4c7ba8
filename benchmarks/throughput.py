"""Throughput of ``klio-assets run downsampled_audio`` against a plain loop and plain Dagster + Beam.

Measured side by side in one run, on the same real tracks (200 by default, see ``corpus.py``:
1,000 distinct tracks are the 209 files it makes plus tagged stream copies of them;
page cache warmed first), each timed from process start with its children's CPU:

(a) ``plain_downsample.py``: soundfile + soxr in a 2-process pool (the decoder's limit);
(b) ``plain_dagster_beam.py``: the same hand-written as a plain Dagster asset + plain Beam
    pipeline with the same skip check (one ranged Dagster run, one Beam job);
(c) ``klio-assets run downsampled_audio`` on a fresh home (Dagster run, one Beam job per
    batch, per-track bookkeeping, everything a user waits for).

Reports audio-seconds per wall second and per CPU-second, c/a, cores busy, and the lines of
code of (b) against the ``downsampled_audio`` definition. ``rerun.py`` measures running the
same batch again.

Then where (c) loses against (a): the time outside the Beam job (CLI, Dagster, bookkeeping),
the start of the worker process (Python, the engine, Beam), the per-track framework work the
plain loop does not do (content hash and probe, measured alone over the same files), and,
unless ``--no-profile``, the Beam job once more with every check and every analysed group
timed per worker thread (when the checks end, when each lane ends).

Usage (from the repo root)::

    python benchmarks/throughput.py [--corpus dev-corpus] [--tracks 200] [--workers 2]
                                    [--no-profile] [--repeat N]
                                    [--beam-options=OPTIONS]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

from balance import profile as lane_profile
from corpus import DEFAULT_CORPUS, bench_files, warm
from harness import PYTHON, REPO, clean_env, code_lines, final_json, klio_home, klio_run, timed

TARGET_C_OVER_A = 0.95
TARGET_C_OVER_A_1000 = 0.97  # from 1,000 tracks on
TARGET_CORES = 1.8

_WORKER_START = """
import time
started = time.perf_counter()
from klio_assets.worker.beam_imports import import_beam_without_extras
import_beam_without_extras()
import klio_assets.worker.pipeline, klio_assets.analyses.downsampled_audio
print(time.perf_counter() - started)
"""


def framework_costs(files: list[str], env: dict[str, str]) -> dict[str, float]:
    """CPU-seconds of the per-track work the plain loop does not do, over ``files``
    (content hash, probe), and the seconds a worker process takes to start."""
    from klio_assets.worker.audio import DecodeLimits, probe
    from klio_assets.worker.storage import hash_file

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    started = cpu()
    for path in files:
        hash_file(path)
    hashed = cpu()
    for path in files:
        probe(path, track_id="t", uri=path, limits=DecodeLimits())
    probed = cpu()
    wall = time.perf_counter()
    imports = subprocess.run(
        [PYTHON, "-c", _WORKER_START], env=env, capture_output=True, text=True, check=True
    )
    return {
        "hash_cpu_s": round(hashed - started, 2),
        "probe_cpu_s": round(probed - hashed, 2),
        "worker_imports_s": round(float(imports.stdout.strip()), 2),
        "worker_process_start_s": round(time.perf_counter() - wall, 2),
    }


def bound_c_over_a(cpu_a: float, computed_share: float, unavoidable: dict[str, float]) -> float:
    """The highest c/a possible: (c) computing the same audio at (a)'s cost per second of it,
    plus only the CPU it cannot shed, on the cores as busy as (a) keeps them.

    (a)'s wall is ``cpu_a / busy_a``; (c)'s is at least ``(cpu_a * computed_share +
    unavoidable) / busy_a``, ``computed_share`` being the part of the audio (c) decodes (a
    track whose bytes another track has is shared, not decoded again). The unavoidable CPU:
    the launcher process (Python, Dagster's import, instance, run and per-track events: the
    design gives every track its materialization), the worker process's imports (the job runs
    out of the launcher's process so that a crashing decoder cannot take it down), and the
    content hash and probe (the hash is the dedup key and ``source_audio``'s data version).
    """
    return round(cpu_a / (cpu_a * computed_share + sum(unavoidable.values())), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true", help="skip the per-lane profile")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure (a) and (c) this many more times, alternately, on fresh outputs and homes "
        "(the machine's speed drifts: a median of pairs is steadier than one pair)",
    )
    parser.add_argument(
        "--beam-options",
        default="",
        help="KLIO_ASSETS_BEAM_OPTIONS for (c), e.g. --direct_running_mode=multi_processing",
    )
    args = parser.parse_args()

    files = bench_files(args.corpus, args.tracks)
    warm(files)
    work = tempfile.mkdtemp(prefix="klio-bench-")
    env = clean_env()
    here = os.path.join(REPO, "benchmarks")
    try:

        def plain_run(out: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
            command = [PYTHON, os.path.join(here, "plain_downsample.py"), "--out", out]
            return timed([*command, "--workers", str(args.workers), *files], env)

        wall_a, cpu_a, plain = plain_run(os.path.join(work, "plain"))
        audio_s = json.loads(plain.stdout.strip().splitlines()[-1])["audio_s"]
        # each run's outputs go once measured (1,000 tracks write ~2.5 GB a run)
        shutil.rmtree(os.path.join(work, "plain"), ignore_errors=True)
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
        for name in ("plain-home", "plain-beam"):
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)
        env = klio_home(
            os.path.join(work, "home"), [(f"t{i:05d}", path) for i, path in enumerate(files)]
        )
        if args.beam_options:
            env["KLIO_ASSETS_BEAM_OPTIONS"] = args.beam_options
        wall_c, cpu_c, out_c = klio_run(["downsampled_audio"], env)
        shutil.rmtree(os.path.join(work, "home"), ignore_errors=True)
        pairs = [(wall_a, wall_c)]
        for n in range(1, args.repeat):
            wall_ai, _, _ = plain_run(os.path.join(work, f"plain{n}"))
            shutil.rmtree(os.path.join(work, f"plain{n}"), ignore_errors=True)
            env_i = klio_home(
                os.path.join(work, f"home{n}"),
                [(f"t{i:05d}", path) for i, path in enumerate(files)],
            )
            if args.beam_options:
                env_i["KLIO_ASSETS_BEAM_OPTIONS"] = args.beam_options
            wall_ci, _, _ = klio_run(["downsampled_audio"], env_i)
            shutil.rmtree(os.path.join(work, f"home{n}"), ignore_errors=True)
            pairs.append((wall_ai, wall_ci))
        costs = framework_costs(files, env)
        batch = [(f"t{i:05d}", path) for i, path in enumerate(files)]
        lanes = None if args.no_profile else lane_profile(batch, work)
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
        "ratio_c_over_a_pairs": [round(a / c, 3) for a, c in pairs],
        "ratio_c_over_a_median": round(statistics.median(a / c for a, c in pairs), 3),
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
        "klio_beam_options": args.beam_options,
        "outside_beam_job_s": round(wall_c - beam_s, 2) if beam_s else None,
        "extra_cpu_s": round(cpu_c - cpu_a, 2),
        "framework": costs,
        "lane_profile": lanes,
    }
    # The CPU (c) cannot shed, and the best c/a it allows (see bound_c_over_a).
    worker_cpu = out_c.get("beam_cpu_seconds") or 0.0
    computed_share = (out_c.get("computed_audio_hours") or 0.0) * 3600 / audio_s
    unavoidable = {
        "launcher_cpu_s": round(cpu_c - worker_cpu, 2),
        "worker_imports_s": costs["worker_imports_s"],
        "hash_cpu_s": costs["hash_cpu_s"],
        "probe_cpu_s": costs["probe_cpu_s"],
    }
    figures["klio_launcher_cpu_s"] = unavoidable["launcher_cpu_s"]
    figures["klio_worker_cpu_s"] = round(worker_cpu, 2)
    figures["klio_worker_cpu_over_plain_s"] = round(worker_cpu - cpu_a * computed_share, 2)
    figures["computed_audio_share"] = round(computed_share, 4)
    figures["unavoidable_cpu_s"] = unavoidable
    figures["bound_c_over_a"] = bound_c_over_a(cpu_a, computed_share, unavoidable)
    target = TARGET_C_OVER_A_1000 if len(files) >= 1000 else TARGET_C_OVER_A
    figures["targets"] = {
        f"c_over_a>={target}": figures["ratio_c_over_a_median"] >= target,
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
        f"c/a {wall_a / wall_c:.3f} (target >= {target}), b/a {wall_a / wall_b:.3f}, "
        f"c/b {wall_b / wall_c:.3f}; klio's Beam job alone {beam_s:.1f} s"
    )
    if len(pairs) > 1:
        print(
            f"c/a of {len(pairs)} alternate pairs: "
            + ", ".join(f"{a / c:.3f} ({a:.1f} / {c:.1f} s)" for a, c in pairs)
            + f"; median {figures['ratio_c_over_a_median']:.3f}"
        )
    print(
        f"where (c) loses against (a): {wall_c - beam_s:.1f} s outside the Beam job (CLI, Dagster, "
        f"bookkeeping); the Beam job {beam_s - wall_a:+.1f} s against (a), of which the worker "
        f"process start {costs['worker_process_start_s']:.1f} s (imports "
        f"{costs['worker_imports_s']:.1f} s); {cpu_c - cpu_a:+.1f} CPU-s in all, of which content "
        f"hash {costs['hash_cpu_s']:.2f} and probe {costs['probe_cpu_s']:.2f} CPU-s (all tracks)"
    )
    print(
        f"(c)'s CPU: launcher (CLI, Dagster, bookkeeping) {figures['klio_launcher_cpu_s']:.2f} "
        f"CPU-s, worker process {worker_cpu:.1f} CPU-s = (a)'s CPU for the audio (c) computed "
        f"({100 * computed_share:.1f} %; the rest shared by content) "
        f"{figures['klio_worker_cpu_over_plain_s']:+.2f} CPU-s"
    )
    print(
        f"bound: with perfect overlap on (a)'s cores, the CPU (c) cannot shed (launcher "
        f"{unavoidable['launcher_cpu_s']:.2f}, worker imports {unavoidable['worker_imports_s']:.2f}, "
        f"content hash {unavoidable['hash_cpu_s']:.2f}, probe {unavoidable['probe_cpu_s']:.2f}) "
        f"allows c/a <= {figures['bound_c_over_a']:.3f}"
    )
    if lanes:
        ends = ", ".join(
            f"{v['end_s']:.1f} s ({v['items']} groups)" for v in lanes["lanes"].values()
        )
        print(
            f"Beam job alone, per worker thread (load {lanes['load_before'][0]}): checks done at "
            f"{lanes['checks_done_s']:.1f} s, lanes end at {ends}: tail {lanes['lane_tail_s']:.2f} s "
            f"of {lanes['wall_s']:.1f} s"
        )
    print(
        f"lines of code: plain Dagster + Beam {loc_b}, downsampled_audio {loc_c} "
        f"({100 * (1 - loc_c / loc_b):.0f} % less)"
    )
    final_json("throughput", figures)


if __name__ == "__main__":
    main()
