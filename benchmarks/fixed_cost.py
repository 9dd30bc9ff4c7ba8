"""Fixed cost of a ``klio-assets run`` that launches one small batch (issue 15: <= 2 s).

Measured side by side in one run, each several times (the best and the median are given):

* **control**: ``plain_downsample.py`` on the same tracks, one process (Python, numpy,
  soundfile and soxr start, the work itself): what any script pays;
* ``klio-assets run downsampled_audio --force`` on a home where they are registered:
  everything a user waits for.

The fixed cost is the run's wall time less the control's. Then where it goes, each measured
alone in a fresh process: Python itself, the CLI's imports, Dagster's and the run's imports
(``klio_assets.orchestration.materialize``, the definitions), the worker's imports (engine
and Beam, which ``klio-assets run`` now overlaps with the former: ``prestart``), and the
run's own split between the Beam job and the rest (its ``--json``).

Usage (from the repo root)::

    python benchmarks/fixed_cost.py [--corpus dev-corpus] [--tracks 2] [--repeat 3]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness
from corpus import DEFAULT_CORPUS, bench_files, warm

TARGET_S = 2.0

#: One more ``klio-assets run`` under cProfile: cumulative seconds of the phases of the run's
#: process (the worker process is measured by the imports above and the Beam job's wall).
_PHASES = {
    "Dagster import": ("dagster/__init__.py", "<module>"),
    "plan the run (instance, partitions)": ("orchestration/materialize.py", "plan_run"),
    "open the Dagster instance": ("dagster/_core/instance/instance.py", "get"),
    "execute_job (all of it)": ("dagster/_core/execution/api.py", "execute_job"),
    "the asset's step (Beam job + reporting)": ("orchestration/run/__init__.py", "run_batch"),
    "waiting for the worker process": ("resources/worker_process.py", "join"),
    "report the tracks to Dagster": ("orchestration/run/report.py", "finish"),
}

_PROFILED = """
import cProfile, json, pstats, sys
phases = json.loads(sys.argv[1])
profiler = cProfile.Profile()
try:  # the click group itself: the command line's entry point leaves with os._exit
    from klio_assets.cli.main import main
    profiler.runcall(main, sys.argv[2:], prog_name="klio-assets")
except SystemExit:
    pass
stats = pstats.Stats(profiler).stats
out = {}
for label, (suffix, name) in phases.items():
    out[label] = round(max([v[3] for (f, _, n), v in stats.items()
                            if f.endswith(suffix) and n == name] or [0.0]), 2)
print("PHASES " + json.dumps(out), file=sys.stderr)
"""

#: Seconds to import ``modules`` in a fresh process (after Python's own start).
_IMPORT_CHILD = """
import importlib, sys, time
started = time.perf_counter()
if sys.argv[1] == "lean-beam":
    from klio_assets.worker.beam_imports import import_beam_without_extras
    import_beam_without_extras()
for name in sys.argv[2:]:
    importlib.import_module(name)
