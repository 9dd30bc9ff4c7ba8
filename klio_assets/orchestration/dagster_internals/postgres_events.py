"""Dagster's PostgreSQL event log, with cheaper batched writes of per-track materializations.

dagster-postgres writes a batch of materializations as one ``INSERT ... VALUES`` statement of
1000 rows, which SQLAlchemy compiles anew for every batch (a bound parameter per column and
row): about 0.7 ms per event on the development machine, as much as serializing the event.
This subclass inserts the same rows as one ``executemany`` of a cached statement (SQLAlchemy's
"insertmanyvalues": the SQL text is built by string batching, the ids come back in event
order), then updates tags and the asset's latest-materialization row exactly as dagster-postgres
does. Measured in a 1000-track run: the materialization phase 1.5-2.3 s -> 0.7-0.9 s, bookkeeping
3.3-4.3 -> 1.8-2.3 ms per track (loaded 2-core machine). Every other event and every read is
Dagster's own.

Use it in ``dagster.yaml`` instead of the ``storage: postgres:`` shortcut (see
``deploy/dagster.yaml``); it takes the same ``postgres_db`` / ``postgres_url`` config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres.event_log.event_log import PostgresEventLogStorage

from klio_assets.orchestration.dagster_internals.postgres_pool import pooled_engine, storage_kwargs

_INSERT = SqlEventLogStorageTable.insert().returning(
    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
)


#: Asset events batched here, one type per batch (a failed track's planned events and
#: observations too: dagster-postgres writes planned events one by one).
_BATCHED_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)


class BatchedPostgresEventLogStorage(PostgresEventLogStorage):
    """:class:`PostgresEventLogStorage` whose materialization batches skip SQL compilation,
    and whose connections are pooled.

    Connections: see :mod:`klio_assets.orchestration.dagster_internals.postgres_pool`.
    """

    def __init__(self, postgres_url: str, *args: Any, **kwargs: Any):
        super().__init__(postgres_url, *args, **kwargs)
        self._engine = pooled_engine(self.postgres_url, self._token_provider)

    def dispose(self) -> None:
        """Stop watching runs (Dagster's) and close the pooled connection."""
        super().dispose()
        self._engine.dispose()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        kept = [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]
        types = {e.get_dagster_event().event_type for e in events}
        if not kept or len(types) != 1 or not types <= _BATCHED_TYPES:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in kept]
        with self._connect() as conn:
            event_ids = list(conn.execute(_INSERT, rows).scalars())
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, kept, event_ids)
            # Like dagster-postgres: the asset's row follows the batch's last event only.
            self._store_asset_event(conn, kept[-1], event_ids[-1])

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        """Built from ``dagster.yaml`` (Dagster's own class method builds the parent class)."""
        return cls(inst_data=inst_data, **storage_kwargs(config_value))
