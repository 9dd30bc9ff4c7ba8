"""Dagster as a window on a catalog of 10M tracks (issue 16), PostgreSQL for Dagster and the
catalog: every figure beside its target.

In a fresh home (a throwaway PostgreSQL server, Dagster and the catalog in two databases,
``KLIO_ASSETS_AUTO_ANALYSES=downsampled_audio``: the automation runs ``source_audio`` and
``downsampled_audio``):

1. **register** ``--registered`` tracks the way ``klio-assets add --manifest`` does, as
   manifests of 1M rows each (discovery, then ``register_tracks`` with the window's cap): the
   catalog gets them all, Dagster's window its first ``KLIO_ASSETS_WINDOW_MAX_TRACKS``;
2. **generated ledger**: every track done for both analyses at their current versions (one
   ``INSERT ... SELECT`` per analysis: generated rows, not runs);
3. **idle ticks** (nothing to do): landing (empty folder), propagation, window retention (a
   page of the window, all of it too recent to leave), catalog ranges with its cursor at the
   catalog's end; and one catalog ranges *sweep* tick (a page of 250,000 sequence numbers
   with nothing to do, what each tick of a sweep after a version change costs);
4. ``klio-assets status`` (in-process, and the CLI as a user runs it);
5. **UI**: the asset page's GraphQL for ``downsampled_audio`` (``benchmarks/ui_partitions.py``) on the
   window's partitions, most of them with a materialization event;
   then a **busy retention tick** (``KLIO_ASSETS_WINDOW_RETAIN_S=0``): a page of 5,000 done
   window tracks leave, and the runs whose tracks all left are deleted with their events;
6. **a catalog backfill after a version bump** (a new ``downsampled_audio`` sample rate: all
   10M stale):
   the first ``catalog_ranges_sensor`` tick, from the catalog to the run requests of its
   ranges, then two more ticks from its cursor (the same cost: memory and time flat);
7. **a 5,000-track range's bookkeeping**: 5,000 tiny WAVs registered past the window, run as
   one ``catalog_ranges`` materialization (the wall time outside the Beam job, per track);
8. **storage per table** (PostgreSQL's own sizes, indexes included), for the extrapolation.

Usage::

    python benchmarks/scale.py --window [--registered 10000000] [--range-tracks 5000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import dagster as dg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from common import fresh_home, sensor_tick, write_clips

from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.discovery import discover
from klio_assets.definitions import build_definitions
from klio_assets.orchestration.catalog_ranges import (
    CATALOG_RANGES,
    CATALOG_RANGES_JOB,
)
from klio_assets.orchestration.registration import register_tracks
from klio_assets.orchestration.status import collect_status
from klio_assets.orchestration.window import window_size
from klio_assets.settings import Settings
from klio_assets_tests.support.postgres import running_postgres

#: (figure, target, unit): issue 16's targets.
TARGETS = [
    ("register_s", 600.0, "s"),
    ("first_range_s", 30.0, "s"),
    ("status_s", 2.0, "s"),
    ("status_cli_s", 2.0, "s"),
    ("idle_landing_tick_s", 1.0, "s"),
    ("idle_propagation_tick_s", 1.0, "s"),
    ("idle_retention_tick_s", 1.0, "s"),
    ("busy_retention_tick_s", 10.0, "s"),
    ("idle_catalog_ranges_tick_s", 1.0, "s"),
    ("catalog_ranges_sweep_tick_s", 10.0, "s"),
    ("ui_partition_query_s", 2.0, "s"),
    ("range_bookkeeping_ms_per_track", 0.5, "ms/track"),
]
MANIFEST_ROWS = 1_000_000
AUTO = "downsampled_audio"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, *args, **kwargs) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return round(time.perf_counter() - started, 3), out


def _manifest(path: str, first: int, n: int, never_read: str) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["track_id", "path"])
        for i in range(first, first + n):
            writer.writerow([f"t{i:09d}", f"{never_read}/t{i:09d}.wav"])


def register(out: dict[str, Any], instance, catalog, settings, workdir: str, n: int) -> None:
    """Step 1: manifests of 1M rows, discovered and registered with the window's cap."""
    never_read = os.path.join(workdir, "never-read")
    os.makedirs(never_read)
    total = discover_s = 0.0
    for first in range(0, n, MANIFEST_ROWS):
        rows = min(MANIFEST_ROWS, n - first)
        path = os.path.join(workdir, "manifest.csv")
        _manifest(path, first, rows, never_read)
        seconds, found = _timed(discover, manifest=path)
        discover_s += seconds
        if found.rejected:
            raise SystemExit(f"manifest rows refused: {found.rejected[:3]}")
        reg_s, outcome = _timed(
            register_tracks, instance, catalog, found.tracks, window=settings.window_max_tracks
        )
        total += seconds + reg_s
        if len(outcome.added) != rows:
            raise SystemExit(f"{len(outcome.added)} added, expected {rows}")
        print(f"  registered {first + rows:>10,}: {total:7.1f} s", flush=True)
    out["register_s"] = round(total, 1)
    out["register_discover_s"] = round(discover_s, 1)
    out["register_us_per_track"] = round(total * 1e6 / n, 1)
    out["window_tracks"] = window_size(instance)