print(time.perf_counter() - started)
"""

#: (label, lean Beam first?, modules) of the import steps measured.
_IMPORTS = [
    ("CLI (klio_assets.cli)", "plain", ["klio_assets.cli"]),
    (
        "Dagster, definitions, run code",
        "plain",
        ["klio_assets.orchestration.materialize", "klio_assets.definitions"],
    ),
    ("worker: engine + Beam (lean)", "lean-beam", ["klio_assets.worker.pipeline"]),
]


def _best_and_median(values: list[float]) -> dict[str, float]:
    return {"best": round(min(values), 2), "median": round(statistics.median(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    # the smallest files: a small batch, so that what remains is the fixed cost
    files = sorted(bench_files(args.corpus, None), key=os.path.getsize)[: args.tracks]
    warm(files)
    work = tempfile.mkdtemp(prefix="klio-fixed-")
    plain = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain_downsample.py")
    load = harness.load_average()
    control, runs, beam, outside = [], [], [], []
    try:
        env = harness.klio_home(
            os.path.join(work, "home"), [(f"f{i}", p) for i, p in enumerate(files)]
        )
        for _ in range(args.repeat):
            out = os.path.join(work, "plain")
            shutil.rmtree(out, ignore_errors=True)
            wall, _, done = harness.timed(
                [sys.executable, plain, "--out", out, "--workers", "1", *files], harness.clean_env()
            )
            if done.returncode:
                sys.exit(f"plain_downsample.py failed:\n{done.stderr[-2000:]}")
            control.append(wall)
            wall, _, summary = harness.klio_run(["downsampled_audio", "--force"], env)
            runs.append(wall)
            beam.append(summary.get("beam_seconds") or 0.0)
            outside.append(wall - (summary.get("beam_seconds") or 0.0))
        profiled = harness.timed(
            [
                sys.executable, "-c", _PROFILED, json.dumps(_PHASES),
                "run", "downsampled_audio", "--force", "--json",
            ],
            env,
        )[2]  # fmt: skip
        phases = json.loads(
            next(ln for ln in profiled.stderr.splitlines() if ln.startswith("PHASES "))[7:]
        )
        python_start = [
            harness.timed([sys.executable, "-c", "pass"], harness.clean_env())[0]
            for _ in range(args.repeat)
        ]
        imports = {}
        for label, mode, modules in _IMPORTS:
            seconds = []
            for _ in range(args.repeat):
                _, _, done = harness.timed(
                    [sys.executable, "-c", _IMPORT_CHILD, mode, *modules], harness.clean_env()
                )
                seconds.append(float(done.stdout.strip()))
            imports[label] = _best_and_median(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fixed = [r - c for r, c in zip(runs, control, strict=True)]
    figures = {
        "tracks": len(files),
        "load_before": load,
        "control_wall_s": _best_and_median(control),
        "klio_run_wall_s": _best_and_median(runs),
        "fixed_cost_s": _best_and_median(fixed),
        "beam_job_s": _best_and_median(beam),
        "outside_beam_job_s": _best_and_median(outside),
        "python_start_s": _best_and_median(python_start),
        "imports_s": imports,
        "phases_s": phases,
        "load_after": harness.load_average(),
    }
    figures["targets"] = {
        f"fixed_cost_s<={TARGET_S:g}": figures["fixed_cost_s"]["best"] <= TARGET_S
    }
    figures["against_targets"] = {
        "fixed_cost_s": {
            "measured": figures["fixed_cost_s"]["best"],
            "target": f"<= {TARGET_S:g}",
            "met": figures["fixed_cost_s"]["best"] <= TARGET_S,
        }
    }
    print(
        f"{len(files)} tracks, {args.repeat} repeats (load average {load[0]} -> {figures['load_after'][0]})"
    )
    print(
        f"control (plain script) {figures['control_wall_s']['best']:.2f} s, klio-assets run "
        f"{figures['klio_run_wall_s']['best']:.2f} s: fixed cost {figures['fixed_cost_s']['best']:.2f} s "
        f"(median {figures['fixed_cost_s']['median']:.2f}; target <= {TARGET_S:g} s)"
    )
    print(
        f"where it goes: Beam job {figures['beam_job_s']['best']:.2f} s (worker start included), "
        f"the rest {figures['outside_beam_job_s']['best']:.2f} s; Python starts in "
        f"{figures['python_start_s']['best']:.2f} s; imports, each in a fresh process:"
    )
    for label, value in imports.items():
        print(f"  {label:34s} {value['best']:.2f} s (median {value['median']:.2f})")
    print("one more run under cProfile (inflated by the profiler), cumulative seconds:")
    for label, value in phases.items():
        print(f"  {label:40s} {value:.2f} s")
    harness.final_json("fixed_cost", figures)


if __name__ == "__main__":
    main()
