"""Staleness as Dagster's own resolver sees it, and failed tracks as failed partitions.

Real instance (SQLite, temporary home), real Beam runs of a small chain: source_audio ->
downsampled_audio -> waveform_plot, source_audio -> loudness.
"""

import os
import shutil

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch, provenance
from klio_assets.orchestration.dagster_internals import latest_versions
from klio_assets.orchestration.dagster_internals.stale_status import stale_partitions
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.conftest import cli_json

CHAIN = ["source_audio", "downsampled_audio", "loudness", "waveform_plot"]
TRACKS = ["wav44", "flac48", "broken", "ogg32"]


@pytest.fixture
def env(home, catalog_tracks, tmp_path):
    """A home with four tracks (one broken) registered, from copies the test may change."""
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    copies = {}
    for track in TRACKS:
        src = catalog_tracks[track].path
        copies[track] = str(tmp_path / os.path.basename(src))
        shutil.copyfile(src, copies[track])
    register_tracks(instance, catalog, [(t, copies[t]) for t in TRACKS])
    yield settings, instance, Storage(settings.storage), copies
    instance.dispose()


def _stale(settings, instance):
    graph = build_definitions(settings).resolve_asset_graph()
    found = stale_partitions(instance, graph, CHAIN, TRACKS)
    return {name: sorted(keys) for name, keys in found.items() if keys}


def _run(instance, storage, **kw):
    return launch.execute_range(instance, selected=CHAIN, track_ids=TRACKS, storage=storage, **kw)


def test_clean_run_leaves_nothing_stale_and_a_param_change_stales_exactly_its_chain(
    env, monkeypatch
):
    settings, instance, storage, _ = env
    _run(instance, storage)
    assert _stale(settings, instance) == {}
    # a rerun (every track skipped, materialized again) keeps everything fresh
    _run(instance, storage)
    assert _stale(settings, instance) == {}

    monkeypatch.setenv("KLIO_ASSETS_PARAMS", '{"downsampled_audio": {"sample_rate": 16000}}')
    changed = Settings.from_env()
    good = ["flac48", "ogg32", "wav44"]
    assert _stale(changed, instance) == {"downsampled_audio": good, "waveform_plot": good}
    graph = build_definitions(changed).resolve_asset_graph()
    assert stale_partitions(instance, graph, ["loudness", "source_audio"], TRACKS) == {
        "loudness": [],
        "source_audio": [],
    }


def test_rematerialized_input_with_new_data_stales_only_that_tracks_children(env):
    settings, instance, storage, copies = env
    _run(instance, storage)
    # the source of one track changes; computing source_audio again records its new content
    shutil.copyfile(copies["flac48"], copies["wav44"])
    launch.execute_range(instance, selected=["source_audio"], track_ids=["wav44"], storage=storage)
    assert _stale(settings, instance) == {
        "downsampled_audio": ["wav44"],
        "loudness": ["wav44"],
    }


def test_failed_track_is_a_failed_partition_with_its_reason(env):
    settings, instance, storage, _ = env
    outcome = _run(instance, storage)
    assert not outcome.success
    for name in CHAIN:
        key = dg.AssetKey(name)
        # what the UI's partition bar reads ("Failed (n)")
        cache = get_and_update_asset_status_cache_value(instance, key, tracks_partitions)
        failed = tracks_partitions.deserialize_subset(cache.serialized_failed_partition_subset)
        assert set(failed.get_partition_keys()) == {"broken"}, name
        records = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=["broken"]), limit=1
        ).records
        meta = records[0].asset_observation.metadata
        assert meta["status"].value == "failed"
        assert "broken" in meta["reason"].value


def _latest_id(instance, asset, track):
    return instance.get_latest_data_version_record(
        dg.AssetKey(asset), False, partition_key=track
    ).storage_id


def test_run_stale_recomputes_exactly_the_unsynced_partitions(env, home):
    settings, instance, storage, _ = env
    _run(instance, storage)
    before = {n: _latest_id(instance, n, "wav44") for n in CHAIN}
    params = '{"downsampled_audio": {"sample_rate": 16000}}'
    env_vars = {"KLIO_ASSETS_PARAMS": params}
    out, _ = cli_json("run", "--stale", home=home, env=env_vars)
    assert out["runs"], out
    computed = {n: c.get("computed", 0) for n, c in out["assets"].items()}
    assert computed == {"downsampled_audio": 3, "waveform_plot": 3}
    after = {n: _latest_id(instance, n, "wav44") for n in CHAIN}
    assert after["loudness"] == before["loudness"]
    assert after["source_audio"] == before["source_audio"]
    assert after["downsampled_audio"] != before["downsampled_audio"]
    os.environ["KLIO_ASSETS_PARAMS"] = params
    try:
        assert _stale(Settings.from_env(), instance) == {}
    finally:
        del os.environ["KLIO_ASSETS_PARAMS"]
    # nothing stale: nothing runs
    out, _ = cli_json("run", "--stale", home=home, env=env_vars)
    assert out["runs"] == []


def test_provenance_tags_are_dagsters_own():
    from dagster._core.definitions import data_version as dv

    assert provenance.CODE_VERSION_TAG == dv.CODE_VERSION_TAG
    assert provenance.DATA_VERSION_TAG == dv.DATA_VERSION_TAG
    assert provenance.DATA_VERSION_IS_USER_PROVIDED_TAG == dv.DATA_VERSION_IS_USER_PROVIDED_TAG
    assert provenance.INPUT_DATA_VERSION_TAG_PREFIX == dv.INPUT_DATA_VERSION_TAG_PREFIX
    assert provenance.INPUT_EVENT_POINTER_TAG_PREFIX == dv.INPUT_EVENT_POINTER_TAG_PREFIX
    assert provenance.NULL_DATA_VERSION == dv.NULL_DATA_VERSION.value
    inputs = {"source_audio": "abc", "downsampled_audio": "def"}
    assert (
        provenance.logical_version("1-x", inputs)
        == dv.compute_logical_data_version(
            "1-x", {dg.AssetKey(k): dg.DataVersion(v) for k, v in inputs.items()}
        ).value
    )


def test_latest_versions_read_in_one_query_match_the_public_api(env):
    _, instance, storage, _ = env
    _run(instance, storage)
    for name in CHAIN:
        fast = latest_versions.latest_versions(instance, name, TRACKS)
        assert fast == latest_versions._public(instance, name, TRACKS)
        assert sorted(fast) == ["flac48", "ogg32", "wav44"]
        assert all(v.data_version for v in fast.values())


def test_run_stale_recomputes_the_whole_chain_of_a_changed_source_only(env, home):
    _, instance, storage, copies = env
    _run(instance, storage)
    before = {t: _latest_id(instance, "loudness", t) for t in ("wav44", "flac48")}
    shutil.copyfile(copies["flac48"], copies["wav44"])
    out, _ = cli_json("run", "--stale", home=home)
    computed = {n: c.get("computed", 0) for n, c in out["assets"].items()}
    assert computed == dict.fromkeys(CHAIN, 1), out
    assert _latest_id(instance, "loudness", "flac48") == before["flac48"]
    assert _latest_id(instance, "loudness", "wav44") != before["wav44"]