def generate_ledger(catalog, versions: dict[str, str]) -> float:
    """Step 2: every registered track done for ``versions`` (generated rows)."""
    import sqlalchemy as sa

    started = time.perf_counter()
    with catalog.engine.begin() as conn:
        for asset, version in versions.items():
            conn.execute(
                sa.text(
                    "INSERT INTO klio_materialized (asset, track_id, version, run_id, "
                    "materialized_at) SELECT :asset, track_id, :version, 'generated', "
                    "extract(epoch from now()) FROM klio_tracks"
                ),
                {"asset": asset, "version": version},
            )
    autocommit = catalog.engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE klio_materialized"))
        conn.execute(sa.text("VACUUM ANALYZE klio_tracks"))
    return round(time.perf_counter() - started, 1)


def idle_ticks(out: dict[str, Any], defs, instance, repeat: int = 3) -> None:
    """Step 3: each sensor's idle tick (median of ``repeat``, after one to set its cursor)."""
    for name, figure in (
        ("landing_sensor", "idle_landing_tick_s"),
        ("propagation_sensor", "idle_propagation_tick_s"),
        ("window_retention_sensor", "idle_retention_tick_s"),
        ("catalog_ranges_sensor", "catalog_ranges_sweep_tick_s"),
        ("catalog_ranges_sensor", "idle_catalog_ranges_tick_s"),
    ):
        if figure == "catalog_ranges_sweep_tick_s":  # a page of the catalog, nothing to do
            seconds, first = sensor_tick(defs, instance, name, None)
            if first.run_requests:
                raise SystemExit(f"{name}: a sweep with nothing to do requested runs")
            out[figure] = round(seconds, 3)
            print(f"  {name} (a sweep tick, nothing to do): {seconds:.3f} s", flush=True)
            continue
        _, first = sensor_tick(defs, instance, name, None)
        cursor = first.cursor
        if figure == "idle_catalog_ranges_tick_s":  # the cursor at the catalog's end
            state = json.loads(cursor)
            state["after_seq"] = out["registered"]
            cursor = json.dumps(state)
        times = []
        for _ in range(repeat):
            seconds, result = sensor_tick(defs, instance, name, cursor)
            if result.run_requests:
                raise SystemExit(f"{name}: an idle tick requested {len(result.run_requests)} runs")
            cursor = result.cursor or cursor
            times.append(seconds)
        out[figure] = round(sorted(times)[len(times) // 2], 4)
        print(f"  {name}: {out[figure]:.4f} s", flush=True)


def status(out: dict[str, Any], settings, n: int) -> None:
    """Step 4: ``klio-assets status`` in-process and through the CLI."""
    out["status_s"], report = _timed(collect_status, settings)
    if report.tracks != n:
        raise SystemExit(f"status: {report.tracks} tracks, expected {n}")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "klio_assets.cli", "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    out["status_cli_s"] = round(time.perf_counter() - started, 3)
    if done.returncode != 0:
        raise SystemExit(f"klio-assets status failed: {done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    out["status_answer"] = {k: v["materialized"] for k, v in answer["assets"].items()}
    print(
        f"  status: {out['status_s']:.3f} s in-process, {out['status_cli_s']:.3f} s CLI", flush=True
    )


def ui(out: dict[str, Any], instance, home: str, version: str, fraction: float = 0.9) -> None:
    """Step 5: the asset page's GraphQL for the analysis over the window's partitions, a
    ``fraction`` of them materialized (events as klio's runs write them)."""
    import ui_partitions

    keys = list(instance.get_dynamic_partitions("tracks"))
    ui_partitions.track_keys = lambda n: keys[:n]  # the window's own keys
    filled = ui_partitions.populate(
        instance, [AUTO], len(keys), fraction, code_versions={AUTO: version}
    )
    out["ui_populate"] = filled
    expected = {"partitions": len(keys), "materialized": filled["materialized"][AUTO]}
    with ui_partitions.serve(_klio_env()) as port:
        figures = ui_partitions.time_asset_page(port, AUTO, expected=expected)
    out["ui"] = figures
    out["ui_partition_query_s"] = figures["total_first_s"]
    out["ui_partition_query_median_s"] = figures["total_median_s"]
    print(
        f"  UI asset page ({len(keys):,} partitions): first {figures['total_first_s']} s, "
        f"then {figures['total_median_s']} s",
        flush=True,
    )


def retention(out: dict[str, Any], instance, catalog) -> None:
    """Step 5b: a busy retention tick: a page of window tracks, all done and old enough, leave
    the window, and the runs whose tracks have all left are deleted with their events."""
    os.environ["KLIO_ASSETS_WINDOW_RETAIN_S"] = "0"
    defs = build_definitions(Settings.from_env())
    runs_before = instance.get_runs_count()
    seconds, result = sensor_tick(defs, instance, "window_retention_sensor", None)
    left = out["window_tracks"] - window_size(instance)
    out["busy_retention_tick_s"] = round(seconds, 3)
    out["busy_retention_left"] = left
    out["busy_retention_runs_deleted"] = runs_before - instance.get_runs_count()
    seconds, _ = sensor_tick(defs, instance, "window_retention_sensor", result.cursor)
    out["busy_retention_next_tick_s"] = round(seconds, 3)
    out["window_after_retention"] = window_size(instance)
    print(
        f"  retention: {left} tracks left the window and {out['busy_retention_runs_deleted']} "
        f"runs were deleted in {out['busy_retention_tick_s']:.3f} s (next page "
        f"{out['busy_retention_next_tick_s']:.3f} s)",
        flush=True,
    )
    os.environ.pop("KLIO_ASSETS_WINDOW_RETAIN_S")


def _klio_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}


def version_bump(out: dict[str, Any], instance, n: int) -> None:
    """Step 6: a new version over every track: the first tick, then two more."""
    os.environ["KLIO_ASSETS_PARAMS"] = json.dumps({AUTO: {"sample_rate": 16000}})
    settings = Settings.from_env()
    defs = build_definitions(settings)
    rss = _rss_mb()
    ticks = []
    cursor = None
    for _ in range(3):
        seconds, result = sensor_tick(defs, instance, "catalog_ranges_sensor", cursor)
        ranges = [r for r in result.run_requests if r.partition_key]
        tracks = sum(int(r.tags["klio/range_tracks"]) for r in ranges)
        ticks.append({"s": round(seconds, 3), "ranges": len(ranges), "tracks": tracks})
        cursor = result.cursor
    out["first_range_s"] = ticks[0]["s"]
    out["bump_ticks"] = ticks
    out["bump_rss_growth_mb"] = round(_rss_mb() - rss, 1)
    out["bump_cursor"] = json.loads(cursor or "{}").get("after_seq")
    if not ticks[0]["ranges"]:
        raise SystemExit("the version bump planned no range")
    print(
        f"  version bump over {n:,}: ticks {ticks}, RSS +{out['bump_rss_growth_mb']} MB", flush=True
    )
    os.environ.pop("KLIO_ASSETS_PARAMS")


def range_bookkeeping(out: dict[str, Any], instance, catalog, workdir: str, n: int) -> None:
    """Step 7: ``n`` tiny WAVs registered past the window, run as one catalog range."""
    settings = Settings.from_env()
    clips = write_clips(os.path.join(workdir, "clips"), n)
    tracks = [(f"clip{i:06d}", path) for i, path in enumerate(clips)]
    # past the window (the retention above made room: keep them out of it all the same)
    register_tracks(instance, catalog, tracks, window=0)
    first, last = catalog.seq_of(tracks[0][0]), catalog.seq_of(tracks[-1][0])
    key = f"{first:010d}-{last:010d}"
    instance.add_dynamic_partitions(CATALOG_RANGES, [key])
    job = build_definitions(settings).resolve_job_def(CATALOG_RANGES_JOB)
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, partition_key=key)
    wall = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the catalog range failed")
    [record] = instance.fetch_materializations(dg.AssetKey(CATALOG_RANGES), limit=1).records
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    if meta["tracks"] != n:
        raise SystemExit(f"the range ran {meta['tracks']} tracks, expected {n}")
    beam = float(meta["beam_seconds"])
    out["range"] = {"tracks": meta["tracks"], "counts": meta["counts"], "wall_s": round(wall, 2)}
    out["range_bookkeeping_ms_per_track"] = round((wall - beam) * 1000 / n, 3)
    print(
        f"  catalog range of {n}: wall {wall:.2f} s, Beam {beam:.2f} s, bookkeeping "
        f"{out['range_bookkeeping_ms_per_track']:.3f} ms/track",
        flush=True,
    )


def table_sizes(out: dict[str, Any], catalog, instance) -> None:
    """Bytes per table (with indexes): the catalog's, and Dagster's event log and runs."""
    import sqlalchemy as sa

    query = sa.text(
        "SELECT relname, pg_total_relation_size(c.oid), reltuples FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relkind = 'r' ORDER BY 2 DESC"
    )
    autocommit = catalog.engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    with catalog.engine.connect() as conn:
        out["catalog_tables"] = {
            r[0]: {"bytes": int(r[1]), "rows": int(r[2])} for r in conn.execute(query)
        }
    with instance.event_log_storage.index_connection() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.text("ANALYZE"))
        out["dagster_tables"] = {
            r[0]: {"bytes": int(r[1]), "rows": int(r[2])}
            for r in conn.execute(query)
            if int(r[1]) > 1 << 20
        }
    for label in ("catalog_tables", "dagster_tables"):
        for name, size in out[label].items():
            print(f"  {name:<28} {size['bytes'] / 1e6:9.1f} MB  {size['rows']:>12,} rows")


