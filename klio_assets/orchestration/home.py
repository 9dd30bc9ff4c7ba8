"""The klio-assets home: where Dagster's instance lives locally, and how it is configured.

Kept apart from :mod:`klio_assets.orchestration.launch` because it imports no Dagster: commands that can
answer without a run (an all-skipped ``klio-assets run``) stay fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from klio_assets.settings import Settings

#: Head of the instance settings written to a new home.
DEFAULT_DAGSTER_YAML = """\
# Written by klio-assets for a new KLIO_ASSETS_HOME; edit freely. For PostgreSQL, replace the
# three *_storage sections with a `storage: postgres:` section (dagster-postgres).
telemetry:
  enabled: false
"""
#: Dagster settings that keep per-track bookkeeping cheap (see klio_assets.orchestration.reporting):
#: one planned event per run instead of one per partition, batched event writes.
FAST_BOOKKEEPING_ENV = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}


#: Written once a home's databases exist: later processes skip the (locked) initialization.
INITIALIZED_MARKER = ".klio-initialized"


@contextlib.contextmanager
def home_lock(folder: str, name: str) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` in ``folder`` (blocking) across processes.

    SQLite databases created or written by several processes at once fail: two first commands
    on a new home both create Dagster's tables ("table run_tags already exists", duplicate
    Alembic heads), two registrations both insert the same partitions. Commands that create or
    register take this lock; everything else reads without it.
    """
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".klio-{name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_environment(settings: Settings) -> None:
    """Point Dagster at ``KLIO_ASSETS_HOME`` and set the bookkeeping variables; on a new home,
    create its ``dagster.yaml``, Dagster's databases, the catalog and the default landing
    folder, once, under a lock."""
    os.makedirs(settings.home, exist_ok=True)
    os.environ["DAGSTER_HOME"] = settings.home
    os.environ.setdefault("KLIO_ASSETS_HOME", settings.home)
    for name, value in FAST_BOOKKEEPING_ENV.items():
        os.environ.setdefault(name, value)
    if os.path.exists(os.path.join(settings.home, INITIALIZED_MARKER)):
        return
    with home_lock(settings.home, "init"):
        if not os.path.exists(os.path.join(settings.home, INITIALIZED_MARKER)):
            _initialize(settings)


def _initialize(settings: Settings) -> None:
    # Imports Dagster and the catalog: paid once per home, never on the fast paths.
    import dagster as dg  # noqa: PLC0415

    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.orchestration.dagster_internals.sqlite_events import dagster_yaml_storage  # noqa: PLC0415

    yaml_path = os.path.join(settings.home, "dagster.yaml")
    if not os.path.exists(yaml_path):
        with open(yaml_path, "w") as fh:
            fh.write(DEFAULT_DAGSTER_YAML + dagster_yaml_storage(settings.home))
    with dg.DagsterInstance.get() as instance:
        instance.get_dynamic_partitions("tracks")  # creates the event log's index tables
    get_catalog(settings.catalog_url)
    if settings.landing == os.path.join(settings.home, "landing"):
        # the default landing folder exists from the start: the landing sensor of a home
        # nobody drops files into is idle, not failing (a folder set and missing still fails)
        os.makedirs(settings.landing, exist_ok=True)
    with open(os.path.join(settings.home, INITIALIZED_MARKER), "w") as fh:
        fh.write("dagster.yaml, Dagster's databases and the catalog exist\n")
