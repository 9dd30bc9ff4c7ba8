"""Dagster's SQLite event log, with batched writes of per-track materializations.

Dagster batches event writes only on PostgreSQL; on SQLite every event is two commits (the
run's shard, then the cross-run index), about 20 ms each here, so a 1000-track run spent twice
its Beam time on bookkeeping. This subclass writes a batch of materializations of one run in
one transaction per shard, like dagster-postgres' ``store_event_batch`` (which also updates
the asset's latest-materialization row from the batch's last event only), and leaves every
other event and every read to Dagster's own implementation. Failed tracks' planned events and
observations (:func:`~klio_assets.orchestration.dagster_internals.events.log_batched_failures`)
are batched the same way.

It is the event log of a new ``KLIO_ASSETS_HOME`` (see ``klio_assets.orchestration.launch``); delete those
lines of its ``dagster.yaml`` to go back to Dagster's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

_INSERT_RETURNING_ID = SqlEventLogStorageTable.insert().returning(
    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
)


#: Asset events this store writes in one transaction per shard (a batch holds one type: the
#: per-track materializations, and a failed track's planned event and observation).
_BATCHED_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """:class:`SqliteEventLogStorage` whose ``store_event_batch`` really batches."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not self._batchable(events):
            super().store_event_batch(events)
            return
        # Rows serialized once, inserted by executemany of one cached statement: SQLAlchemy
        # compiles a multi-row VALUES (or a statement per event) anew each time, ~0.5 ms a row.
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            event_ids = list(conn.execute(_INSERT_RETURNING_ID, rows).scalars())
            self._store_asset_event_tags(conn, events, event_ids)
            last_per_asset = {}
            for event, event_id in zip(events, event_ids, strict=True):
                dagster_event = event.get_dagster_event()
                last_per_asset[(dagster_event.asset_key, dagster_event.event_type)] = (
                    event,
                    event_id,
                )
            for event, event_id in last_per_asset.values():
                self._store_asset_event(conn, event, event_id)

    @staticmethod
    def _batchable(events: Sequence[EventLogEntry]) -> bool:
        return (
            bool(events)
            and len({e.run_id for e in events}) == 1
            and all(
                e.is_dagster_event
                and e.get_dagster_event().event_type in _BATCHED_TYPES
                and e.get_dagster_event().asset_key is not None
                for e in events
            )
        )

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        """Built from ``dagster.yaml`` (Dagster's own class method builds the parent class)."""
        return cls(inst_data=inst_data, **config_value)


def dagster_yaml_storage(storage_dir: str) -> str:
    """The ``dagster.yaml`` storage section: Dagster's SQLite layout under ``storage_dir``,
    with this event log."""
    history = f"{storage_dir.rstrip('/')}/history"
    return (
        "run_storage:\n"
        "  module: dagster._core.storage.runs\n"
        "  class: SqliteRunStorage\n"
        f"  config:\n    base_dir: {history}/\n"
        "event_log_storage:\n"
        "  module: klio_assets.sqlite_events\n"
        "  class: BatchedSqliteEventLogStorage\n"
        f"  config:\n    base_dir: {history}/runs/\n"
        "schedule_storage:\n"
        "  module: dagster._core.storage.schedules\n"
        "  class: SqliteScheduleStorage\n"
        f"  config:\n    base_dir: {storage_dir.rstrip('/')}/schedules\n"
    )
