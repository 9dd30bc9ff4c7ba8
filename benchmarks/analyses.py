"""Cost of each analysis, and one fused run of all of them against one run per analysis.

1. Per analysis, steady state: the worker engine in this process, one thread, on real tracks,
   after a warm-up that computed everything once (numba cache warm, page cache warm). Each
   analysis is then recomputed alone (``force``) with its upstream outputs in place, so its
   figure is its own cost plus, for analyses that read the source, one decode of it. Reported
   as CPU-seconds per minute of audio.
2. Fused vs separate, as ``fused.py`` measures it (the same code), on these tracks:
   ``klio-assets run`` of every analysis at once against one run per analysis; the target is
   fused <= 0.7x separate.

Usage (from the repo root)::

    python benchmarks/analyses.py [--corpus dev-corpus] [--tracks 8] [--skip-fused]
                                  [--skip-per-analysis] [--without stems]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness
from harness import REPO, corpus_files


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_analysis(files: list[str], scratch: str) -> dict[str, dict[str, float]]:
    """CPU-seconds per audio-minute of each built-in analysis, alone, steady state."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from klio_assets.analyses import load_analyses
    from klio_assets.worker.execution import Engine, track_result
    from klio_assets.worker.plan import RunPlan, plan_analyses

    analyses = load_analyses()
    planned = plan_analyses(analyses)
    refs = [{"track_id": f"t{i:03d}", "uri": path, "order": i} for i, path in enumerate(files)]

    def run(selected: list[str], *, force: bool) -> tuple[float, float, dict]:
        plan = RunPlan(
            run_id=f"bench-{time.time_ns()}",
            storage_root=os.path.join(scratch, "out"),
            analyses=planned,
            selected=selected,
            force=force,
        )
        engine = Engine(plan)
        started_cpu, started = _cpu(), time.perf_counter()
        results = {}
        for ref in refs:
            task = engine.check(dict(ref))
            for result in engine.analyze([task]) if task["pending"] else [track_result(task)]:
                results[result.track_id] = result.to_dict()
        return _cpu() - started_cpu, time.perf_counter() - started, results

    _, _, warm = run(list(planned), force=False)  # warm-up: everything computed once
    failed = {
        (t, n): r.get("reason")
        for t, res in warm.items()
        for n, r in res["analyses"].items()
        if r["status"] == "failed"
    }
    if failed:
        print(f"warning: failures in warm-up: {list(failed.items())[:3]}", file=sys.stderr)
    minutes = (
        sum(res["analyses"]["source_audio"].get("duration_s", 0.0) for res in warm.values()) / 60
    )
    out: dict[str, dict[str, float]] = {}
    for name in planned:
        cpu, wall, _ = run([name], force=True)
        out[name] = {
            "cpu_s_per_audio_min": round(cpu / minutes, 3),
            "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2),
        }
        print(
            f"  {name:22s} {cpu / minutes:7.3f} CPU-s per audio minute ({cpu:.1f} CPU-s, {wall:.1f} s)"
        )
    out["_audio_minutes"] = {"minutes": round(minutes, 2)}
    return out


def fused_vs_separate(files: list[str], scratch: str, without: list[str]) -> dict:
    """Fused vs separate ``klio-assets run`` (see ``fused.py``, the benchmark of record)."""
    from fused import per_track_analyses

    names = per_track_analyses(without)
    print(f"  analyses: {', '.join(names)}")
    tracks = [(f"t{i:03d}", os.path.abspath(path)) for i, path in enumerate(files)]
    figures = harness.fused_vs_separate(tracks, names, scratch)
    print(f"  fused / separate: {figures['fused_over_separate']:.2f} (target <= 0.7)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=os.path.join(REPO, "dev-corpus"))
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--skip-fused", action="store_true")
    parser.add_argument("--skip-per-analysis", action="store_true")
    parser.add_argument(
        "--without", action="append", default=[], help="Leave an analysis out of fused/separate."
    )
    args = parser.parse_args()
    files = [f for f in corpus_files(args.corpus, None) if "/wesnoth-" in f and "long-mix" not in f]
    files = files[: args.tracks]
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(REPO, ".cache", "numba"))
    scratch = tempfile.mkdtemp(prefix="klio-bench-analyses-")
    try:
        costs: dict = {}
        if not args.skip_per_analysis:
            print(
                f"{len(files)} real music tracks; per analysis, alone, steady state (one thread):"
            )
            costs = per_analysis(files, scratch)
        fused: dict = {}
        if not args.skip_fused:
            print(f"fused vs separate (klio-assets run, {len(files)} real music tracks):")
            fused = fused_vs_separate(files, scratch, args.without)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        json.dumps({"benchmark": "analyses", "tracks": len(files), "per_analysis": costs, **fused})
    )


if __name__ == "__main__":
    main()
