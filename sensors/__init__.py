"""Dagster sensors and schedules of klio-assets (installed as ``klio_assets.sensors``).

Sensor-driven streaming of new tracks, top-down propagation and scheduled catalog backfills
are built here on top of the core engine; until then the code location has none.
"""

from __future__ import annotations

import dagster as dg

SENSORS: list[dg.SensorDefinition] = []
SCHEDULES: list[dg.ScheduleDefinition] = []

__all__ = ["SCHEDULES", "SENSORS"]
