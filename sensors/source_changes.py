"""``source_changes_sensor``: source files changed on disk, observed and recomputed."""

from __future__ import annotations

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.sensors.status import sensor_status

from klio_assets.automation.service import Automation
from klio_assets.automation.source_changes import source_change_run_requests


def build_source_changes_sensor(
    automation: Automation, *, job_name: str, catalog: CatalogResource
) -> dg.SensorDefinition:
    """The source changes sensor: one page of ``KLIO_ASSETS_SOURCE_CHECKS_PER_TICK`` tracks
    stat'ed per tick, a sweep of the whole catalog every ``tracks / per tick`` ticks."""

    @dg.sensor(
        name="source_changes_sensor",
        job_name=job_name,
        minimum_interval_seconds=automation.settings.sensor_interval_s,
        default_status=sensor_status(automation.settings),
        description="Sweeps the source files: observes those changed on disk (their tracks "
        "show stale) and recomputes what came from them, as `klio-assets run --stale` would.",
    )
    def source_changes_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = automation.source_changes(
            context.instance, catalog.get_catalog(), cursor=context.cursor
        )
        if tick.observed:
            context.log.info(
                f"{len(tick.observed)} of {len(tick.checked)} source files changed on disk: "
                f"{', '.join(tick.observed[:10])}{' ...' if len(tick.observed) > 10 else ''}"
            )
        for names, tracks in tick.groups.items():
            context.log.info(f"recompute {', '.join(names)} for {len(tracks)} track(s)")
        requests = source_change_run_requests(
            tick, context.instance, batch_size=automation.settings.batch_size
        )
        return dg.SensorResult(run_requests=requests, cursor=tick.cursor)

    return source_changes_sensor
