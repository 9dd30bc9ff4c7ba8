"""The ``tracks`` partitions: one dynamic partition per track ID, in registration order."""

from __future__ import annotations

import dagster as dg

TRACKS = "tracks"

#: Every per-track analysis asset is partitioned by it.
tracks_partitions = dg.DynamicPartitionsDefinition(name=TRACKS)


def keys_in_range(instance: dg.DagsterInstance, start: str, end: str) -> list[str] | None:
    """The ``tracks`` keys from ``start`` to ``end`` (inclusive, registration order), in O(range).

    ``context.partition_keys`` lists every registered key to slice a run's range out of them
    (0.5 s at 100k tracks, 4-5 s at 1M): one indexed query on Dagster's own dynamic
    partitions table does it in time proportional to the run. Returns ``None`` when the
    instance's storage is not SQL or the answer does not end where the range does; callers
    then fall back to ``context.partition_keys``.
    """
    try:
        import sqlalchemy as sa  # noqa: PLC0415

        from dagster._core.storage.event_log.schema import DynamicPartitionsTable as table  # noqa: PLC0415, N813

        connect = instance.event_log_storage.index_connection  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return None

    def id_of(key: str):
        return (
            sa.select(table.c.id)
            .where(table.c.partitions_def_name == TRACKS, table.c.partition == key)
            .scalar_subquery()
        )

    query = (
        sa.select(table.c.partition)
        .where(table.c.partitions_def_name == TRACKS, table.c.id >= id_of(start), table.c.id <= id_of(end))
        .order_by(table.c.id)
    )
    with connect() as conn:
        keys = [row[0] for row in conn.execute(query)]
    if not keys or keys[0] != start or keys[-1] != end:
        return None
    return keys
