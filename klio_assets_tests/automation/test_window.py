"""Dagster as a window on the catalog: done tracks leave it (partition and old runs), the
catalog answers for them, and they come back when an analysis version changes; work too big
for the window runs as catalog ranges, one materialization each."""

import json
import shutil
import time

import dagster as dg
import pytest

from klio_assets.analyses import load_analyses
from klio_assets.automation.on_demand import automation_now
from klio_assets.automation.service import Automation
from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.failures import remember_failures
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch
from klio_assets.orchestration.catalog_ranges import CATALOG_RANGES, CATALOG_RANGES_JOB
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.orchestration.status import collect_show, collect_status
from klio_assets.settings import Settings
from klio_assets.worker.records import AnalysisOutcome, TrackResult
from klio_assets_tests.conftest import cli_json
from klio_assets_tests.orchestration.test_staleness import env

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.e2e

GOOD = ["wav44", "flac48", "ogg32"]
#: A new version of downsampled_audio and of everything computed from it.
BUMP = '{"downsampled_audio": {"sample_rate": 16000}}'


def _automation():
    settings = Settings.from_env()
    return settings, Automation.build(settings, load_analyses(settings.analysis_modules))


def _tick(instance, name, cursor=None):
    defs = build_definitions(Settings.from_env())
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return defs.resolve_sensor_def(name)(context)


def _window(instance):
    return sorted(instance.get_dynamic_partitions(TRACKS))


def _leave_window(instance, storage, monkeypatch):
    """Run the automation's analyses over the good tracks, then one retention tick."""
    monkeypatch.setenv("KLIO_ASSETS_AUTO_ANALYSES", "downsampled_audio,loudness")
    monkeypatch.setenv("KLIO_ASSETS_WINDOW_RETAIN_S", "0")
    _, automation = _automation()
    outcomes = [
        launch.execute_range(instance, selected=automation.selected, track_ids=ids, storage=storage)
        for ids in (["wav44", "flac48"], ["ogg32"])  # partition ranges around `broken`
    ]
    assert all(o.success for o in outcomes)
    return automation, outcomes


def test_a_done_track_leaves_the_window_show_answers_and_a_version_bump_brings_it_back(
    env, monkeypatch, home
):
    _, instance, storage, _ = env
    automation, outcomes = _leave_window(instance, storage, monkeypatch)
    assert automation.selected == ["source_audio", "downsampled_audio", "loudness"]
    before = collect_show(Settings.from_env(), "loudness", "wav44")
    assert before["status"] == "computed"

    # the preview (`klio-assets automation retention --dry-run`) changes nothing
    preview = automation_now("retention", Settings.from_env(), dry_run=True, force=False)
    assert preview["window"]["leave"] == GOOD and preview["window"]["working"] == 1
    assert len(preview["window"]["runs_deleted"]) == 2 and len(_window(instance)) == 4
    assert all(instance.get_run_by_id(o.run_id) for o in outcomes)

    result = _tick(instance, "window_retention_sensor")
    # the good tracks are done for every analysis; `broken` was never run: it stays
    assert _window(instance) == ["broken"]
    # what the tick did, as the UI shows it on the tick
    assert result.skip_reason.skip_message.startswith(
        "3 of 4 window tracks left it (0 of them failed for good); kept: 1 with work to do"
    )
    # the runs' tracks are all out: the runs and their per-track events are gone
    assert all(instance.get_run_by_id(o.run_id) is None for o in outcomes)
    assert not instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("loudness"), asset_partitions=["wav44"]),
        limit=1,
    ).records
    assert json.loads(result.cursor)["after_id"] == 0  # one page held the whole window

    # the catalog answers for them: show and status as before
    settings = Settings.from_env()
    shown = collect_show(settings, "loudness", "wav44")
    assert shown["status"] == "materialized" and shown["source"] == "catalog"
    assert shown["code_version"] == before["code_version"] == automation.versions["loudness"]
    assert shown["loudness_lufs"] == before["loudness_lufs"]
    status = collect_status(settings).to_json()
    assert status["tracks"] == 4
    assert status["assets"]["loudness"] == {"materialized": 3, "missing": 1, "failed": {}}

    # the CLI: a run asked for a track out of the window plans from the ledger (a dry run
    # changes nothing), and a forced run brings the track back into the window
    env_ = {"KLIO_ASSETS_AUTO_ANALYSES": "downsampled_audio,loudness"}
    args = ("run", "loudness", "--tracks", "flac48", "--check-dagster")
    planned, _ = cli_json(*args, "--dry-run", home=home, env=env_)
    assert planned["already_materialized"] == {"loudness": ["flac48"]}
    assert planned["assets"] == {"loudness": {"skipped": 1}} and _window(instance) == ["broken"]
    assert planned["back_in_window"] is None
    forced, _ = cli_json(*args, "--force", home=home, env=env_)
    assert forced["assets"] == {"loudness": {"computed": 1}} and len(forced["runs"]) == 1
    assert _window(instance) == ["broken", "flac48"]
    # what the catalog has done for it is recorded again in Dagster (skipped, no compute),
    # so the UI shows the track complete rather than its other analyses missing
    back = forced["back_in_window"]
    assert back["tracks"] == ["flac48"] and back["success"] is True
    assert back["analyses"] == ["source_audio", "downsampled_audio"] and len(back["runs"]) == 1
    [sync] = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("downsampled_audio"), asset_partitions=["flac48"]
        ),
        limit=1,
    ).records
    assert sync.run_id == back["runs"][0]
    assert sync.asset_materialization.metadata["status"].value == "skipped"
    _tick(instance, "window_retention_sensor")
    assert _window(instance) == ["broken"]

    # nothing to do outside the window: the catalog ranges sensor asks for nothing
    idle = _tick(instance, "catalog_ranges_sensor")
    assert idle.run_requests == [] and _window(instance) == ["broken"]
    assert idle.skip_reason.skip_message == (
        "nothing outside the window needs work (what needs it, 1 track, is in the window); "
        "at the catalog's end"
    )

    # a new version of downsampled_audio: they come back, per track
    monkeypatch.setenv("KLIO_ASSETS_PARAMS", BUMP)
    _, bumped = _automation()
    assert bumped.versions["downsampled_audio"] != automation.versions["downsampled_audio"]
    back = _tick(instance, "catalog_ranges_sensor", idle.cursor)
    assert _window(instance) == sorted(["broken", *GOOD])
    [request] = back.run_requests
    assert request.job_name == "audio_analyses_job"
    assert request.tags["klio/trigger"] == "window"
    assert [k.to_user_string() for k in request.asset_selection] == bumped.selected
    start, end = (
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    )
    assert (start, end) == ("wav44", "ogg32")
    assert launch.execute_range(
        instance, selected=bumped.selected, track_ids=[start, "flac48", end], storage=storage
    ).success
    fresh = collect_show(Settings.from_env(), "downsampled_audio", "wav44")
    assert fresh["status"] == "computed"
    assert fresh["code_version"] == bumped.versions["downsampled_audio"]
    # the next tick finds nothing more to do
    assert _tick(instance, "catalog_ranges_sensor", back.cursor).run_requests == []


