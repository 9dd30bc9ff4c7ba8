"""The klio-assets home: where Dagster's instance lives locally, and how it is configured.

Kept apart from :mod:`klio_assets.orchestration.launch` because it imports no Dagster: commands that can
answer without a run (an all-skipped ``klio-assets run``) stay fast.
"""

from __future__ import annotations

import os

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


def prepare_environment(settings: Settings) -> None:
    """Point Dagster at ``KLIO_ASSETS_HOME`` (creating it) and set the bookkeeping variables."""
    os.makedirs(settings.home, exist_ok=True)
    yaml_path = os.path.join(settings.home, "dagster.yaml")
    if not os.path.exists(yaml_path):
        from klio_assets.orchestration.dagster_internals.sqlite_events import dagster_yaml_storage  # noqa: PLC0415 - imports Dagster

        with open(yaml_path, "w") as fh:
            fh.write(DEFAULT_DAGSTER_YAML + dagster_yaml_storage(settings.home))
    os.environ["DAGSTER_HOME"] = settings.home
    os.environ.setdefault("KLIO_ASSETS_HOME", settings.home)
    for name, value in FAST_BOOKKEEPING_ENV.items():
        os.environ.setdefault(name, value)
