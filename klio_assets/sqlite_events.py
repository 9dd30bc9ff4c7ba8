"""Import shim: ``dagster.yaml`` files name ``klio_assets.sqlite_events.BatchedSqliteEventLogStorage``; the class lives in
:mod:`klio_assets.orchestration.dagster_internals.sqlite_events`."""

from klio_assets.orchestration.dagster_internals.sqlite_events import BatchedSqliteEventLogStorage

__all__ = ["BatchedSqliteEventLogStorage"]
