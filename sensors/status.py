"""Whether sensors and schedules start running with the daemon (``KLIO_ASSETS_AUTOMATION``)."""

from __future__ import annotations

import dagster as dg

from klio_assets.settings import Settings


def sensor_status(settings: Settings) -> dg.DefaultSensorStatus:
    """``RUNNING`` when ``KLIO_ASSETS_AUTOMATION=running``, else ``STOPPED``."""
    if settings.automation == "running":
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


def schedule_status(settings: Settings) -> dg.DefaultScheduleStatus:
    """``RUNNING`` when ``KLIO_ASSETS_AUTOMATION=running``, else ``STOPPED``."""
    if settings.automation == "running":
        return dg.DefaultScheduleStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED
