"""Per-track materializations written in batches, the way Dagster batches its own (private API).

Dagster batches the per-partition events it derives from a partitioned ``Output``: each event
carries ``DagsterEventBatchMetadata`` (the batch's ID, and whether it is the last), and with
``DAGSTER_EVENT_BATCH_SIZE`` set the event log stores a batch in one write. An
``AssetMaterialization`` yielded per track is one unbatched write instead (20-57 ms each).
Batches never mix assets: PostgreSQL's batch writer updates the asset's latest-materialization
row from the batch's last event only. None of this is public API; when it is missing, the
caller yields the materializations the public way (slower, same result).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import dagster as dg

#: Events per batch.
EVENT_BATCH_SIZE = 1000


def _private_api() -> Any | None:
    """``dagster._core.events`` (``DagsterEvent``, batch metadata, planned data), or None."""
    try:
        from dagster._core import events  # noqa: PLC0415

        for name in (
            "DagsterEvent",
            "DagsterEventBatchMetadata",
            "DagsterEventType",
            "AssetMaterializationPlannedData",
            "generate_event_batch_id",
        ):
            getattr(events, name)
    except (ImportError, AttributeError):
        return None
    return events


def _log_in_batches(items: Sequence[Any], log_one: Any, *, batch_size: int, api: Any) -> None:
    """Log ``items`` (of one asset and one event type) in batches through ``log_one``."""
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch_id = api.generate_event_batch_id()
        for i, item in enumerate(chunk):
            log_one(item, api.DagsterEventBatchMetadata(batch_id, i == len(chunk) - 1))


def log_batched_materializations(
    step_context: Any,
    materializations: Sequence[dg.AssetMaterialization],
    *,
    batch_size: int = EVENT_BATCH_SIZE,
) -> bool:
    """Log ``materializations`` in batches of one asset each, through Dagster's batched path.

    Parameters
    ----------
    step_context : dagster step execution context
        ``context.get_step_execution_context()`` of the running asset or op.
    materializations : sequence of dg.AssetMaterialization
        Usually one per track (``partition=track_id``).
    batch_size : int
        Events per batch; Dagster stores a batch in one write when ``DAGSTER_EVENT_BATCH_SIZE``
        is set in the process (the caller sets it).

    Returns
    -------
    bool
        True when every materialization was logged; False when Dagster's batched path is
        unavailable and nothing was logged (the caller yields them instead).
    """
    api = _private_api()
    if api is None:
        return False
    by_asset: dict[dg.AssetKey, list[dg.AssetMaterialization]] = defaultdict(list)
    for mat in materializations:
        by_asset[mat.asset_key].append(mat)
    for mats in by_asset.values():
        _log_in_batches(
            mats,
            lambda mat, meta: api.DagsterEvent.asset_materialization(step_context, mat, meta),
            batch_size=batch_size,
            api=api,
        )
    return True


def log_batched_failures(
    step_context: Any,
    observations: Sequence[dg.AssetObservation],
    *,
    batch_size: int = EVENT_BATCH_SIZE,
) -> bool:
    """Record per-partition failures the way OSS Dagster reads them, in batches per asset.

    OSS Dagster's event logs do not store ``ASSET_FAILED_TO_MATERIALIZE`` events
    (``can_store_asset_failure_events`` is False on SQLite and PostgreSQL); its partition
    status reads a partition as failed when its latest ``ASSET_MATERIALIZATION_PLANNED`` event
    for that partition has no materialization after it and its run failed
    (``get_latest_asset_partition_materialization_attempts_without_materializations``). With
    ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`` (cheap bookkeeping) the run's planned
    event names a subset, not partitions, so nothing shows as failed. So each failed
    track-analysis gets a planned event for its partition (it was planned: that is true) and
    an observation carrying the reason (shown in the partition's events in the UI).

    Parameters
    ----------
    observations : sequence of dg.AssetObservation
        One per failed track and analysis (``partition=track_id``), with the reason in its
        metadata.

    Returns
    -------
    bool
        False when Dagster's private path is unavailable (nothing logged).
    """
    api = _private_api()
    if api is None:
        return False
    by_asset: dict[dg.AssetKey, list[dg.AssetObservation]] = defaultdict(list)
    for obs in observations:
        by_asset[obs.asset_key].append(obs)

    def planned(obs: dg.AssetObservation, meta: Any) -> None:
        api.DagsterEvent.from_step(
            event_type=api.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            step_context=step_context,
            event_specific_data=api.AssetMaterializationPlannedData(
                obs.asset_key, partition=obs.partition
            ),
            message=f"failed: {obs.asset_key.to_user_string()} of track {obs.partition!r}",
            batch_metadata=meta,
        )

    for obs_of_asset in by_asset.values():
        _log_in_batches(obs_of_asset, planned, batch_size=batch_size, api=api)
        _log_in_batches(
            obs_of_asset,
            lambda obs, meta: api.DagsterEvent.asset_observation(step_context, obs, meta),
            batch_size=batch_size,
            api=api,
        )
    return True


def run_partitions(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """The partitions a run's asset events name: one indexed query on the event log
    (``run_id``), instead of loading the run's events (the public fallback)."""
    try:
        import sqlalchemy as sa  # noqa: PLC0415
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable  # noqa: PLC0415

        connect = instance.event_log_storage.index_connection  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return {
            record.dagster_event.partition
            for record in instance.all_logs(run_id)
            if record.dagster_event is not None and record.dagster_event.partition
        }
    table = SqlEventLogStorageTable
    query = (
        sa.select(table.c.partition)
        .where(table.c.run_id == run_id, table.c.partition.isnot(None))
        .distinct()
    )
    with connect() as conn:
        return {row[0] for row in conn.execute(query)}
