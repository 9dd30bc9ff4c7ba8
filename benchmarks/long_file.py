"""Peak RSS of a worker downsampling a 30-minute and a 2-hour file (issues 6 and 15).

Targets: the Beam worker's peak RSS <= that of a bare Beam worker running a no-op DoFn (the
control, measured in the same run) + 30 MB, and the same for 30 min and 2 h (here: within
10 MB); the largest process of a local ``klio-assets run`` <= 200 MB.

The files are real music: corpus tracks joined end to end into 44.1 kHz stereo FLAC
(cached under ``.cache/bench``; a 1-minute join is the baseline). Each measurement runs in a
fresh process, one file at a time:

* **Beam worker**: ``python -m klio_assets.worker`` (the local worker process a
  ``klio-assets run downsampled_audio`` launches, same plan and FnApiRunner options; Beam is
  imported without pandas, pyarrow and its cloud connectors): the process a Beam worker is;
* **bare Beam worker** (the control): ``import apache_beam`` and a one-element pipeline with a
  no-op DoFn on the same runner options: what any Beam worker costs;
* **engine**: the same analysis through the worker engine without Beam (what the earlier
  ``memory.py`` measured): the package's own share;
* **imports**: the RSS of a process that only imported the engine, then Beam and the
  libraries Beam pulls in when they are installed, one by one: what takes the memory;
* **traced** (``--no-trace`` skips it): the Beam worker again with ``tracemalloc`` from
  after the imports: how much Python and numpy memory the run itself holds at its peak;
* **klio-assets run** (``--skip-cli`` skips it): ``klio-assets run downsampled_audio`` on a
  fresh home, the largest process of its tree (the Dagster step process running Beam).

Usage (from the repo root)::

    python benchmarks/long_file.py [--minutes 1 30 120] [--no-trace] [--skip-cli]
                                   [--corpus dev-corpus] [--cache .cache/bench]

Prints one line per file and measurement, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness

#: The worker may hold this much more than a bare Beam worker running a no-op DoFn.
OVER_BARE_MB = 30.0
SAME_WITHIN_MB = 10.0
#: Largest process of a local ``klio-assets run``.
RUN_TARGET_MB = 200.0

_BARE_CHILD = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
class NoOp(beam.DoFn):
    def process(self, element):
        yield element
with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as pipeline:
    pipeline | beam.Create([1]) | beam.ParDo(NoOp())
"""

_ENGINE_CHILD = """
import json, resource, sys, time
from klio_assets.worker.execution import Engine
from klio_assets.worker.plan import RunPlan
plan_path, tracks_path = sys.argv[1], sys.argv[2]
engine = Engine(RunPlan.from_json(open(plan_path).read()))
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ref = {**json.loads(open(tracks_path).readline()), "order": 0}
result = engine.analyze([engine.check(ref)])[0].to_dict()
print(json.dumps({"statuses": {k: v["status"] for k, v in result["analyses"].items()},
                  "rss_after_imports_mb": after_imports}))
"""

_TRACED_CHILD = """
import json, resource, sys, tracemalloc
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from klio_assets.worker.pipeline import build_pipeline
from klio_assets.worker.plan import RunPlan
plan = RunPlan.from_json(open(sys.argv[1]).read())
tracks = [json.loads(line) for line in open(sys.argv[2])]
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tracemalloc.start()
with beam.Pipeline(options=PipelineOptions(sys.argv[3:])) as pipeline:
    build_pipeline(pipeline, plan, tracks)
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"rss_after_imports_mb": after_imports, "traced_peak_mb": peak / 2**20}))
"""

#: Imported one after the other; each step's RSS growth is what it added (what an earlier
#: step already imported is not counted again). The middle ones are what Beam imports when
#: they are installed.
_IMPORT_STEPS = [
    ("python", []),
    ("numpy, soundfile, soxr", ["numpy", "soundfile", "soxr"]),
    ("klio engine", ["klio_assets.worker.execution", "klio_assets.analyses.downsampled_audio"]),
    ("grpc, protobuf", ["grpc", "google.protobuf"]),
    ("pyarrow", ["pyarrow"]),
    ("pandas", ["pandas"]),
    ("google-cloud-storage", ["google.cloud.storage"]),
    ("pymongo", ["pymongo"]),
    ("apache_beam (the rest)", ["apache_beam"]),
    (
        "klio pipeline + runner",
        ["klio_assets.worker.pipeline", "apache_beam.runners.portability.fn_api_runner"],
    ),
]

_IMPORTS_CHILD = """
import importlib, json, sys
steps = json.loads(sys.argv[1])
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024
out = []
for label, modules in steps:
    before = rss_mb()
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    out.append({"step": label, "added_mb": round(rss_mb() - before, 1),
                "rss_mb": round(rss_mb(), 1),
                "not_installed": missing})
print(json.dumps(out))
"""


