"""All analyses on the same tracks: one fused run against one run per analysis (issue 6).

Target: fused wall time <= 0.7x separate.

As a user runs them, on real corpus music: ``klio-assets run`` naming every per-track analysis
at once (one Dagster run, one Beam job, each source decoded once) on a fresh home, against
one ``klio-assets run <analysis>`` per analysis in dependency order on another fresh home
(each computing one analysis, reading its upstreams' outputs). Wall and CPU seconds of each
mode from process start, cores busy, and the Beam jobs' share. ``stems`` costs ~5 CPU-s per
audio minute (the same in both modes) and dominates both: ``--without stems`` shows the
rest; ``--without`` can be repeated.

A warm-up run of every analysis on one short cut first (``--no-warmup`` skips it) fills the
numba cache and the page cache, so that neither mode pays them.

Usage (from the repo root)::

    python benchmarks/fused.py [--tracks 4] [--max-seconds 240] [--without stems]...
                               [--corpus dev-corpus] [--cache .cache/bench]

Prints figures per mode, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness

TARGET = 0.7


def per_track_analyses(without: list[str]) -> list[str]:
    """Every per-track analysis, in dependency order, less ``without``."""
    from klio_assets.analyses import load_analyses
    from klio_assets.worker.plan import plan_analyses

    names = list(plan_analyses(load_analyses()))
    unknown = sorted(set(without) - set(names))
    if unknown:
        sys.exit(f"--without {', '.join(unknown)}: not an analysis ({', '.join(names)})")
    return [n for n in names if n not in without]


def pick_tracks(count: int, min_s: float, max_s: float, corpus: str) -> list[tuple[str, str]]:
    """The first ``count`` original corpus music tracks lasting ``min_s``-``max_s`` seconds."""
    chosen = [(p, d) for p, d in harness.music_tracks(corpus) if min_s <= d <= max_s][:count]
    if len(chosen) < count:
        sys.exit(f"only {len(chosen)} corpus tracks last {min_s:g}-{max_s:g} s")
    return [(f"t{i:02d}", p) for i, (p, _) in enumerate(chosen)]


def warm_up(names: list[str], args: argparse.Namespace, scratch: str) -> None:
    """Every analysis once on a short cut: numba's cache and the page cache warm."""
    cut = harness.short_cuts(1, 10, cache=args.cache, corpus=args.corpus)[0]
    env = harness.klio_home(os.path.join(scratch, "home-warmup"), [("warmup", cut)])
    done = subprocess.run(
        [sys.executable, "-m", "klio_assets.cli", "run", *names],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"warm-up run failed:\n{done.stderr[-2000:]}\n{done.stdout[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--min-seconds", type=float, default=60)
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="ANALYSIS",
        help="leave an analysis out (repeatable)",
    )
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--corpus", default=harness.CORPUS)
    parser.add_argument("--cache", default=harness.CACHE)
    args = parser.parse_args()

    names = per_track_analyses(args.without)
    tracks = pick_tracks(args.tracks, args.min_seconds, args.max_seconds, args.corpus)
    harness.warm_page_cache([p for _, p in tracks])
    import soundfile as sf

    minutes = sum(sf.info(p).duration for _, p in tracks) / 60
    print(f"{len(tracks)} real music tracks, {minutes:.1f} min; analyses: {', '.join(names)}")
    print(f"load {harness.load_average()}, {harness.cores()} cores")
    scratch = tempfile.mkdtemp(prefix="klio-fused-")
    try:
        if not args.no_warmup:
            warm_up(names, args, scratch)
        load = harness.load_average()
        figures = harness.fused_vs_separate(tracks, names, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = figures["fused_over_separate"]
    met = ratio <= TARGET
    print(f"fused / separate: {ratio:.2f} (target <= {TARGET:g}: {'met' if met else 'NOT met'})")
    harness.final_json(
        "fused",
        {
            "target": f"fused wall <= {TARGET:g} x separate",
            "tracks": [os.path.basename(p) for _, p in tracks],
            "audio_minutes": round(minutes, 2),
            "analyses": names,
            "without": args.without,
            "cores": harness.cores(),
            "load_before": load,
            **figures,
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
