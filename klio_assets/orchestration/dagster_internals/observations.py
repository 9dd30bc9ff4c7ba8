"""Run-less asset observations stored in batches (private API).

``instance.report_runless_asset_event`` stores one event per call (two commits on SQLite, a
round trip on PostgreSQL): at registration, a million sources would be a million writes. Here
the same events (those ``report_runless_asset_event`` builds: run-less run ID and job name) go
to the event log's ``store_event_batch`` in chunks: one transaction per chunk on klio-assets'
SQLite event log and on dagster-postgres; Dagster's default SQLite storage stores them one by
one (same result).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

#: Events per ``store_event_batch`` call.
OBSERVATION_BATCH_SIZE = 1000


def store_observations(
    instance: dg.DagsterInstance,
    observations: Sequence[dg.AssetObservation],
    *,
    batch_size: int = OBSERVATION_BATCH_SIZE,
) -> None:
    """Store ``observations`` (run-less) in batches of one asset each.

    Falls back to ``instance.report_runless_asset_event`` per observation when this Dagster
    has not the private pieces used here.
    """
    try:
        from dagster._core.events import (  # noqa: PLC0415
            AssetObservationData,
            DagsterEvent,
            DagsterEventType,
        )
        from dagster._core.events.log import EventLogEntry  # noqa: PLC0415
        from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID  # noqa: PLC0415
        from dagster._time import get_current_timestamp  # noqa: PLC0415
    except ImportError:
        for observation in observations:
            instance.report_runless_asset_event(observation)
        return
    by_asset: dict[dg.AssetKey, list[dg.AssetObservation]] = {}
    for observation in observations:
        by_asset.setdefault(observation.asset_key, []).append(observation)
    for items in by_asset.values():
        for start in range(0, len(items), batch_size):
            now = get_current_timestamp()
            entries = [
                EventLogEntry(
                    user_message="",
                    level=20,  # logging.INFO
                    job_name=RUNLESS_JOB_NAME,
                    run_id=RUNLESS_RUN_ID,
                    error_info=None,
                    timestamp=now,
                    step_key=None,
                    dagster_event=DagsterEvent(
                        event_type_value=DagsterEventType.ASSET_OBSERVATION.value,
                        job_name=RUNLESS_JOB_NAME,
                        event_specific_data=AssetObservationData(observation),
                    ),
                )
                for observation in items[start : start + batch_size]
            ]
            instance.event_log_storage.store_event_batch(entries)
