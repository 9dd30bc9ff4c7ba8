"""Latest materialization of many partitions at once: its storage ID and data version (private API).

A per-track materialization records, for each input, the input's data version and the
storage ID of the input's materialization it read (Dagster's provenance tags): that is how
Dagster's stale-status resolver tells a new input apart from the same input materialized
again. The public API answers for one partition per call
(``instance.get_latest_data_version_record``: a query and a deserialized event each); a batch
of 1000 tracks needs 1000 per input. Here one indexed query per input and batch reads the
latest materialization's ID per partition (``idx_events_by_asset_partition``) and its indexed
``dagster/data_version`` tag (``asset_event_tags``), without deserializing any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import dagster as dg

#: Partitions per ``IN (...)`` query.
_CHUNK = 1000
#: Dagster's tag for a materialization's data version (indexed in ``asset_event_tags``).
DATA_VERSION_TAG = "dagster/data_version"


class LatestVersion(NamedTuple):
    """The latest materialization of one partition."""

    #: Its event's storage ID.
    storage_id: int
    #: Its data version (None when it recorded none).
    data_version: str | None


def _tables() -> tuple[Any, Any, Any] | None:
    try:
        import sqlalchemy as sa  # noqa: PLC0415 - only SQL storages get here
        from dagster._core.storage.event_log.schema import (  # noqa: PLC0415
            AssetEventTagsTable,
            SqlEventLogStorageTable,
        )
    except ImportError:
        return None
    return sa, SqlEventLogStorageTable, AssetEventTagsTable


def latest_versions(
    instance: dg.DagsterInstance,
    asset: str,
    partitions: Sequence[str],
    *,
    observations: bool = False,
) -> dict[str, LatestVersion]:
    """Partition to its latest materialization of ``asset`` (its latest observation, with
    ``observations``: an external asset), for those of ``partitions`` that have one.

    Falls back to ``instance.get_latest_data_version_record`` per partition when the event log
    is not Dagster's SQL storage.
    """
    tables = _tables()
    connect = getattr(instance.event_log_storage, "index_connection", None)
    if tables is None or connect is None:
        return _public(instance, asset, partitions, observations=observations)
    event_type = "ASSET_OBSERVATION" if observations else "ASSET_MATERIALIZATION"
    sa, events, tags = tables
    key = dg.AssetKey(asset).to_string()
    out: dict[str, LatestVersion] = {}
    for start in range(0, len(partitions), _CHUNK):
        chunk = list(partitions[start : start + _CHUNK])
        latest = (
            sa.select(events.c.partition, sa.func.max(events.c.id).label("id"))
            .where(
                events.c.asset_key == key,
                events.c.dagster_event_type == event_type,
                events.c.partition.in_(chunk),
            )
            .group_by(events.c.partition)
            .subquery()
        )
        query = sa.select(latest.c.partition, latest.c.id, tags.c.value).outerjoin(
            tags, sa.and_(tags.c.event_id == latest.c.id, tags.c.key == DATA_VERSION_TAG)
        )
        with connect() as conn:
            for partition, storage_id, version in conn.execute(query):
                out[partition] = LatestVersion(int(storage_id), version)
    return out


def _public(
    instance: dg.DagsterInstance,
    asset: str,
    partitions: Sequence[str],
    *,
    observations: bool = False,
) -> dict[str, LatestVersion]:
    out: dict[str, LatestVersion] = {}
    for partition in partitions:
        record = instance.get_latest_data_version_record(
            dg.AssetKey(asset), observations, partition_key=partition
        )
        if record is not None:
            tags = record.event_log_entry.tags or {}
            out[partition] = LatestVersion(record.storage_id, tags.get(DATA_VERSION_TAG))
    return out
