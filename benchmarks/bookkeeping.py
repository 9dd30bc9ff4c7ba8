"""Dagster bookkeeping per track: what a 1,000-track run costs beyond its Beam job.

For each storage backend (SQLite, PostgreSQL), in a fresh ``KLIO_ASSETS_HOME``:

1. register ``--registered`` tracks (default 100,000) through ``register_tracks``, in batches
   of 10,000 like repeated ``klio-assets add``; the ``--run-tracks`` in the middle point at
   tiny distinct WAV files, the others at paths that are never read;
2. run ``downsampled_audio`` over those tracks with ``execute_range`` (the CLI's code path),
   then once more over the same range (every track skipped inside Beam, re-materialized as
   ``skipped``);
3. report per run: wall time, Beam job time, bookkeeping = wall - Beam, per track, the
   materialization phase (event-log timestamps, and timed directly), and check that exactly
   the run's partitions are materialized.

Usage, from the repository root::

    /tmp/venv/bin/python benchmarks/bookkeeping.py [--registered 100000] [--run-tracks 1000]
        [--backends sqlite,postgres] [--profile DIR] [--keep]

Phases are timed by wrapping package and Dagster functions in this process while a run
executes (``RUN_PHASES``); ``--profile`` adds a cProfile of the main thread (the Beam job runs
in another thread and is not in it). Everything lives in a temporary folder, deleted at the
end unless ``--keep``.

PostgreSQL is started by ``klio_assets_tests.support.postgres`` (Debian's server binaries). Human
readable figures go to stdout; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from typing import Any

import dagster as dg

# klio_assets_tests is not installed: import it from this checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import PhaseTimer, add_run_arguments, checked_backends, fresh_home, write_clips
from klio_assets.resources.beam import BeamJob, BeamRunnerResource

from klio_assets.catalog.database import TrackCatalog, get_catalog
from klio_assets.orchestration import launch, reporting
from klio_assets.orchestration import window as window_module
from klio_assets.orchestration.launcher import ResultsChannel
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.support.postgres import PostgresServer, running_postgres

ASSET = "downsampled_audio"
#: Tracks per ``register_tracks`` call (one ``klio-assets add`` of a big folder).
REGISTER_BATCH = 10_000


#: What a run does besides the Beam job, timed separately (label: owner, attribute).
RUN_PHASES = [
    (dg.DagsterInstance, "create_run_for_job", "create_run"),
    (dg.DagsterInstance, "get_dynamic_partitions", "list_all_partitions"),
    (TrackCatalog, "resolve", "catalog_resolve"),
    (BeamRunnerResource, "launch", "beam_build_and_submit"),
    (BeamJob, "join", "beam_wait"),  # the launcher waits in steps between polls
    (ResultsChannel, "poll", "read_results"),  # the run's one results poller
    (reporting, "log_materializations", "log_materializations"),
    (TrackCatalog, "record_outcomes", "catalog_record_outcomes"),
    (Storage, "delete_tree", "delete_results"),
]
REGISTER_PHASES = [
    (TrackCatalog, "register", "catalog"),
    (window_module, "add_track_partitions", "dagster_partitions"),
]


def materialization_span(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float | None]:
    """Number of ASSET_MATERIALIZATION events of the run and seconds from first to last.

    Timestamps are taken when each event is created; with batched writes the last batch is
    stored just after the last timestamp, so this slightly undercounts the phase.
    """
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    stamps = sorted(e.timestamp for e in entries)
    return len(stamps), (round(stamps[-1] - stamps[0], 3) if stamps else None)


def run_once(
    instance: dg.DagsterInstance,
    storage: Storage,
    run_ids: list[str],
    *,
    label: str,
    profile_path: str | None,
) -> dict[str, Any]:
    """One ``execute_range`` over ``run_ids`` and its figures."""
    phases = PhaseTimer()
    profiler = cProfile.Profile() if profile_path else None
    with phases.wrap_all(RUN_PHASES):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        outcome = launch.execute_range(
            instance, selected=[ASSET], track_ids=run_ids, storage=storage
        )
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - started
    if not outcome.success or outcome.summary is None:
        raise SystemExit(f"{label}: run {outcome.run_id} failed: {outcome.error}")
    summary = outcome.summary
    n_events, span = materialization_span(instance, outcome.run_id)
    materialized = set(instance.get_materialized_partitions(dg.AssetKey(ASSET)))
    beam = float(summary["beam_seconds"])
    figures = {
        "run_id": outcome.run_id,
        "tracks": len(run_ids),
        "statuses": summary["assets"][ASSET],
        "wall_s": round(wall, 3),
        "op_wall_s": summary["wall_seconds"],
        "beam_s": beam,
        "bookkeeping_s": round(wall - beam, 3),
        "bookkeeping_ms_per_track": round((wall - beam) * 1000 / len(run_ids), 3),
        "outside_op_s": round(wall - summary["wall_seconds"], 3),
        "materialization_events": n_events,
        "materialization_span_s": span,
        "phases_s": phases.rounded(),
        "list_all_partitions_calls": phases.calls.get("list_all_partitions", 0),
        "beam_poll_overshoot_s": round(phases.seconds.get("beam_wait", 0.0) - beam, 3),
        "materialized_partitions": len(materialized),
        "materialized_as_expected": materialized == set(run_ids),
    }
    if profiler and profile_path:
        profiler.dump_stats(profile_path)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        figures["profile"] = profile_path
        print(text.getvalue())
    return figures


def cli_planning(
    instance: dg.DagsterInstance, storage: Storage, settings: Settings, run_ids: list[str]
) -> float:
    """Seconds of what ``klio-assets run --tracks ...`` does before launching: list the keys,
    find what is already materialized and whose outputs exist."""
    from klio_assets.cli.main import _planned

    started = time.perf_counter()
    ordered, wanted = launch.resolve_tracks(instance, run_ids)
    todo, _ = launch.tracks_to_run(instance, storage, _planned(settings), [ASSET], wanted)
    launch.contiguous_ranges(ordered, todo, settings.batch_size)
    return round(time.perf_counter() - started, 3)


def bench_backend(
    backend: str,
    workdir: str,
    tracks: list[tuple[str, str]],
    run_ids: list[str],
    *,
    postgres: PostgresServer | None,
    profile_dir: str | None,
) -> dict[str, Any]:
    """Register, run twice, and report for one backend (``sqlite`` or ``postgres``)."""
    settings = fresh_home(backend, workdir, postgres=postgres)
    out: dict[str, Any] = {"catalog": settings.catalog_url.split("://")[0]}
    with dg.DagsterInstance.get() as instance:
        catalog = get_catalog(settings.catalog_url)
        phases = PhaseTimer()
        started = time.perf_counter()
        with phases.wrap_all(REGISTER_PHASES):
            for start in range(0, len(tracks), REGISTER_BATCH):
                register_tracks(instance, catalog, tracks[start : start + REGISTER_BATCH])
        out["register_s"] = round(time.perf_counter() - started, 3)
        out["register_phases_s"] = phases.rounded()
        out["register_us_per_track"] = round(out["register_s"] * 1e6 / len(tracks), 1)
        keys = instance.get_dynamic_partitions(TRACKS)
        if len(keys) != len(tracks):
            raise SystemExit(f"{backend}: {len(keys)} partitions, expected {len(tracks)}")
        print(f"[{backend}] registered {len(tracks)} in {out['register_s']:.1f} s", flush=True)
        storage = Storage(settings.storage)
        for label in ("first", "again"):
            profile = os.path.join(profile_dir, f"{backend}-{label}.prof") if profile_dir else None
            out[label] = run_once(instance, storage, run_ids, label=label, profile_path=profile)
            print(f"[{backend}] {label} run: {out[label]['wall_s']:.1f} s", flush=True)
        out["cli_planning_s"] = cli_planning(instance, storage, settings, run_ids)
    return out


def warm_up() -> None:
    """Import what the first run would otherwise import inside its timing (Beam, the job)."""
    from klio_assets import definitions
    from klio_assets.worker import pipeline  # noqa: F401

    definitions.get_analyses_job()


def print_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{args.registered} registered tracks, runs of {args.run_tracks} tracks of {ASSET}")
    for backend, r in results["backends"].items():
        print(f"\n== {backend} (catalog on {r['catalog']})")
        split = ", ".join(f"{k} {v:.2f} s" for k, v in r["register_phases_s"].items())
        print(
            f"register {args.registered} tracks: {r['register_s']:.2f} s "
            f"({r['register_us_per_track']:.0f} us/track; {split})"
        )
        for label, title in (("first", "first run"), ("again", "same range again")):
            f = r[label]
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in f["phases_s"].items())
            span = f["materialization_span_s"]
            print(f"  {title}: statuses {f['statuses']}")
            print(
                f"    wall {f['wall_s']:.2f} s = Beam {f['beam_s']:.2f} s + bookkeeping "
                f"{f['bookkeeping_s']:.2f} s ({f['bookkeeping_ms_per_track']:.2f} ms/track); "
                f"op body {f['op_wall_s']:.2f} s, outside the op {f['outside_op_s']:.2f} s"
            )
            print(
                f"    materialization phase: {f['materialization_events']} events created over "
                f"{span if span is not None else float('nan'):.2f} s (event log timestamps); "
                f"log_materializations took {f['phases_s'].get('log_materializations', 0):.2f} s"
            )
            print(f"    timed phases (nested: create_run lists the keys once): {phases}")
            print(
                f"    all {args.registered} partition keys listed {f['list_all_partitions_calls']} "
                f"times; Beam poll overshoot {f['beam_poll_overshoot_s']:.2f} s"
            )
            verdict = "OK" if f["materialized_as_expected"] else "MISMATCH"
            print(f"    partitions materialized: {f['materialized_partitions']} ({verdict})")
        print(f"  CLI planning before a run (resolve + tracks_to_run): {r['cli_planning_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, registered=100_000)
    parser.add_argument("--profile", metavar="DIR", help="cProfile into DIR/<backend>-<run>.prof")
    args = parser.parse_args(argv)
    backends = checked_backends(parser, args)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    workdir = tempfile.mkdtemp(prefix="klio-bookkeeping-")
    results: dict[str, Any] = {
        "registered": args.registered,
        "run_tracks": args.run_tracks,
        "asset": ASSET,
        "dagster": dg.__version__,
        "backends": {},
    }
    try:
        clips = write_clips(os.path.join(workdir, "audio"), args.run_tracks)
        offset = (args.registered - args.run_tracks) // 2  # a range in the middle of the keys
        ids = [f"bench-{i:07d}" for i in range(args.registered)]
        run_ids = ids[offset : offset + args.run_tracks]
        uris = {t: clips[i] for i, t in enumerate(run_ids)}
        never_read = os.path.join(workdir, "not-there")
        tracks = [(t, uris.get(t) or f"{never_read}/{t}.wav") for t in ids]
        warm_up()
        with contextlib.ExitStack() as stack:
            postgres = (
                stack.enter_context(running_postgres(workdir)) if "postgres" in backends else None
            )
            for backend in backends:
                results["backends"][backend] = bench_backend(
                    backend, workdir, tracks, run_ids, postgres=postgres, profile_dir=args.profile
                )
        results["env"] = {k: os.environ.get(k) for k in launch.FAST_BOOKKEEPING_ENV}
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, args)
    print(json.dumps(results, sort_keys=True))
    runs = [r[k] for r in results["backends"].values() for k in ("first", "again")]
    return 0 if all(run["materialized_as_expected"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