def _checked(run: dict, what: str) -> dict:
    if run["returncode"] != 0:
        sys.exit(f"{what} failed ({run['returncode']}):\n{run['stderr'][-3000:]}")
    return run


def measure(path: str, work: str, *, trace: bool, cli: bool) -> dict:
    """Every measurement of one file; each in a fresh process."""
    env = harness.clean_env()
    python = sys.executable
    folder = tempfile.mkdtemp(dir=work)
    plan_path, tracks_path, beam_args = harness.worker_plan(
        folder, [("long", path)], run_id="long-file"
    )
    out: dict = {}
    worker = _checked(
        harness.run_child(
            [
                python,
                "-m",
                "klio_assets.worker",
                "--plan",
                plan_path,
                "--tracks",
                tracks_path,
                *beam_args,
            ],
            env,
        ),
        "Beam worker",
    )
    out["beam_worker"] = {k: round(worker[k], 2) for k in ("peak_rss_mb", "wall_s", "cpu_s")}
    engine = _checked(
        harness.run_child([python, "-c", _ENGINE_CHILD, plan_path, tracks_path], env), "engine"
    )
    out["engine"] = {
        **{k: round(engine[k], 2) for k in ("peak_rss_mb", "wall_s", "cpu_s")},
        **json.loads(engine["stdout"].strip().splitlines()[-1]),
    }
    if trace:
        traced = _checked(
            harness.run_child(
                [python, "-c", _TRACED_CHILD, plan_path, tracks_path, *beam_args], env
            ),
            "traced worker",
        )
        figures = json.loads(traced["stdout"].strip().splitlines()[-1])
        out["traced"] = {
            "peak_rss_mb": round(traced["peak_rss_mb"], 1),
            **{k: round(v, 1) for k, v in figures.items()},
        }
    if cli:
        home = os.path.join(folder, "home")
        cli_env = harness.clean_env(KLIO_ASSETS_HOME=home)
        manifest = os.path.join(folder, "tracks.csv")
        with open(manifest, "w") as fh:
            fh.write(f"track_id,path\nlong,{path}\n")
        command = [python, "-m", "klio_assets.cli"]
        _checked(
            harness.run_child(
                [*command, "add", "--manifest", manifest, "--allow-root", "/"], cli_env
            ),
            "klio-assets add",
        )
        run = _checked(
            harness.run_child([*command, "run", "downsampled_audio", "--json"], cli_env),
            "klio-assets run",
        )
        summary = json.loads(run["stdout"])
        out["klio_assets_run"] = {
            **{k: round(run[k], 2) for k in ("peak_rss_mb", "wall_s", "cpu_s")},
            "counts": summary["assets"]["downsampled_audio"],
        }
    shutil.rmtree(folder, ignore_errors=True)
    return out


def bare_worker() -> dict:
    """Peak RSS of a bare Beam worker (a no-op DoFn on one element) with the runner options
    of a run, with Beam imported plainly and the way klio's worker imports it."""
    folder = tempfile.mkdtemp(prefix="klio-bare-")
    beam_args = harness.worker_plan(folder, [], run_id="bare")[2]
    shutil.rmtree(folder, ignore_errors=True)
    plain = _checked(
        harness.run_child([sys.executable, "-c", _BARE_CHILD, *beam_args], harness.clean_env()),
        "bare Beam worker",
    )
    lean_child = (
        "from klio_assets.worker.beam_imports import import_beam_without_extras\n"
        "import_beam_without_extras()\n" + _BARE_CHILD
    )
    lean = _checked(
        harness.run_child([sys.executable, "-c", lean_child, *beam_args], harness.clean_env()),
        "bare Beam worker (lean imports)",
    )
    return {
        "peak_rss_mb": round(plain["peak_rss_mb"], 1),
        "lean_peak_rss_mb": round(lean["peak_rss_mb"], 1),
    }


