"""A source file changed on disk shows its track stale in Dagster before any run."""

import shutil

import dagster as dg
import pytest

from klio_assets.catalog.database import get_catalog
from klio_assets.orchestration.source_files import SOURCE_FILES, observe_sources
from klio_assets_tests.conftest import cli_json
from klio_assets_tests.orchestration.test_staleness import TRACKS, _run, _stale, env

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.e2e


def test_changed_source_file_observed_stales_exactly_its_track_then_run_stale_clears_it(env, home):
    settings, instance, storage, copies = env
    catalog = get_catalog(settings.catalog_url)
    # registration writes no observation; before a run there is nothing to compare with
    assert instance.fetch_observations(dg.AssetKey(SOURCE_FILES), limit=10).records == []
    assert observe_sources(instance, catalog, TRACKS) == []
    _run(instance, storage)
    assert _stale(settings, instance) == {}

    assert observe_sources(instance, catalog, TRACKS) == []  # nothing changed: nothing written
    assert instance.fetch_observations(dg.AssetKey(SOURCE_FILES), limit=10).records == []
    shutil.copyfile(copies["flac48"], copies["wav44"])  # new bytes for one track
    assert _stale(settings, instance) == {}  # not observed yet: Dagster cannot know
    assert observe_sources(instance, catalog, TRACKS) == ["wav44"]
    # exactly that track's source_audio; Dagster 1.13 flags only direct children of new data
    assert _stale(settings, instance) == {"source_audio": ["wav44"]}
    assert observe_sources(instance, catalog, TRACKS) == []  # observed once, not again

    out, _ = cli_json("run", "--stale", home=home)
    computed = {n: c.get("computed", 0) for n, c in out["assets"].items()}
    assert computed == {
        "source_audio": 1,
        "downsampled_audio": 1,
        "loudness": 1,
        "waveform_plot": 1,
    }, out
    assert _stale(settings, instance) == {}


def test_run_stale_observes_the_sources_itself(env, home):
    settings, instance, storage, copies = env
    _run(instance, storage)
    shutil.copyfile(copies["ogg32"], copies["flac48"])
    plan, _ = cli_json("run", "--stale", "--dry-run", home=home)
    # the dry run observed the change: the UI shows the track stale before any run
    assert _stale(settings, instance) == {"source_audio": ["flac48"]}
    # and it says what the real run would recompute: that track's chain, nothing else
    would = {n: c.get("would_compute", 0) for n, c in plan["assets"].items() if c}
    assert would == {
        "source_audio": 1,
        "downsampled_audio": 1,
        "loudness": 1,
        "waveform_plot": 1,
    }, plan
    assert {t for t, per in plan["tracks"].items() for r in per.values()} == {"flac48"}
    out, _ = cli_json("run", "--stale", home=home)
    computed = {n: c.get("computed", 0) for n, c in out["assets"].items() if c.get("computed")}
    assert computed == would


def test_batched_observations_read_back_like_dagsters_own(home):
    from klio_assets.orchestration.dagster_internals.observations import store_observations
    from klio_assets.orchestration.partitions import add_track_partitions

    instance = dg.DagsterInstance.get()
    add_track_partitions(instance, ["a", "b"])
    tags = {"dagster/data_version": "10:123"}
    store_observations(
        instance,
        [dg.AssetObservation(SOURCE_FILES, partition=p, tags=tags) for p in ("a", "b")],
        batch_size=1,
    )
    instance.report_runless_asset_event(
        dg.AssetObservation(SOURCE_FILES, partition="b", tags={"dagster/data_version": "11:1"})
    )
    versions = {}
    for partition in ("a", "b"):
        record = instance.get_latest_data_version_record(
            dg.AssetKey(SOURCE_FILES), True, partition_key=partition
        )
        versions[partition] = record.event_log_entry.tags["dagster/data_version"]
    assert versions == {"a": "10:123", "b": "11:1"}
    from klio_assets.orchestration.dagster_internals import latest_versions as lv

    fast = lv.latest_versions(instance, SOURCE_FILES, ["a", "b", "c"], observations=True)
    assert fast == lv._public(instance, SOURCE_FILES, ["a", "b", "c"], observations=True)
    assert {p: v.data_version for p, v in fast.items()} == versions
