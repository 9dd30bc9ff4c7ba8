"""``run --stale``'s bulk pre-filter agrees with Dagster's own stale-status resolver."""

import shutil

import pytest

from klio_assets.analyses import load_analyses
from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch, staleness
from klio_assets.orchestration.assets import GROUP_NAME, build_analysis_assets
from klio_assets.orchestration.dagster_internals import stale_status
from klio_assets.orchestration.lineage import parents
from klio_assets.orchestration.source_files import source_files_spec
from klio_assets.settings import Settings
from klio_assets_tests.orchestration.test_staleness import CHAIN, TRACKS, _run, env

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.e2e


def _both(settings, instance, monkeypatch):
    """(pre-filtered statuses, the resolver's for every partition, partitions the pre-filtered
    path asked the resolver about)."""
    analyses = load_analyses(settings.analysis_modules)
    graph = [
        source_files_spec(GROUP_NAME),
        build_analysis_assets(analyses, batch_size=settings.batch_size, params=settings.params),
    ]
    asked = []
    real = stale_status.stale_statuses

    def counting(instance, asset_graph, assets, partitions=()):
        asked.extend((n, p) for n, keys in assets.items() for p in keys)
        return real(instance, asset_graph, assets, partitions)

    monkeypatch.setattr(staleness, "stale_statuses", counting)
    catalog = get_catalog(settings.catalog_url)
    fast = staleness.candidate_statuses(instance, catalog, graph, parents(analyses), CHAIN, TRACKS)
    full = real(instance, build_definitions(settings).resolve_asset_graph(), CHAIN, TRACKS)
    return fast, full, asked


def test_prefilter_agrees_with_dagsters_resolver_and_asks_it_only_about_candidates(
    env, monkeypatch
):
    settings, instance, storage, copies = env
    _run(instance, storage)
    fast, full, asked = _both(settings, instance, monkeypatch)
    assert fast == full
    assert {s for per in full.values() for s in per.values()} == {"FRESH", "MISSING"}
    assert asked == []  # a clean catalog: the resolver is not asked at all

    # one track's source changes and source_audio is computed again: its children are stale
    shutil.copyfile(copies["flac48"], copies["wav44"])
    launch.execute_range(instance, selected=["source_audio"], track_ids=["wav44"], storage=storage)
    fast, full, asked = _both(settings, instance, monkeypatch)
    assert fast == full
    assert full["loudness"]["wav44"] == "STALE"
    assert sorted(asked) == [("downsampled_audio", "wav44"), ("loudness", "wav44")]

    # a parameter changes: that analysis is stale by code version, everywhere
    monkeypatch.setenv("KLIO_ASSETS_PARAMS", '{"downsampled_audio": {"sample_rate": 16000}}')
    changed = Settings.from_env()
    fast, full, asked = _both(changed, instance, monkeypatch)
    assert fast == full
    assert [t for t, s in full["waveform_plot"].items() if s == "STALE"] == [
        "wav44",
        "flac48",
        "ogg32",
    ]
    assert ("source_audio", "flac48") not in asked and ("loudness", "flac48") not in asked