def test_a_version_bump_too_big_for_the_window_runs_as_catalog_ranges(
    env, monkeypatch, catalog_tracks
):
    _, instance, storage, copies = env
    automation, _ = _leave_window(instance, storage, monkeypatch)
    _tick(instance, "window_retention_sensor")
    assert _window(instance) == ["broken"]
    # a full window (one track): a broken file registered now is in the catalog only
    monkeypatch.setenv("KLIO_ASSETS_WINDOW_MAX_TRACKS", "1")
    catalog = get_catalog(Settings.from_env().catalog_url)
    register_tracks(instance, catalog, [("junk", copies["broken"])], window=1)
    assert _window(instance) == ["broken"] and catalog.resolve(["junk"])

    monkeypatch.setenv("KLIO_ASSETS_PARAMS", BUMP)
    monkeypatch.setenv("KLIO_ASSETS_RANGE_SIZE", "2")
    _, bumped = _automation()
    preview = automation_now("catalog_ranges", Settings.from_env(), dry_run=True, force=False)
    tick = _tick(instance, "catalog_ranges_sensor")
    # wav44, flac48, ogg32 and junk need work; none fits the window: two ranges of 2
    assert _window(instance) == ["broken"]
    seq = {t: catalog.seq_of(t) for t in [*GOOD, "junk"]}
    keys = [f"{seq['wav44']:010d}-{seq['flac48']:010d}", f"{seq['ogg32']:010d}-{seq['junk']:010d}"]
    assert [r.partition_key for r in tick.run_requests] == keys
    assert [(r["partition"], r["tracks"]) for r in preview["ranges"]] == [(k, 2) for k in keys]
    assert {r.job_name for r in tick.run_requests} == {CATALOG_RANGES_JOB}
    [added] = tick.dynamic_partitions_requests
    assert list(added.partition_keys) == keys
    instance.add_dynamic_partitions(CATALOG_RANGES, keys)
    # the next tick goes on from where this one stopped: nothing more
    assert _tick(instance, "catalog_ranges_sensor", tick.cursor).run_requests == []

    job = build_definitions(Settings.from_env()).resolve_job_def(CATALOG_RANGES_JOB)
    for key in keys:
        assert job.execute_in_process(instance=instance, partition_key=key).success
    records = instance.fetch_materializations(dg.AssetKey(CATALOG_RANGES), limit=10).records
    assert sorted(r.partition_key for r in records) == keys
    meta = {
        r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in records
    }
    first, second = meta[keys[0]], meta[keys[1]]
    assert first["versions"] == bumped.versions
    assert (first["first_track"], first["last_track"], first["tracks"]) == ("wav44", "flac48", 2)
    # only what the bump changed runs: loudness does not read downsampled_audio
    assert first["counts"] == {"downsampled_audio": {"computed": 2}} and first["failed"] == 0
    # the broken file fails alone, recorded in the catalog: its range still materializes
    assert second["tracks"] == 2 and second["failed"] == 1
    assert second["counts"]["downsampled_audio"] == {"computed": 1, "failed": 1}
    assert second["counts"]["loudness"] == {"skipped": 1, "failed": 1}
    assert "junk" in second["failures"]
    # per track: the catalog knows, Dagster has no per-track event of these runs
    new = bumped.versions["downsampled_audio"]
    assert catalog.not_materialized("downsampled_audio", new, GOOD) == []
    assert "junk" in catalog.failures("downsampled_audio")
    assert not instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("loudness"), asset_partitions=["wav44"]),
        limit=1,
    ).records
    shown = collect_show(Settings.from_env(), "downsampled_audio", "flac48")
    assert shown["code_version"] == new
    assert collect_show(Settings.from_env(), "downsampled_audio", "junk")["status"] == "failed"
    # a failure that holds (a broken file) is not tried again: nothing enters, nothing runs
    again = _tick(instance, "catalog_ranges_sensor")
    assert again.run_requests == [] and _window(instance) == ["broken"]

    # a transient failure outside the window (a storage error in some range), once its retry
    # is due, brings its track back into the window with a per-track run
    reason = "track 'ogg32': storage timed out"
    failed = TrackResult(
        track_id="ogg32",
        uri=copies["ogg32"],
        analyses={"downsampled_audio": AnalysisOutcome.failed(reason, permanent=False)},
    )
    catalog.record_outcomes(
        "downsampled_audio", version=new, run_id="r", failed={"ogg32": reason}, succeeded=[]
    )
    remember_failures(catalog, "downsampled_audio", version=new, run_id="r", results=[failed])
    monkeypatch.setenv("KLIO_ASSETS_WINDOW_MAX_TRACKS", "10")
    monkeypatch.setenv("KLIO_ASSETS_TRANSIENT_RETRY_BACKOFF_S", "3600")
    assert _tick(instance, "catalog_ranges_sensor", again.cursor).run_requests == []  # not yet
    monkeypatch.setenv("KLIO_ASSETS_TRANSIENT_RETRY_BACKOFF_S", "0")
    [retry] = _tick(instance, "catalog_ranges_sensor", again.cursor).run_requests
    assert _window(instance) == ["broken", "ogg32"]
    assert retry.tags["dagster/asset_partition_range_start"] == "ogg32"
    assert retry.tags["klio/trigger"] == "window"


