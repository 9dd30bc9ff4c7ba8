"""Dagster's PostgreSQL storages as ``dagster.yaml`` names them keep a connection open per
process: a run's reads and writes reuse it instead of connecting for each (dagster-postgres'
default, 3-20 ms a connection), a server-side disconnect costs a reconnect, not an error, and
``dispose`` closes it."""

import uuid

import dagster as dg
import psycopg2
import pytest

from klio_assets_tests.support.postgres import postgres_dagster_home

pytestmark = pytest.mark.postgres


@pytest.fixture
def instance(postgres, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    postgres_dagster_home(postgres, home, monkeypatch)
    with dg.DagsterInstance.get() as inst:
        yield inst


@pytest.fixture
def connects(monkeypatch):
    """Counts new database connections (psycopg2.connect calls)."""
    count = {"n": 0}
    connect = psycopg2.connect

    def counting(*args, **kwargs):
        count["n"] += 1
        return connect(*args, **kwargs)

    monkeypatch.setattr(psycopg2, "connect", counting)
    return count


def _run_and_events(instance: dg.DagsterInstance, n: int) -> None:
    """What a run does to the three storages: a run, its events and reads, a sensor tick."""
    run = instance.add_run(dg.DagsterRun(job_name="job", run_id=uuid.uuid4().hex))
    for i in range(n):
        instance.report_engine_event(f"event {i}", run)
        instance.get_run_by_id(run.run_id)
        instance.get_asset_records([dg.AssetKey("a")])
        instance.all_instigator_state()
    assert len(instance.all_logs(run.run_id)) == n


def test_postgres_storages_reuse_one_connection_per_process(instance, connects):
    storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
    assert [type(s).__name__ for s in storages] == [
        "PooledPostgresRunStorage",
        "BatchedPostgresEventLogStorage",
        "PooledPostgresScheduleStorage",
    ]
    _run_and_events(instance, 1)  # each storage connects once
    first = connects["n"]
    _run_and_events(instance, 20)  # ~100 reads and writes
    assert connects["n"] == first  # NullPool (dagster-postgres' default) would open ~100 more


def test_postgres_storages_reconnect_after_the_server_drops_them(instance, postgres, connects):
    _run_and_events(instance, 1)
    # The server closes every other session (an idle timeout, a restart, a failover).
    admin = psycopg2.connect(postgres.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname IS NOT NULL AND backend_type = 'client backend'"
        )
    admin.close()
    before = connects["n"]
    _run_and_events(instance, 2)  # no error: the stale connections are replaced
    assert connects["n"] > before


def test_postgres_storages_close_their_connections_on_dispose(instance):
    _run_and_events(instance, 1)
    # Dagster's instance disposes its run and event storages (its schedule storage's
    # connection goes with the process).
    engines = [s._engine for s in (instance.run_storage, instance.event_log_storage)]
    assert all(e.pool.checkedin() == 1 for e in engines)
    instance.dispose()
    assert all(e.pool.checkedin() == 0 for e in engines)
