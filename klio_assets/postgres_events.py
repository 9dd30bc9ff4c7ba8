"""Import shim: ``dagster.yaml`` files name ``klio_assets.postgres_events.BatchedPostgresEventLogStorage``; the class lives in
:mod:`klio_assets.orchestration.dagster_internals.postgres_events`."""

from klio_assets.orchestration.dagster_internals.postgres_events import (
    BatchedPostgresEventLogStorage,
)

__all__ = ["BatchedPostgresEventLogStorage"]
