"""Pooled PostgreSQL connections for Dagster's storages (dagster-postgres' private attributes).

dagster-postgres opens a new database connection for every read and write of its storages
(SQLAlchemy's ``NullPool``, so that an instance holds none open). A 1000-track run makes ~90
of them (every run, step, log and asset event, every read of the run and its asset records),
3-20 ms each on a local server and more with TLS to a remote one: 0.3-0.9 s of a run's
bookkeeping on the development machine. The subclasses here keep one connection open per
process and storage (``pool_size=1``, as dagster-postgres itself does for its webserver); a
thread that needs one while it is taken opens another, closed when returned. Each is pinged
before use (a server restart or an idle timeout costs a reconnect, not an error), recycled
after an hour, and dropped in a forked child (a connection must not be shared by two
processes). ``dispose`` closes them.

Name these classes in ``dagster.yaml`` instead of the ``storage: postgres:`` shortcut (see
``deploy/dagster.yaml``); they take the same ``postgres_db`` / ``postgres_url`` config.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from dagster_postgres.run_storage.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy import pool as db_pool
from sqlalchemy.engine import Engine

#: Pooled engines of this process, reset in a forked child.
_POOLED_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for engine in list(_POOLED_ENGINES):
        engine.dispose(close=False)  # the parent's connections stay the parent's


os.register_at_fork(after_in_child=_reset_after_fork)


def pooled_engine(postgres_url: str, token_provider: Any) -> Engine:
    """An engine like dagster-postgres' (autocommit, same token hook) keeping one connection."""
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        poolclass=db_pool.QueuePool,
        pool_size=1,
        max_overflow=-1,  # no limit: another thread gets a connection of its own
        pool_pre_ping=True,
        pool_recycle=3600,
    )
    _POOLED_ENGINES.add(engine)
    return engine


def storage_kwargs(config_value: Any) -> dict[str, Any]:
    """Constructor arguments of a dagster-postgres storage from its ``dagster.yaml`` config."""
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class _Pooled:
    """What both pooled storages add to their dagster-postgres class (listed first among
    the bases): the pooled engine, built from ``dagster.yaml`` the same way, closed on
    ``dispose``."""

    postgres_url: str
    _token_provider: Any
    _engine: Engine

    def __init__(self, postgres_url: str, *args: Any, **kwargs: Any):
        super().__init__(postgres_url, *args, **kwargs)  # type: ignore[call-arg]
        self._engine = pooled_engine(self.postgres_url, self._token_provider)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        """Built from ``dagster.yaml`` (Dagster's own class method builds the parent class)."""
        return cls(inst_data=inst_data, **storage_kwargs(config_value))

    def dispose(self) -> None:
        """Close the pooled connection."""
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """:class:`PostgresRunStorage` with pooled connections."""


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """:class:`PostgresScheduleStorage` with pooled connections (sensor and schedule ticks)."""
