"""Dagster sensors and schedules of klio-assets (installed as ``klio_assets.sensors``).

:func:`build_automation` builds, for one deployment's settings:

* ``landing_sensor``: streams new tracks in from the landing folder / ``gs://`` prefix and a
  Pub/Sub subscription; registers them in batches and requests one fused run per contiguous
  range (every selected analysis, one Beam job) (:mod:`klio_assets.automation.landing`);
* ``propagation_sensor``: top-down, O(finished runs) per tick: a run that materialized only
  some analyses is followed by one over the same tracks for their descendants
  (:mod:`klio_assets.automation.propagation`);
* ``catalog_backfill_schedule``: missing, failed and stale tracks per analysis, in bounded
  runs (:mod:`klio_assets.automation.backfill`).

Every tick either returns what it wants done (a ``SensorResult`` with run requests and a
cursor) or raises: an error is a failed tick in the UI, never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg

from klio_assets.settings import Settings

#: Sensors and schedules that need no settings (none yet); the deployment's are built by
#: :func:`build_automation`.
SENSORS: list[dg.SensorDefinition] = []
SCHEDULES: list[dg.ScheduleDefinition] = []


def _status(settings: Settings, kind: type):
    running = settings.automation == "running"
    if kind is dg.DefaultSensorStatus:
        return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def build_automation(
    settings: Settings,
    analyses: Sequence,
    *,
    job_name: str,
    subscriber: Callable | None = None,
) -> tuple[list[dg.SensorDefinition], list[dg.ScheduleDefinition]]:
    """The landing and propagation sensors and the catalog backfill schedule.

    Parameters
    ----------
    settings : Settings
    analyses : sequence of Analysis
        Every analysis of the code location.
    job_name : str
        The analyses job (``audio_analyses_job``).
    subscriber : callable, optional
        Returns a Pub/Sub subscriber (tests); default ``google.cloud.pubsub_v1``.

    Raises
    ------
    ParameterError
        ``KLIO_ASSETS_AUTO_ANALYSES`` names an unknown analysis.
    """
    from klio_assets.errors import ParameterError  # noqa: PLC0415
    from klio_assets.orchestration.lineage import ancestors, parents  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    graph = parents(analyses)
    planned = plan_analyses(analyses, settings.params)
    names = list(planned)  # topological order
    unknown = [a for a in settings.auto_analyses if a not in graph]
    if unknown:
        raise ParameterError(
            f"KLIO_ASSETS_AUTO_ANALYSES names unknown analyses {unknown}; known: {names}"
        )
    # An analysis runs with what it needs: asking for `beats` brings `downsampled_audio`.
    wanted = (
        set(settings.auto_analyses) | ancestors(graph, settings.auto_analyses)
        if settings.auto_analyses
        else set(names)
    )
    selected = [n for n in names if n in wanted]

    def catalog():
        from klio_assets.catalog.database import get_catalog  # noqa: PLC0415

        return get_catalog(settings.catalog_url)

    @dg.sensor(
        name="landing_sensor",
        job_name=job_name,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=_status(settings, dg.DefaultSensorStatus),
        description=(
            f"New audio in {settings.landing or '(no folder)'}"
            + (
                f" and Pub/Sub {settings.landing_subscription}"
                if settings.landing_subscription
                else ""
            )
            + f": registers up to {settings.landing_max_tracks} tracks per tick and runs "
            + f"{', '.join(selected)} for them in one run per contiguous range."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from klio_assets.automation.landing import landing_tick, run_requests  # noqa: PLC0415

        tick = landing_tick(
            context.instance,
            catalog(),
            cursor=context.cursor,
            location=settings.landing or None,
            max_tracks=settings.landing_max_tracks,
            batch_size=settings.batch_size,
            settle_s=settings.landing_settle_s,
            subscription=settings.landing_subscription or None,
            subscriber=subscriber,
        )
        for what, reason in tick.refused[:50]:
            context.log.warning(f"refused {what}: {reason}")
        if len(tick.refused) > 50:
            context.log.warning(f"... and {len(tick.refused) - 50} more refused")
        if tick.new or tick.known:
            context.log.info(
                f"{len(tick.new)} new tracks, {len(tick.known)} already registered, {len(tick.ranges)} run(s)"
                + (" (capped: more next tick)" if tick.backlog else "")
            )
        cursor = tick.cursor or context.cursor
        return dg.SensorResult(
            run_requests=run_requests(
                tick.ranges, selected=selected, trigger="landing", key_prefix="landing"
            ),
            cursor=cursor,
        )

    @dg.sensor(
        name="propagation_sensor",
        job_name=job_name,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=_status(settings, dg.DefaultSensorStatus),
        description="Top-down: after a run of some analyses, runs their descendants for the same tracks.",
    )
    def propagation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from klio_assets.automation.propagation import propagation_run_requests, propagation_tick  # noqa: PLC0415

        tick = propagation_tick(
            context.instance,
            catalog(),
            cursor=context.cursor,
            graph=graph,
            allowed=selected,
            batch_size=settings.batch_size,
        )
        for request in tick.requests:
            context.log.info(
                f"after run {request.upstream_run_id}: {', '.join(request.selected)} for "
                f"{sum(len(r) for r in request.ranges)} tracks"
            )
        return dg.SensorResult(run_requests=propagation_run_requests(tick), cursor=tick.cursor)

    @dg.schedule(
        name="catalog_backfill_schedule",
        cron_schedule=settings.backfill_cron,
        job_name=job_name,
        execution_timezone="UTC",
        default_status=_status(settings, dg.DefaultScheduleStatus),
        description=(
            f"Missing, failed and stale tracks of {', '.join(selected)}: runs of at most "
            f"{settings.batch_size} tracks, at most {settings.backfill_max_runs} per tick."
        ),
    )
    def catalog_backfill_schedule(context: dg.ScheduleEvaluationContext):
        from klio_assets.automation.backfill import STATE_KEY, backfill_run_requests, plan_backfill  # noqa: PLC0415
        from klio_assets.worker.storage import Storage  # noqa: PLC0415

        tick = context.scheduled_execution_time.isoformat()
        track_catalog = catalog()
        plan = plan_backfill(
            context.instance,
            track_catalog,
            Storage(settings.storage),
            planned=planned,
            selected=selected,
            batch_size=settings.batch_size,
            max_runs=settings.backfill_max_runs,
            tick=tick,
        )
        context.log.info(
            f"backfill: {plan.reasons}; {len(plan.runs)} run(s), {plan.deferred_runs} deferred"
        )
        track_catalog.set_state(STATE_KEY, plan.state)
        requests = backfill_run_requests(plan, tick=tick)
        return requests or dg.SkipReason(f"nothing to backfill: {plan.reasons}")

    return [landing_sensor, propagation_sensor], [catalog_backfill_schedule]


__all__ = ["SCHEDULES", "SENSORS", "build_automation"]
