"""``status`` and ``show`` answer from the catalog for tracks that Dagster no longer has: their
``tracks`` partition deleted and the runs that materialized them gone (Dagster as a window on
the catalog)."""

from __future__ import annotations

import dagster as dg
import pytest

from klio_assets.catalog.database import get_catalog
from klio_assets.orchestration import launch
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.orchestration.selection import planned_analyses
from klio_assets.orchestration.status import OUTSIDE_WINDOW_NOTE, collect_show, collect_status
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.conftest import cli_json

ORDER = ["wav44", "flac48", "broken", "ogg32"]
SELECTED = ["source_audio", "downsampled_audio"]


@pytest.fixture
def forgotten(home, catalog_tracks):
    """A home where ``ORDER`` was run for ``SELECTED`` ('broken' fails; 'ogg32' is left
    out), then Dagster forgot 'wav44' and 'broken': their partitions and every run are gone.

    Yields the settings and Dagster's ``show`` answers from before it forgot.
    """
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    register_tracks(instance, catalog, [(t, catalog_tracks[t].path) for t in ORDER])
    outcome = launch.execute_range(
        instance, selected=SELECTED, track_ids=ORDER[:3], storage=Storage(settings.storage)
    )
    assert not outcome.success  # 'broken' is not audio
    before = {name: collect_show(settings, name, "wav44") for name in SELECTED}
    assert all(shown["source"] == "dagster" for shown in before.values())
    for track_id in ("wav44", "broken"):
        instance.delete_dynamic_partition(TRACKS, track_id)
    for record in instance.get_run_records():
        instance.delete_run(record.dagster_run.run_id)
    for name in SELECTED:
        assert not instance.fetch_materializations(dg.AssetKey(name), limit=10).records
    assert instance.get_dynamic_partitions(TRACKS) == ["flac48", "ogg32"]
    yield settings, before
    instance.dispose()


def test_status_counts_tracks_that_dagster_forgot_from_the_catalog(forgotten):
    settings, _ = forgotten
    report = collect_status(settings).to_json()
    assert report["tracks"] == 4
    for name in SELECTED:
        state = report["assets"][name]
        assert (state["materialized"], state["missing"]) == (2, 1)  # wav44, flac48; ogg32
        assert list(state["failed"]) == ["broken"]
        assert "cannot decode" in state["failed"]["broken"]


def test_status_counts_a_failure_over_an_earlier_output_once(forgotten):
    """A track with a ledger row and a later failure is failed, not materialized."""
    settings, _ = forgotten
    catalog = get_catalog(settings.catalog_url)
    catalog.record_outcomes(
        "downsampled_audio", version="0", run_id="r", failed={"flac48": "boom"}, succeeded=[]
    )
    state = collect_status(settings).assets["downsampled_audio"]
    assert (state.materialized, state.missing, sorted(state.failed)) == (1, 1, ["broken", "flac48"])


def test_show_answers_from_the_catalog_for_a_track_outside_dagsters_window(forgotten):
    settings, before = forgotten
    planned = planned_analyses(settings)
    for name in SELECTED:
        shown = collect_show(settings, name, "wav44")
        assert shown["source"] == "catalog" and shown["note"] == OUTSIDE_WINDOW_NOTE
        assert shown["status"] == "materialized"
        assert shown["code_version"] == planned[name].version == before[name]["code_version"]
        assert shown["uri"] == before[name]["uri"]
        assert shown["run_id"] == before[name]["run_id"]
        assert shown["materialized_at"] == pytest.approx(before[name]["materialized_at"], abs=60)
    # source_audio keeps its scalar results in the catalog's features: they are shown too
    features = collect_show(settings, "source_audio", "wav44")
    for key in ("duration_s", "sample_rate", "channels"):
        assert features[key] == before["source_audio"][key]
    # a failure is still a failure; a track without a ledger row still missing
    failed = collect_show(settings, "downsampled_audio", "broken")
    assert failed["status"] == "failed" and "cannot decode" in failed["reason"]
    assert collect_show(settings, "downsampled_audio", "ogg32")["status"] == "missing"


def test_status_cli_answers_without_importing_dagster(forgotten, home):
    status, done = cli_json("status", home=home, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert status["assets"]["source_audio"]["materialized"] == 2
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "klio_assets.orchestration.status" in imported  # the trace works
    assert "dagster" not in imported