def verdicts(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "figure": f,
            "value": out.get(f),
            "target": t,
            "unit": u,
            "met": out.get(f) is not None and out[f] <= t,
        }
        for f, t, u in TARGETS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, default=10_000_000)
    parser.add_argument("--range-tracks", type=int, default=5000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="klio-window-")
    out: dict[str, Any] = {"registered": args.registered, "load_start": os.getloadavg()}
    try:
        with running_postgres(workdir) as postgres:
            landing = os.path.join(workdir, "landing")
            os.makedirs(landing)
            settings = fresh_home(
                "postgres",
                workdir,
                postgres=postgres,
                name="window",
                extra_env={
                    "KLIO_ASSETS_AUTO_ANALYSES": AUTO,
                    "KLIO_ASSETS_LANDING": landing,
                    "KLIO_ASSETS_LANDING_SETTLE_S": "0",
                },
            )
            defs = build_definitions(settings)
            with dg.DagsterInstance.get() as instance:
                catalog = get_catalog(settings.catalog_url)
                print(f"1. register {args.registered:,}", flush=True)
                register(out, instance, catalog, settings, workdir, args.registered)
                from klio_assets.analyses import load_analyses
                from klio_assets.automation.service import Automation

                automation = Automation.build(settings, load_analyses(settings.analysis_modules))
                print("2. generated ledger", flush=True)
                out["ledger_generate_s"] = generate_ledger(catalog, automation.versions)
                print("3. idle ticks", flush=True)
                idle_ticks(out, defs, instance)
                print("4. status", flush=True)
                status(out, settings, args.registered)
                print("5. UI", flush=True)
                ui(out, instance, settings.home, automation.versions[AUTO])
                print("5b. a busy retention tick", flush=True)
                retention(out, instance, catalog)
                print("6. version bump", flush=True)
                version_bump(out, instance, args.registered)
                print("7. a catalog range's bookkeeping", flush=True)
                range_bookkeeping(out, instance, catalog, workdir, args.range_tracks)
                print("8. storage per table", flush=True)
                table_sizes(out, catalog, instance)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    out["load_end"] = os.getloadavg()
    out["targets"] = verdicts(out)
    print()
    for v in out["targets"]:
        print(
            f"  {v['figure']:<34} {v['value']!s:>10} {v['unit']:<9} target <= {v['target']:<6} {'met' if v['met'] else 'NOT MET'}"
        )
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
