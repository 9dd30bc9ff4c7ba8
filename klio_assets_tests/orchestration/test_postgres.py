"""The production bookkeeping path on a real PostgreSQL server (Debian's binaries, started here):
batched per-track materializations, failure reasons in a PostgreSQL catalog."""

import dagster as dg
import pytest

from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.failures import remembered
from klio_assets.orchestration import launch
from klio_assets.orchestration.partitions import TRACKS, tracks_partitions
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

pytestmark = pytest.mark.postgres


def test_postgres_instance_records_every_track_in_batches(
    postgres, tmp_path, monkeypatch, catalog_tracks
):
    home = tmp_path / "home"
    home.mkdir()
    postgres.create_database("dagster_e2e")
    postgres.create_database("catalog_e2e")
    (home / "dagster.yaml").write_text(postgres.dagster_yaml("dagster_e2e"))
    monkeypatch.setenv("KLIO_ASSETS_HOME", str(home))
    monkeypatch.setenv("KLIO_ASSETS_CATALOG", postgres.url("catalog_e2e"))
    settings = Settings.from_env()
    launch.prepare_environment(settings)
    for name, value in launch.FAST_BOOKKEEPING_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.event_log_storage).__name__ == "BatchedPostgresEventLogStorage"
        catalog = get_catalog(settings.catalog_url)
        order = ["wav44", "broken", "flac48", "ogg32"]
        register_tracks(instance, catalog, [(t, catalog_tracks[t].path) for t in order])
        outcome = launch.execute_range(
            instance,
            selected=["source_audio", "downsampled_audio"],
            track_ids=order,
            storage=Storage(settings.storage),
        )
        assert not outcome.success  # 'broken' failed, after everything else was saved
        for asset in ("source_audio", "downsampled_audio"):
            key = dg.AssetKey(asset)
            assert set(instance.get_materialized_partitions(key)) == {"wav44", "flac48", "ogg32"}
            latest = instance.get_latest_materialization_event(key).asset_materialization
            assert latest.partition == "ogg32"  # the asset row follows the last event of its batch
            assert catalog.failures(asset)["broken"].startswith("track 'broken': cannot decode")
            remembered_failure = remembered(catalog, asset)["broken"]  # on PostgreSQL too
            assert remembered_failure.permanent and remembered_failure.attempts == 1
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("downsampled_audio"), asset_partitions=["flac48"]
            ),
            limit=1,
        ).records[0]
        meta = record.asset_materialization.metadata
        assert meta["status"].value == "computed" and meta["sample_rate"].value == 22050
    finally:
        instance.dispose()


def test_bulk_registration_keeps_order_and_ranges_are_read_without_listing(
    postgres, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    home.mkdir()
    postgres.create_database("dagster_bulk")
    (home / "dagster.yaml").write_text(postgres.dagster_yaml("dagster_bulk"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    catalog = get_catalog(postgres.create_database("catalog_bulk"))
    instance = dg.DagsterInstance.get()
    try:
        instance.add_dynamic_partitions(TRACKS, ["t3"])  # known to Dagster only (added in the UI)
        first = register_tracks(instance, catalog, [(f"t{i}", f"/a/t{i}.wav") for i in (5, 3, 9)])
        assert (first.added, first.known) == (["t5", "t3", "t9"], [])
        again = register_tracks(
            instance, catalog, [("t9", "/a/t9.wav"), ("t3", "/b/t3.wav"), ("t1", "/a/t1.wav")]
        )
        assert (again.added, again.known, list(again.conflicts)) == (["t1"], ["t9"], ["t3"])
        assert catalog.track_ids() == ["t5", "t3", "t9", "t1"]
        assert list(instance.get_dynamic_partitions(TRACKS)) == ["t3", "t5", "t9", "t1"]
        assert instance.has_dynamic_partition(TRACKS, "t9")

        def listing(*_args):
            raise AssertionError("every key listed")

        monkeypatch.setattr(dg.DagsterInstance, "get_dynamic_partitions", listing)
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            keys = tracks_partitions.get_partition_keys_in_range(dg.PartitionKeyRange("t5", "t1"))
        assert keys == ["t5", "t9", "t1"]
    finally:
        instance.dispose()
