"""Failed tracks shown as failed partitions in the Dagster UI, with their reason.

OSS Dagster 1.13 cannot store ``ASSET_FAILED_TO_MATERIALIZE`` events (its SQLite and
PostgreSQL event logs drop them: ``can_store_asset_failure_events`` is False); the partition
bar's "Failed (n)" counts partitions whose latest planned materialization has none after it,
in a failed run. The run fails when a track failed, so each failed track and analysis gets a
planned event for its partition and an observation with ``status: failed`` and the reason (one
line naming track, file and problem), both through Dagster's batched event path
(:func:`~klio_assets.orchestration.dagster_internals.events.log_batched_failures`). A later
materialization of the partition clears the failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from klio_assets.orchestration import reporting
from klio_assets.orchestration.dagster_internals.events import log_batched_failures
from klio_assets.worker.records import Status, TrackResult


def failure_observations(
    selected: Sequence[str], batch: Sequence[TrackResult]
) -> list[dg.AssetObservation]:
    """One observation per failed track and analysis of ``batch``, reason in its metadata."""
    out = []
    for name in selected:
        for result in batch:
            outcome = result.analyses.get(name)
            if outcome is None or outcome.status != Status.FAILED:
                continue
            metadata: dict[str, Any] = {
                "status": str(Status.FAILED),
                "reason": outcome.reason or "failed",
                "source": dg.MetadataValue.path(result.uri or ""),
            }
            if outcome.error:
                metadata["error"] = outcome.error
            out.append(
                dg.AssetObservation(
                    asset_key=name,
                    partition=result.track_id,
                    description=outcome.reason or "failed",
                    metadata=metadata,
                )
            )
    return out


def log_failed_tracks(
    context: dg.AssetExecutionContext, selected: Sequence[str], batch: Sequence[TrackResult]
) -> None:
    """Record the failed tracks of ``batch`` as failed partitions (see the module's doc).

    Without Dagster's private event path, the reasons are still logged as observations the
    public way (the partitions then show as missing, not failed).
    """
    observations = failure_observations(selected, batch)
    if not observations:
        return
    try:
        step_context = context.get_step_execution_context()
    except AttributeError:
        step_context = None
    if step_context is not None:
        with reporting.event_batching(reporting.EVENT_BATCH_SIZE):
            if log_batched_failures(
                step_context, observations, batch_size=reporting.EVENT_BATCH_SIZE
            ):
                return
    for observation in observations:
        context.log_event(observation)
