"""Every use of Dagster's private API (``dagster._core``), each with its public-API fallback.

* :mod:`.dynamic_partitions`: the dynamic-partitions table read and written directly (ordered
  keys, a range's keys, contiguous ranges, the PostgreSQL bulk insert);
* :mod:`.loading_context`: the instance behind the current partition-loading context;
* :mod:`.events`: per-track materializations in batches, and failed tracks as failed
  partitions (a planned event and an observation each);
* :mod:`.latest_versions`: the latest materialization's storage ID and data version of many
  partitions in one query (the inputs' provenance);
* :mod:`.stale_status`: Dagster's stale-status resolver (``run --stale``);
* :mod:`.observations`: run-less observations (``source_files``) stored in batches;
* :mod:`.sqlite_events`, :mod:`.postgres_events`: event logs with cheaper batched writes (the
  classes ``dagster.yaml`` names, through the shims ``klio_assets.sqlite_events`` and
  ``klio_assets.postgres_events``);
* :mod:`.postgres_pool`: dagster-postgres' run, event and schedule storages with one pooled
  connection per process instead of one connection per query.

``klio_assets_tests/orchestration/test_dagster_internals.py`` fails when Dagster changes what these rely on.
"""