def import_breakdown() -> list[dict]:
    """RSS added by each import step in a fresh process (see ``_IMPORT_STEPS``)."""
    run = _checked(
        harness.run_child(
            [sys.executable, "-c", _IMPORTS_CHILD, json.dumps(_IMPORT_STEPS)], harness.clean_env()
        ),
        "imports",
    )
    return json.loads(run["stdout"].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[1, 30, 120],
        help="lengths of the joined files; the target compares 30 and 120",
    )
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--skip-cli", action="store_true", help="skip klio-assets run")
    parser.add_argument("--corpus", default=harness.CORPUS)
    parser.add_argument("--cache", default=harness.CACHE)
    args = parser.parse_args()

    files = {m: harness.joined_track(m, cache=args.cache, corpus=args.corpus) for m in args.minutes}
    harness.warm_page_cache(list(files.values()))
    import soundfile as sf

    figures: dict = {
        "target": f"Beam worker peak RSS <= bare Beam worker (no-op DoFn) + {OVER_BARE_MB:g} MB, "
        f"within {SAME_WITHIN_MB:g} MB between the shortest and longest file; "
        f"klio-assets run <= {RUN_TARGET_MB:g} MB",
        "load_before": harness.load_average(),
        "cores": harness.cores(),
        "files": {},
    }
    print(f"load average {figures['load_before']}, {figures['cores']} cores")
    bare = bare_worker()
    figures["bare_beam_worker"] = bare
    print(
        f"control, bare Beam worker with a no-op DoFn: {bare['peak_rss_mb']:.0f} MB "
        f"({bare['lean_peak_rss_mb']:.0f} MB with Beam imported the way klio's worker does)"
    )
    steps = import_breakdown()
    figures["imports"] = steps
    print("RSS after imports, step by step (fresh process):")
    for step in steps:
        absent = (
            f" (not installed: {', '.join(step['not_installed'])})" if step["not_installed"] else ""
        )
        print(
            f"  {step['step']:26s} +{step['added_mb']:6.1f} MB -> {step['rss_mb']:6.1f} MB{absent}"
        )
    work = tempfile.mkdtemp(prefix="klio-long-file-")
    try:
        for minutes, path in files.items():
            duration = sf.info(path).duration / 60
            result = measure(path, work, trace=not args.no_trace, cli=not args.skip_cli)
            result["audio_minutes"] = round(duration, 2)
            figures["files"][f"{minutes:g}min"] = result
            line = [
                f"{duration:6.1f} min: Beam worker {result['beam_worker']['peak_rss_mb']:5.0f} MB "
                f"({result['beam_worker']['wall_s']:.1f} s)",
                f"engine {result['engine']['peak_rss_mb']:4.0f} MB "
                f"({result['engine']['rss_after_imports_mb']:.0f} after imports)",
            ]
            if "traced" in result:
                line.append(f"traced peak {result['traced']['traced_peak_mb']:.1f} MB")
            if "klio_assets_run" in result:
                line.append(f"klio-assets run {result['klio_assets_run']['peak_rss_mb']:4.0f} MB")
            print(", ".join(line))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def spread(kind: str) -> float | None:
        peaks = [f[kind]["peak_rss_mb"] for f in figures["files"].values() if kind in f]
        return round(max(peaks) - min(peaks), 1) if peaks else None

    longest = figures["files"][f"{max(args.minutes):g}min"]
    shortest_target = min((m for m in args.minutes if m >= 30), default=min(args.minutes))
    compared = figures["files"][f"{shortest_target:g}min"]
    growth = round(
        longest["beam_worker"]["peak_rss_mb"] - compared["beam_worker"]["peak_rss_mb"], 1
    )
    worst = max(f["beam_worker"]["peak_rss_mb"] for f in figures["files"].values())
    figures.update(
        {
            "beam_worker_peak_mb": round(worst, 1),
            "beam_worker_growth_mb": growth,
            "growth_compared": [f"{shortest_target:g}min", f"{max(args.minutes):g}min"],
            "spread_mb": {
                k: spread(k) for k in ("beam_worker", "engine", "traced", "klio_assets_run")
            },
            "worker_over_bare_mb": round(worst - bare["peak_rss_mb"], 1),
            "bounded_met": worst <= bare["peak_rss_mb"] + OVER_BARE_MB,
            "flat_met": abs(growth) <= SAME_WITHIN_MB,
            "load_after": harness.load_average(),
        }
    )
    runs = [
        f["klio_assets_run"]["peak_rss_mb"]
        for f in figures["files"].values()
        if "klio_assets_run" in f
    ]
    figures["klio_assets_run_peak_mb"] = round(max(runs), 1) if runs else None
    figures["run_met"] = max(runs) <= RUN_TARGET_MB if runs else None
    figures["met"] = (
        figures["bounded_met"] and figures["flat_met"] and figures["run_met"] is not False
    )
    print(
        f"Beam worker peak {worst:.0f} MB, {worst - bare['peak_rss_mb']:+.0f} MB against the bare "
        f"Beam worker (<= +{OVER_BARE_MB:g}: {'met' if figures['bounded_met'] else 'NOT met'}); "
        f"{figures['growth_compared'][0]} -> {figures['growth_compared'][1]}: {growth:+.1f} MB "
        f"(same within {SAME_WITHIN_MB:g}: {'met' if figures['flat_met'] else 'NOT met'}); "
        + (
            f"klio-assets run {max(runs):.0f} MB (<= {RUN_TARGET_MB:g}: "
            f"{'met' if figures['run_met'] else 'NOT met'}); "
            if runs
            else ""
        )
        + f"load {figures['load_after']}"
    )
    harness.final_json("long_file", figures)


if __name__ == "__main__":
    main()
