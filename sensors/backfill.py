"""``catalog_backfill_schedule``: missing, failed and stale tracks in bounded runs."""

from __future__ import annotations

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.sensors.status import schedule_status

from klio_assets.automation.backfill import STATE_KEY, backfill_run_requests
from klio_assets.automation.service import Automation


def build_backfill_schedule(
    automation: Automation, *, job_name: str, catalog: CatalogResource, storage: StorageResource
) -> dg.ScheduleDefinition:
    """The backfill schedule: runs of at most ``KLIO_ASSETS_BATCH_SIZE`` tracks, at most
    ``KLIO_ASSETS_BACKFILL_MAX_RUNS`` per tick (the rest waits for the next tick: a version
    bump over a million tracks must not launch thousands of runs at once)."""
    settings = automation.settings

    @dg.schedule(
        name="catalog_backfill_schedule",
        cron_schedule=settings.backfill_cron,
        job_name=job_name,
        execution_timezone="UTC",
        default_status=schedule_status(settings),
        description=(
            f"Missing, failed and stale tracks of {', '.join(automation.selected)}: runs of at "
            f"most {settings.batch_size} tracks, at most {settings.backfill_max_runs} per tick."
        ),
    )
    def catalog_backfill_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        tick = context.scheduled_execution_time.isoformat()
        track_catalog = catalog.get_catalog()
        plan = automation.backfill(
            context.instance, track_catalog, storage.get_storage(), tick=tick
        )
        context.log.info(
            f"backfill: {plan.reasons}; {len(plan.runs)} run(s), {plan.deferred_runs} deferred"
        )
        track_catalog.set_state(STATE_KEY, plan.state)
        requests = backfill_run_requests(plan, tick=tick)
        return requests or dg.SkipReason(f"nothing to backfill: {plan.reasons}")

    return catalog_backfill_schedule