def test_a_source_changed_outside_the_window_brings_its_track_back(env, monkeypatch):
    _, instance, storage, copies = env
    _leave_window(instance, storage, monkeypatch)
    _tick(instance, "window_retention_sensor")
    assert _window(instance) == ["broken"]
    shutil.copyfile(copies["flac48"], copies["ogg32"])  # new bytes for a track out of it
    monkeypatch.setenv("KLIO_ASSETS_SOURCE_CHECKS_PER_TICK", "10")
    [request] = _tick(instance, "source_changes_sensor").run_requests
    assert _window(instance) == ["broken", "ogg32"]
    tags = request.tags
    assert (tags["dagster/asset_partition_range_start"], tags["klio/trigger"]) == (
        "ogg32",
        "source_change",
    )
    assert launch.execute_range(
        instance,
        selected=[k.to_user_string() for k in request.asset_selection],
        track_ids=["ogg32"],
        storage=storage,
        force=True,
    ).success
    assert _tick(instance, "source_changes_sensor").run_requests == []


def test_landing_past_the_windows_cap_registers_in_the_catalog_only(env, monkeypatch, tmp_path):
    _, instance, _, copies = env
    landing = tmp_path / "landing"
    landing.mkdir()
    for name in ("new1", "new2"):
        shutil.copyfile(copies["wav44"], landing / f"{name}.wav")
    monkeypatch.setenv("KLIO_ASSETS_LANDING", str(landing))
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SETTLE_S", "0")
    monkeypatch.setenv("KLIO_ASSETS_WINDOW_MAX_TRACKS", "5")  # 4 in it: room for one
    time.sleep(0.3)  # older than the listing's clock margin
    preview = automation_now("landing", Settings.from_env(), dry_run=True, force=False)
    assert preview["registers"]["outside_window"] == 1
    assert [r["tracks"] for r in preview["requests"]] == [1]
    result = _tick(instance, "landing_sensor")
    catalog = get_catalog(Settings.from_env().catalog_url)
    assert catalog.resolve(["new1", "new2"]).keys() == {"new1", "new2"}
    assert "new1" in _window(instance) and "new2" not in _window(instance)
    [request] = result.run_requests  # the one in the window runs per track
    assert request.tags["dagster/asset_partition_range_start"] == "new1"
    # the other is the catalog ranges sensor's: it needs work and the window is full
    tick = _tick(instance, "catalog_ranges_sensor")
    assert [r.job_name for r in tick.run_requests] == [CATALOG_RANGES_JOB]
