"""Import shim: ``dagster.yaml`` files name ``klio_assets.postgres_events.<class>`` for Dagster's
PostgreSQL storages; the classes live in
:mod:`klio_assets.orchestration.dagster_internals.postgres_events` (the event log's batched
writes) and :mod:`klio_assets.orchestration.dagster_internals.postgres_pool` (pooled
connections, all three storages)."""

from klio_assets.orchestration.dagster_internals.postgres_events import (
    BatchedPostgresEventLogStorage,
)
from klio_assets.orchestration.dagster_internals.postgres_pool import (
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)

__all__ = [
    "BatchedPostgresEventLogStorage",
    "PooledPostgresRunStorage",
    "PooledPostgresScheduleStorage",
]
