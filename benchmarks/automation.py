"""Sensor and schedule ticks at catalog scale, on PostgreSQL.

In a fresh ``KLIO_ASSETS_HOME`` whose Dagster instance and track catalog are on a throwaway
PostgreSQL server (``klio_assets_tests.support.postgres``):

1. ``--tracks`` (default 100,000) empty ``.wav`` files are put in the landing folder and taken
   by the landing sensor in one uncapped tick (registration of the whole catalog, timed);
2. idle ticks (nothing new; the folder still holds every file): the landing sensor, the
   propagation sensor (no run finished), each evaluated ``--repeat`` times through
   ``build_sensor_context`` exactly as the daemon calls them; and landing ticks after a
   change in the folder that brings nothing (a text file): every file is listed again;
3. ``--new`` (default 1,000) new files land: one landing tick registers them and requests
   their run(s);
4. one catalog backfill schedule tick with every track missing (capped runs).

The files are never decoded and no run is launched: these are the ticks' own costs. Human
readable figures go to stdout; the last line is one JSON object with every figure.

Usage, from the repository root::

    /tmp/venv/bin/python benchmarks/automation.py [--tracks 100000] [--new 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import dagster as dg
from common import sensor_tick, touch_files

from klio_assets.definitions import build_definitions
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.settings import Settings
from klio_assets_tests.support.postgres import running_postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    figures: dict[str, object] = {"tracks": args.tracks, "new": args.new}
    with (
        tempfile.TemporaryDirectory(prefix="klio-automation-") as tmp,
        running_postgres(tmp) as postgres,
    ):
        home = os.path.join(tmp, "home")
        landing = os.path.join(tmp, "landing")
        os.makedirs(home)
        postgres.create_database("dagster")
        with open(os.path.join(home, "dagster.yaml"), "w") as fh:
            fh.write(postgres.dagster_yaml("dagster"))
        os.environ.update(
            KLIO_ASSETS_HOME=home,
            DAGSTER_HOME=home,
            KLIO_ASSETS_CATALOG=postgres.create_database("catalog"),
            KLIO_ASSETS_LANDING=landing,
            KLIO_ASSETS_LANDING_SETTLE_S="0",
            KLIO_ASSETS_LANDING_MAX_TRACKS=str(max(args.tracks, args.new)),
        )
        started = time.perf_counter()
        touch_files(landing, "catalog", args.tracks)
        print(f"{args.tracks} files written in {time.perf_counter() - started:.1f} s")
        defs = build_definitions(Settings.from_env())
        with dg.DagsterInstance.get() as instance:
            seconds, first = sensor_tick(defs, instance, "landing_sensor", None)
            assert len(instance.get_dynamic_partitions(TRACKS)) == args.tracks
            figures["first_tick_uncapped_s"] = round(seconds, 3)
            figures["first_tick_runs"] = len(first.run_requests)
            print(
                f"uncapped first landing tick over {args.tracks} files: {seconds:.1f} s, "
                f"{len(first.run_requests)} run requests"
            )

            idle = [
                sensor_tick(defs, instance, "landing_sensor", first.cursor)
                for _ in range(args.repeat)
            ]
            assert all(not r.run_requests for _, r in idle)
            figures["idle_landing_tick_s"] = round(statistics.median(s for s, _ in idle), 4)
            _, init = sensor_tick(defs, instance, "propagation_sensor", None)
            idle_prop = [
                sensor_tick(defs, instance, "propagation_sensor", init.cursor)
                for _ in range(args.repeat)
            ]
            figures["idle_propagation_tick_s"] = round(
                statistics.median(s for s, _ in idle_prop), 3
            )
            print(
                f"idle landing tick ({args.tracks} files in the folder): {figures['idle_landing_tick_s']} s (median)"
            )
            print(f"idle propagation tick: {figures['idle_propagation_tick_s']} s (median)")

            # Something changed in the folder, nothing to take: the folder is listed in full.
            with open(os.path.join(landing, "readme.txt"), "w"):
                pass
            time.sleep(0.2)  # older than the listing's clock margin
            relist = [
                sensor_tick(defs, instance, "landing_sensor", idle[0][1].cursor)
                for _ in range(args.repeat)
            ]
            assert all(not r.run_requests for _, r in relist)
            figures["relisting_landing_tick_s"] = round(statistics.median(s for s, _ in relist), 3)
            print(
                f"landing tick listing all {args.tracks} files again (folder changed, nothing new): "
                f"{figures['relisting_landing_tick_s']} s (median)"
            )

            touch_files(landing, "new", args.new)
            time.sleep(0.2)
            seconds, new = sensor_tick(defs, instance, "landing_sensor", relist[-1][1].cursor)
            assert len(instance.get_dynamic_partitions(TRACKS)) == args.tracks + args.new
            figures["new_tracks_tick_s"] = round(seconds, 3)
            figures["new_tracks_runs"] = len(new.run_requests)
            print(
                f"landing tick bringing {args.new} new tracks: {seconds:.2f} s, {len(new.run_requests)} run(s)"
            )

            schedule = defs.resolve_schedule_def("catalog_backfill_schedule")
            when = datetime.datetime(2026, 1, 1, 3, tzinfo=datetime.UTC)
            started = time.perf_counter()
            data = schedule.evaluate_tick(
                dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
            )
            figures["backfill_tick_all_missing_s"] = round(time.perf_counter() - started, 3)
            figures["backfill_tick_runs"] = len(data.run_requests or [])
            print(
                f"backfill tick, {args.tracks + args.new} tracks all missing: "
                f"{figures['backfill_tick_all_missing_s']} s, {figures['backfill_tick_runs']} runs (capped)"
            )
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
