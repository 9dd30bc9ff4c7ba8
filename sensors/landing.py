"""``landing_sensor``: new tracks from the landing folder / ``gs://`` prefix and Pub/Sub."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.sensors.status import sensor_status

from klio_assets.automation.landing import LandingTick, Subscriber
from klio_assets.automation.service import Automation

#: Refusals logged one by one per tick; the rest are counted (a flood of bad messages must
#: not flood the tick's log).
MAX_LOGGED_REFUSALS = 50


def log_landing(log: logging.Logger, tick: LandingTick) -> None:
    """Log what a landing tick refused (each with its reason) and registered."""
    for what, reason in tick.refused[:MAX_LOGGED_REFUSALS]:
        log.warning(f"refused {what}: {reason}")
    if len(tick.refused) > MAX_LOGGED_REFUSALS:
        log.warning(f"... and {len(tick.refused) - MAX_LOGGED_REFUSALS} more refused")
    if tick.new or tick.known:
        log.info(
            f"{len(tick.new)} new tracks, {len(tick.known)} already registered, {len(tick.ranges)} run(s)"
            + (" (capped: more next tick)" if tick.backlog else "")
        )


def build_landing_sensor(
    automation: Automation,
    *,
    job_name: str,
    catalog: CatalogResource,
    subscriber: Subscriber | Callable[[], Subscriber] | None = None,
) -> dg.SensorDefinition:
    """The landing sensor: registers at most ``KLIO_ASSETS_LANDING_MAX_TRACKS`` new tracks per
    tick and requests one fused run per contiguous range of them."""
    settings = automation.settings
    source = f"New audio in {settings.landing or '(no folder)'}" + (
        f" and Pub/Sub {settings.landing_subscription}" if settings.landing_subscription else ""
    )

    @dg.sensor(
        name="landing_sensor",
        job_name=job_name,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=sensor_status(settings),
        description=(
            f"{source}: registers up to {settings.landing_max_tracks} tracks per tick and runs "
            f"{', '.join(automation.selected)} for them in one run per contiguous range."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # The cap (landing_max_tracks) is the service's: a first tick over a folder of a
        # million files must not register them all in one evaluation (the daemon's tick
        # timeout would fail it, forever).
        tick = automation.landing(
            context.instance, catalog.get_catalog(), cursor=context.cursor, subscriber=subscriber
        )
        log_landing(context.log, tick)
        return dg.SensorResult(
            run_requests=tick.run_requests(automation.selected),
            cursor=tick.cursor or context.cursor,
        )

    return landing_sensor
