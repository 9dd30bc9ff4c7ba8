"""``window_retention_sensor`` and ``catalog_ranges_sensor``: Dagster as a window on the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.sensors.status import sensor_status

from klio_assets.automation.catalog_ranges import catalog_ranges_requests
from klio_assets.automation.service import Automation
from klio_assets.orchestration.catalog_ranges import CATALOG_RANGES, CATALOG_RANGES_JOB


def build_retention_sensor(
    automation: Automation, *, job_name: str, catalog: CatalogResource
) -> dg.SensorDefinition:
    """The retention sensor: a page of the window per tick; requests no runs."""

    @dg.sensor(
        name="window_retention_sensor",
        minimum_interval_seconds=automation.settings.sensor_interval_s,
        default_status=sensor_status(automation.settings),
        description="Takes tracks done for every analysis out of Dagster's window (their "
        "partitions, then the old runs of tracks all out of it, with their events); the catalog "
        "keeps them (`klio-assets show`, `status`).",
    )
    def window_retention_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = automation.retention(
            context.instance, catalog.get_catalog(), job_name=job_name, cursor=context.cursor
        )
        # What the tick did, on the tick in the UI (a tick without runs shows as skipped)
        said = (
            f"{len(tick.left)} of {tick.checked} window tracks left it "
            f"({tick.left_failed} of them failed for good); kept: {tick.working} with work to "
            f"do, {tick.young} too recent, {tick.in_flight} in runs; "
            f"{len(tick.runs_deleted)} old runs deleted"
        )
        if tick.left or tick.runs_deleted:
            context.log.info(said)
        return dg.SensorResult(cursor=tick.cursor, skip_reason=said)

    return window_retention_sensor


def build_catalog_ranges_sensor(
    automation: Automation, *, jobs: Sequence[Any], catalog: CatalogResource
) -> dg.SensorDefinition:
    """The catalog ranges sensor (``jobs``: the analyses job and the catalog ranges job)."""
    job_names = [getattr(job, "name", "") for job in jobs]
    analyses_job = next(name for name in job_names if name != CATALOG_RANGES_JOB)

    @dg.sensor(
        name="catalog_ranges_sensor",
        jobs=list(jobs),
        minimum_interval_seconds=automation.settings.sensor_interval_s,
        default_status=sensor_status(automation.settings),
        description="Finds work outside Dagster's window in the catalog (SQL, a page per "
        "tick): a few tracks enter the window again with per-track runs; many (a version bump) "
        "run as `catalog_ranges`, one Beam job and one materialization per range.",
    )
    def catalog_ranges_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = automation.catalog_ranges(
            context.instance, catalog.get_catalog(), cursor=context.cursor
        )
        requests, keys = catalog_ranges_requests(tick, selected=automation.selected)
        if tick.ranges:
            context.log.info(
                f"{len(tick.ranges)} catalog ranges, {sum(n for *_, n in tick.ranges)} tracks"
            )
        if tick.entering:
            context.log.info(f"{len(tick.entering)} tracks enter the window again")
        requests = [
            r.with_replaced_attrs(
                job_name=CATALOG_RANGES_JOB if r.partition_key in keys else analyses_job
            )
            for r in requests
        ]
        partitions = [dg.AddDynamicPartitionsRequest(CATALOG_RANGES, keys)] if keys else []
        idle = None
        if not requests:
            idle = (
                f"nothing outside the window needs work (what needs it, {tick.found} "
                f"track{'' if tick.found == 1 else 's'}, is in the window)"
                if tick.found
                else "nothing outside the window needs work"
            ) + ("; at the catalog's end" if tick.at_end else "")
        return dg.SensorResult(
            run_requests=requests,
            cursor=tick.cursor,
            dynamic_partitions_requests=partitions,
            skip_reason=idle,
        )

    return catalog_ranges_sensor
