"""Provenance and failed partitions on the production event log (PostgreSQL, batched writes)."""

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch
from klio_assets.orchestration.dagster_internals import latest_versions
from klio_assets.orchestration.dagster_internals.stale_status import stale_partitions
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

pytestmark = pytest.mark.postgres
CHAIN = ["source_audio", "downsampled_audio"]
ORDER = ["wav44", "broken", "flac48", "ogg32"]


def test_postgres_run_leaves_nothing_stale_and_the_broken_track_failed(
    postgres, tmp_path, monkeypatch, catalog_tracks
):
    home = tmp_path / "home"
    home.mkdir()
    postgres.create_database("dagster_prov")
    (home / "dagster.yaml").write_text(postgres.dagster_yaml("dagster_prov"))
    monkeypatch.setenv("KLIO_ASSETS_HOME", str(home))
    settings = Settings.from_env()
    launch.prepare_environment(settings)
    for name, value in launch.FAST_BOOKKEEPING_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.event_log_storage).__name__ == "BatchedPostgresEventLogStorage"
        catalog = get_catalog(settings.catalog_url)
        register_tracks(instance, catalog, [(t, catalog_tracks[t].path) for t in ORDER])
        outcome = launch.execute_range(
            instance, selected=CHAIN, track_ids=ORDER, storage=Storage(settings.storage)
        )
        assert not outcome.success
        graph = build_definitions(settings).resolve_asset_graph()
        assert stale_partitions(instance, graph, CHAIN, ORDER) == {n: [] for n in CHAIN}
        for name in CHAIN:
            key = dg.AssetKey(name)
            cache = get_and_update_asset_status_cache_value(instance, key, tracks_partitions)
            failed = tracks_partitions.deserialize_subset(cache.serialized_failed_partition_subset)
            assert set(failed.get_partition_keys()) == {"broken"}, name
            fast = latest_versions.latest_versions(instance, name, ORDER)
            assert fast == latest_versions._public(instance, name, ORDER)
            assert sorted(fast) == ["flac48", "ogg32", "wav44"]
    finally:
        instance.dispose()
