"""``propagation_sensor``: after a run of some analyses, their descendants for the same tracks."""

from __future__ import annotations

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.sensors.status import sensor_status

from klio_assets.automation.propagation import propagation_run_requests
from klio_assets.automation.service import Automation


def build_propagation_sensor(
    automation: Automation, *, job_name: str, catalog: CatalogResource
) -> dg.SensorDefinition:
    """The propagation sensor: O(finished runs) per tick, at most
    :data:`~klio_assets.automation.propagation.EVENTS_PER_TICK` run events per status (more
    wait for the next tick: a burst of finished runs must not make one tick unbounded)."""

    @dg.sensor(
        name="propagation_sensor",
        job_name=job_name,
        minimum_interval_seconds=automation.settings.sensor_interval_s,
        default_status=sensor_status(automation.settings),
        description="Top-down: after a run of some analyses, runs their descendants for the same tracks.",
    )
    def propagation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = automation.propagation(
            context.instance, catalog.get_catalog(), cursor=context.cursor
        )
        for request in tick.requests:
            context.log.info(
                f"after run {request.upstream_run_id}: {', '.join(request.selected)} for "
                f"{sum(len(r) for r in request.ranges)} tracks"
            )
        return dg.SensorResult(run_requests=propagation_run_requests(tick), cursor=tick.cursor)

    return propagation_sensor
