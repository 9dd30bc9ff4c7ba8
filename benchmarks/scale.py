"""The catalog at scale: registering a million tracks, and what a run, a sensor tick and a
backfill plan cost with a million registered, on SQLite and on PostgreSQL.

Per backend, in a fresh ``KLIO_ASSETS_HOME`` (PostgreSQL: a throwaway server from
``klio_assets_tests.support.postgres``, Dagster and the catalog in two databases):

1. **register** ``--registered`` tracks the way ``klio-assets add --manifest`` does: read a CSV
   manifest (``discover``), then one ``register_tracks`` call (catalog, then Dagster's
   partitions); the ``--run-tracks`` in the middle point at tiny distinct WAV files;
2. **bookkeeping**: a ``downsampled_audio`` run over those tracks through ``execute_range``
   (the CLI's code path), then the same range again (every track skipped inside Beam):
   wall minus the Beam job, per track (``bookkeeping.run_once``); and the CLI's planning
   before a run (``bookkeeping.cli_planning``);
3. **ticks**: ``--new`` files land: the landing tick that registers them and requests their
   run; then idle landing ticks (folder unchanged, and changed with nothing new); the
   propagation tick that follows the two runs above, then idle propagation ticks;
4. **backfill planning** with everything but the run's tracks missing: the catalog backfill
   schedule's evaluation (first tick, which scans outputs for stale tracks, and the next one)
   and ``klio-assets automation backfill --dry-run``'s plan (``preview``);
5. with ``--landing-register``: a second fresh home whose whole catalog arrives through the
   landing sensor over ``--registered`` empty files, ticks of at most 100,000 new tracks (the
   largest cap the settings accept) until the folder is drained, then idle ticks over it.
   ``--landing-only`` runs this step alone (``--landing-folder``: over an existing folder of
   files, e.g. one kept from an earlier run, instead of writing ``--registered`` new ones).

Human-readable figures go to stdout; the last line is one JSON object with every figure and,
per target, the value, the target and whether it is met. Load averages are recorded: other
work on the machine inflates absolute times.

Usage, from the repository root::

    python benchmarks/scale.py [--registered 1000000] [--run-tracks 1000] [--new 1000]
        [--backends sqlite,postgres] [--landing-register] [--repeat 5] [--keep]
    python benchmarks/scale.py --landing-only [--landing-folder DIR] [--backends sqlite]
    python benchmarks/scale.py --window [--registered 10000000] [--range-tracks 5000]

``--window`` measures Dagster as a window on the catalog at 10M tracks, on PostgreSQL
(``benchmarks/window_scale.py``: registration, idle ticks, ``status``, the UI's partition
query, a version bump's catalog ranges, a range's bookkeeping, storage per table).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import dagster as dg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bookkeeping import REGISTER_PHASES, cli_planning, run_once, warm_up
from common import (
    PhaseTimer,
    add_run_arguments,
    checked_backends,
    fresh_home,
    sensor_tick,
    touch_files,
    write_clips,
)

from klio_assets.automation.landing import tick as landing_tick_module
from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.discovery import discover
from klio_assets.definitions import build_definitions
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.support.postgres import running_postgres

#: Largest KLIO_ASSETS_LANDING_MAX_TRACKS the settings accept.
MAX_LANDING_CAP = 100_000
#: (figure, target, unit, backends it is set for): from issue 6; bookkeeping from issue 15.
TARGETS = [
    ("register_s", 60.0, "s", ("sqlite", "postgres")),
    ("landing_register_s", 60.0, "s", ("sqlite", "postgres")),
    ("bookkeeping_ms_per_track", 0.5, "ms/track", ("postgres",)),
    ("idle_landing_tick_s", 1.0, "s", ("sqlite", "postgres")),
    ("idle_propagation_tick_s", 1.0, "s", ("sqlite", "postgres")),
    ("backfill_schedule_tick_s", 10.0, "s", ("sqlite", "postgres")),
    ("backfill_dry_run_plan_s", 10.0, "s", ("sqlite", "postgres")),
]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn, *args, **kwargs) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return round(time.perf_counter() - started, 3), result


def write_manifest(path: str, ids: list[str], uris: dict[str, str], never_read: str) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["track_id", "path"])
        for t in ids:
            writer.writerow([t, uris.get(t) or f"{never_read}/{t}.wav"])


def median_tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None, repeat: int
) -> tuple[float, Any]:
    ticks = [sensor_tick(defs, instance, name, cursor) for _ in range(repeat)]
    if any(r.run_requests for _, r in ticks):
        raise SystemExit(f"{name}: an idle tick requested runs")
    return round(statistics.median(s for s, _ in ticks), 4), ticks[-1][1]


def bench_main(
    backend: str,
    workdir: str,
    args: argparse.Namespace,
    *,
    postgres: Any,
    manifest: str,
    run_ids: list[str],
) -> dict[str, Any]:
    """Steps 1-4 for one backend."""
    landing = os.path.join(workdir, f"landing-{backend}")
    os.makedirs(landing)
    fresh_home(
        backend,
        workdir,
        postgres=postgres,
        name="main",
        extra_env={
            "KLIO_ASSETS_LANDING": landing,
            "KLIO_ASSETS_LANDING_SETTLE_S": "0",
            "KLIO_ASSETS_LANDING_MAX_TRACKS": str(args.new),
        },
    )
    settings = Settings.from_env()
    out: dict[str, Any] = {"load_start": load()}
    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        catalog = get_catalog(settings.catalog_url)
        # 1. klio-assets add --manifest: discovery, then one register_tracks call.
        out["discover_s"], found = timed(discover, manifest=manifest)
        if found.rejected:
            raise SystemExit(f"{backend}: manifest rows refused: {found.rejected[:3]}")
        phases = PhaseTimer()
        with phases.wrap_all(REGISTER_PHASES):
            out["register_tracks_s"], outcome = timed(
                register_tracks, instance, catalog, found.tracks
            )
        out["register_phases_s"] = phases.rounded()
        out["register_s"] = round(out["discover_s"] + out["register_tracks_s"], 3)
        out["register_us_per_track"] = round(out["register_s"] * 1e6 / args.registered, 1)
        if len(outcome.added) != args.registered:
            raise SystemExit(
                f"{backend}: {len(outcome.added)} tracks added, expected {args.registered}"
            )
        out["list_all_keys_s"], keys = timed(instance.get_dynamic_partitions, TRACKS)
        if len(keys) != args.registered:
            raise SystemExit(f"{backend}: {len(keys)} partitions, expected {args.registered}")
        del keys
        print(
            f"[{backend}] registered {args.registered}: {out['register_s']:.1f} s "
            f"(discover {out['discover_s']:.1f} s, {out['register_phases_s']})",
            flush=True,
        )

        # 2. Bookkeeping of a run (propagation cursor first: the tick after the runs sees them).
        _, propagation_init = sensor_tick(defs, instance, "propagation_sensor", None)
        storage = Storage(settings.storage)
        for label in ("first", "again"):
            out[label] = run_once(instance, storage, run_ids, label=label, profile_path=None)
            out[label]["load"] = load()
            print(
                f"[{backend}] {label} run: wall {out[label]['wall_s']:.2f} s, bookkeeping "
                f"{out[label]['bookkeeping_ms_per_track']:.2f} ms/track",
                flush=True,
            )
        out["bookkeeping_ms_per_track"] = out["first"]["bookkeeping_ms_per_track"]
        out["cli_planning_s"] = cli_planning(instance, storage, settings, run_ids)

        # 3. Ticks.
        touch_files(landing, "new", args.new)
        time.sleep(0.2)  # older than the listing's clock margin
        seconds, new = sensor_tick(defs, instance, "landing_sensor", None)
        out["new_tracks_tick_s"], out["new_tracks_tick_runs"] = (
            round(seconds, 3),
            len(new.run_requests),
        )
        out["idle_landing_tick_s"], idle = median_tick(
            defs, instance, "landing_sensor", new.cursor, args.repeat
        )
        with open(os.path.join(landing, "readme.txt"), "w"):
            pass
        time.sleep(0.2)
        out["relisting_landing_tick_s"], _ = median_tick(
            defs, instance, "landing_sensor", idle.cursor, args.repeat
        )
        seconds, after_runs = sensor_tick(
            defs, instance, "propagation_sensor", propagation_init.cursor
        )
        out["propagation_after_runs_tick_s"] = round(seconds, 3)
        out["propagation_after_runs_requests"] = len(after_runs.run_requests)
        out["idle_propagation_tick_s"], _ = median_tick(
            defs, instance, "propagation_sensor", after_runs.cursor, args.repeat
        )
        print(
            f"[{backend}] ticks: {args.new} new {out['new_tracks_tick_s']:.2f} s, idle landing "
            f"{out['idle_landing_tick_s']:.4f} s (relisting {out['relisting_landing_tick_s']:.3f} s), "
            f"propagation after the runs {out['propagation_after_runs_tick_s']:.3f} s, idle "
            f"{out['idle_propagation_tick_s']:.4f} s",
            flush=True,
        )

        # 4. Backfill planning.
        schedule = defs.resolve_schedule_def("catalog_backfill_schedule")
        for label, hour in (("backfill_first_tick", 3), ("backfill_schedule_tick", 4)):
            when = datetime.datetime(2026, 1, 1, hour, tzinfo=datetime.UTC)
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
            seconds, data = timed(schedule.evaluate_tick, context)
            out[f"{label}_s"], out[f"{label}_runs"] = seconds, len(data.run_requests or [])
        from klio_assets.analyses import load_analyses
        from klio_assets.automation.preview import preview

        analyses = load_analyses(settings.analysis_modules)
        out["backfill_dry_run_plan_s"], plan = timed(
            preview, "backfill", instance, catalog, settings, analyses
        )
        out["backfill_dry_run_requests"] = len(plan["requests"])
        out["backfill_reasons"] = plan["reasons"]
        print(
            f"[{backend}] backfill: first schedule tick {out['backfill_first_tick_s']:.2f} s, next "
            f"{out['backfill_schedule_tick_s']:.2f} s ({out['backfill_schedule_tick_runs']} runs), "
            f"automation backfill --dry-run plan {out['backfill_dry_run_plan_s']:.2f} s",
            flush=True,
        )
    out["load_end"] = load()
    return out


def bench_landing(
    backend: str, workdir: str, args: argparse.Namespace, *, postgres: Any, folder: str
) -> dict[str, Any]:
    """Step 5: the whole catalog through landing ticks at the largest cap, then idle ticks."""
    cap = min(args.registered, MAX_LANDING_CAP)
    fresh_home(
        backend,
        workdir,
        postgres=postgres,
        name="landing",
        extra_env={
            "KLIO_ASSETS_LANDING": folder,
            "KLIO_ASSETS_LANDING_SETTLE_S": "0",
            "KLIO_ASSETS_LANDING_MAX_TRACKS": str(cap),
        },
    )
    settings = Settings.from_env()
    defs = build_definitions(settings)
    out: dict[str, Any] = {"load_start": load(), "landing_cap": cap}
    with dg.DagsterInstance.get() as instance:
        phases = PhaseTimer()
        cursor, ticks, runs, total = None, [], 0, 0.0
        listing = [
            (landing_tick_module, "scan_landing", "listing"),
            (landing_tick_module, "partition_ranges", "ranges"),
            (landing_tick_module.LandingTick, "run_requests", "run_requests"),
        ]
        with phases.wrap_all(REGISTER_PHASES + listing):
            while True:  # each tick lists (or recalls) the folder and takes the next `cap` files
                seconds, tick = sensor_tick(defs, instance, "landing_sensor", cursor)
                if not tick.run_requests:
                    break
                total += seconds
                ticks.append(round(seconds, 3))
                runs += len(tick.run_requests)
                cursor = tick.cursor
        out["landing_register_s"] = round(total, 3)
        out["landing_register_ticks_s"] = ticks
        out["landing_register_phases_s"] = phases.rounded()
        out["landing_register_runs"] = runs
        out["idle_full_folder_tick_s"], idle = median_tick(
            defs, instance, "landing_sensor", cursor, args.repeat
        )
        with open(os.path.join(folder, "readme.txt"), "w"):
            pass
        time.sleep(0.2)
        out["relisting_full_folder_tick_s"], _ = median_tick(
            defs, instance, "landing_sensor", idle.cursor, min(args.repeat, 3)
        )
        os.remove(os.path.join(folder, "readme.txt"))
    print(
        f"[{backend}] landing: {args.registered} files registered by {len(ticks)} ticks of at most {cap} in "
        f"{out['landing_register_s']:.1f} s ({out['landing_register_phases_s']}); idle tick "
        f"{out['idle_full_folder_tick_s']:.4f} s, relisting {out['relisting_full_folder_tick_s']:.2f} s",
        flush=True,
    )
    out["load_end"] = load()
    return out


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for backend, figures in results["backends"].items():
        for name, target, unit, backends in TARGETS:
            if name in figures:
                out.append(
                    {
                        "backend": backend,
                        "figure": name,
                        "value": figures[name],
                        "target": target,
                        "unit": unit,
                        "target_set": backend in backends,
                        "met": figures[name] <= target,
                    }
                )
    return out


def print_report(results: dict[str, Any]) -> None:
    print(
        f"\n{results['registered']} registered, runs of {results['run_tracks']} tracks; "
        f"load average at start {results['load_start']}, end {results['load_end']}"
    )
    for backend, f in results["backends"].items():
        print(f"\n== {backend}")
        if "register_s" not in f:  # --landing-only
            print(
                f"  register through landing ticks of {f['landing_cap']}: {f['landing_register_s']:.1f} s "
                f"({f['landing_register_phases_s']}); ticks {f['landing_register_ticks_s']}"
            )
            continue
        print(
            f"  register (klio-assets add --manifest): {f['register_s']:.1f} s = discover "
            f"{f['discover_s']:.1f} s + register_tracks {f['register_tracks_s']:.1f} s "
            f"({f['register_us_per_track']:.0f} us/track; {f['register_phases_s']})"
        )
        if "landing_register_s" in f:
            print(
                f"  register through landing ticks of {f['landing_cap']}: {f['landing_register_s']:.1f} s "
                f"({f['landing_register_phases_s']}); idle tick over the full folder "
                f"{f['idle_full_folder_tick_s']:.4f} s, after a change {f['relisting_full_folder_tick_s']:.2f} s"
            )
        print(f"  listing every partition key: {f['list_all_keys_s']:.2f} s")
        for label in ("first", "again"):
            r = f[label]
            print(
                f"  {label} run: wall {r['wall_s']:.2f} s = Beam {r['beam_s']:.2f} s + bookkeeping "
                f"{r['bookkeeping_s']:.2f} s ({r['bookkeeping_ms_per_track']:.2f} ms/track; outside "
                f"the op {r['outside_op_s']:.2f} s); keys listed {r['list_all_partitions_calls']} "
                f"times; phases {r['phases_s']} (phases while the job runs overlap it)"
            )
        print(f"  CLI planning before a run: {f['cli_planning_s']:.2f} s")
        print(
            f"  landing tick with {results['new']} new: {f['new_tracks_tick_s']:.2f} s; idle "
            f"{f['idle_landing_tick_s']:.4f} s; folder changed, nothing new {f['relisting_landing_tick_s']:.3f} s"
        )
        print(
            f"  propagation tick after the runs: {f['propagation_after_runs_tick_s']:.3f} s "
            f"({f['propagation_after_runs_requests']} requests); idle {f['idle_propagation_tick_s']:.4f} s"
        )
        print(
            f"  backfill: first schedule tick {f['backfill_first_tick_s']:.2f} s, next "
            f"{f['backfill_schedule_tick_s']:.2f} s; automation backfill --dry-run plan "
            f"{f['backfill_dry_run_plan_s']:.2f} s"
        )
    print("\ntargets:")
    for v in results["targets"]:
        scope = "" if v["target_set"] else " (target set for PostgreSQL)"
        print(
            f"  {v['backend']:8s} {v['figure']:28s} {v['value']:>10} {v['unit']:8s} <= {v['target']}: "
            f"{'met' if v['met'] else 'NOT MET'}{scope}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--window" in argv:  # issue 16: Dagster as a window on a 10M-track catalog
        import window_scale

        return window_scale.main([a for a in argv if a != "--window"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, registered=1_000_000)
    parser.add_argument("--new", type=int, default=1000, help="files landing in the landing tick")
    parser.add_argument("--repeat", type=int, default=5, help="idle ticks per figure (median)")
    parser.add_argument(
        "--landing-register",
        action="store_true",
        help="also register the whole catalog through landing ticks (another home)",
    )
    parser.add_argument(
        "--landing-only",
        action="store_true",
        help="only step 5: register the whole catalog through landing ticks",
    )
    parser.add_argument(
        "--landing-folder",
        help="an existing folder of landing files for step 5 (default: write --registered)",
    )
    args = parser.parse_args(argv)
    args.landing_register = args.landing_register or args.landing_only
    backends = checked_backends(parser, args)

    workdir = tempfile.mkdtemp(prefix="klio-scale-", dir=os.environ.get("TMPDIR", "/tmp"))
    results: dict[str, Any] = {
        "registered": args.registered,
        "run_tracks": args.run_tracks,
        "new": args.new,
        "dagster": dg.__version__,
        "load_start": load(),
        "backends": {},
    }
    try:
        manifest, run_ids = os.path.join(workdir, "tracks.csv"), []
        if not args.landing_only:
            clips = write_clips(os.path.join(workdir, "audio"), args.run_tracks)
            offset = (args.registered - args.run_tracks) // 2  # a range in the middle of the keys
            ids = [f"bench-{i:07d}" for i in range(args.registered)]
            run_ids = ids[offset : offset + args.run_tracks]
            write_manifest(
                manifest,
                ids,
                dict(zip(run_ids, clips, strict=True)),
                os.path.join(workdir, "not-there"),
            )
            del ids
        full_folder = args.landing_folder or os.path.join(workdir, "landing-full")
        if args.landing_register and not args.landing_folder:
            seconds, _ = timed(touch_files, full_folder, "catalog", args.registered)
            print(f"{args.registered} landing files written in {seconds:.1f} s", flush=True)
        warm_up()
        with contextlib.ExitStack() as stack:
            postgres = (
                stack.enter_context(running_postgres(workdir)) if "postgres" in backends else None
            )
            for backend in backends:
                figures = (
                    {}
                    if args.landing_only
                    else bench_main(
                        backend,
                        workdir,
                        args,
                        postgres=postgres,
                        manifest=manifest,
                        run_ids=run_ids,
                    )
                )
                if args.landing_register:
                    figures.update(
                        bench_landing(backend, workdir, args, postgres=postgres, folder=full_folder)
                    )
                results["backends"][backend] = figures
                print(json.dumps({"partial": backend, **figures}, sort_keys=True), flush=True)
                if not args.keep:  # free the disk before the next backend
                    for name in os.listdir(workdir):
                        if name.startswith(f"{backend}-"):
                            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["load_end"] = load()
    results["targets"] = verdicts(results)
    print_report(results)
    print(json.dumps(results, sort_keys=True))
    runs = [r[k] for r in results["backends"].values() for k in ("first", "again") if k in r]
    return 0 if all(run["materialized_as_expected"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
