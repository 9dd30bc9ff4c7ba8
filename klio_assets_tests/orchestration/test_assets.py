"""Dagster side: a real instance (SQLite, temporary home), the real Beam local runner."""

import os

import dagster as dg
import pytest
import soundfile as sf
from klio_assets.resources.beam import BeamRunnerResource

from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import JOB_NAME, build_definitions
from klio_assets.orchestration import launch
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

STANDARD = ("status", "uri", "code_version", "duration_s", "sample_rate", "channels", "seconds")


@pytest.fixture
def env(home, catalog_tracks):
    """Settings, instance, storage and catalog of a home with the standard tracks registered."""
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    order = ["wav44", "dup", "flac48", "broken", "ogg32", "mp3", "m4a", "wav8k"]
    register_tracks(instance, catalog, [(t, catalog_tracks[t].path) for t in order])
    yield settings, instance, Storage(settings.storage), catalog
    instance.dispose()


@pytest.fixture
def launches(monkeypatch):
    """Counts Beam pipelines launched (the real launch still runs)."""
    calls = []
    real = BeamRunnerResource.launch

    def counting(self, build, *, job_name, **kw):
        calls.append(job_name)
        return real(self, build, job_name=job_name, **kw)

    monkeypatch.setattr(BeamRunnerResource, "launch", counting)
    return calls


def run(instance, storage, selected, tracks, **kw):
    return launch.execute_range(
        instance, selected=selected, track_ids=tracks, storage=storage, **kw
    )


def latest(instance, asset, track):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[track]), limit=1
    ).records
    return (
        {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
        if records
        else None
    )


def test_definitions_expose_each_analysis_as_a_partitioned_asset(home):
    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    per_track = {
        "source_audio",
        "downsampled_audio",
        "loudness",
        "beats",
        "spectrogram",
        "mel_spectrogram",
        "mfcc",
        "mel_spectrogram_plot",
        "waveform_plot",
    }
    assert per_track <= {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "track_features" in {k.to_user_string() for k in graph.get_all_asset_keys()}
    parents = {
        name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}
        for name in per_track
    }
    assert parents["loudness"] == {"source_audio"}  # native rate: reads the source itself
    assert parents["beats"] == {"downsampled_audio"}
    assert parents["mfcc"] == {"mel_spectrogram"}
    assert parents["mel_spectrogram_plot"] == {"mel_spectrogram"}
    assert parents["waveform_plot"] == {"downsampled_audio"}
    features = graph.get(dg.AssetKey("track_features"))
    assert features.partitions_def is None
    assert {"source_audio", "loudness", "beats"} <= {
        k.to_user_string() for k in features.parent_keys
    }
    node = graph.get(dg.AssetKey("downsampled_audio"))
    assert node.partitions_def.name == TRACKS
    assert node.parent_keys == {dg.AssetKey("source_audio")}
    assert node.code_version.startswith("1-")
    assert defs.resolve_job_def(JOB_NAME) is not None
    assets_def = defs.resolve_assets_def("downsampled_audio")
    assert assets_def.can_subset
    assert assets_def.backfill_policy.max_partitions_per_run == 1000


def test_batch_size_setting_sets_the_backfill_policy(home, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_BATCH_SIZE", "37")
    defs = build_definitions(Settings.from_env())
    assert defs.resolve_assets_def("source_audio").backfill_policy.max_partitions_per_run == 37


def test_ranged_run_launches_one_beam_pipeline_for_all_tracks_and_analyses(
    env, launches, catalog_tracks
):
    settings, instance, storage, _ = env
    tracks = ["wav44", "dup", "flac48"]
    outcome = run(instance, storage, ["source_audio", "downsampled_audio"], tracks)
    assert outcome.success, outcome.error
    assert len(launches) == 1
    for asset in ("source_audio", "downsampled_audio"):
        assert set(instance.get_materialized_partitions(dg.AssetKey(asset))) == set(tracks)
    meta = latest(instance, "downsampled_audio", "flac48")
    assert set(STANDARD) <= set(meta)
    assert meta["status"] == "computed"
    assert meta["sample_rate"] == 22050 and meta["channels"] == 1
    assert meta["duration_s"] == pytest.approx(1.5)
    assert os.path.isfile(meta["uri"]) and sf.info(meta["uri"]).samplerate == 22050
    probe = latest(instance, "source_audio", "flac48")
    assert probe["sample_rate"] == 48000 and probe["channels"] == 2 and probe["frames"] == 72000
    assert probe["code_version"] == "1"
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("downsampled_audio"), asset_partitions=["flac48"]
        ),
        limit=1,
    ).records[0]
    assert record.asset_materialization.tags["dagster/code_version"] == meta["code_version"]
    shared = latest(instance, "downsampled_audio", "dup")
    assert shared["status"] == "skipped" and shared["shared_from"] == "wav44"
    tags = instance.get_run_by_id(outcome.run_id).tags
    assert (
        tags["klio/computed"] == "4" and tags["klio/skipped"] == "2" and tags["klio/tracks"] == "3"
    )
    assert outcome.summary["assets"]["downsampled_audio"] == {"computed": 2, "skipped": 1}


def test_broken_track_fails_alone_and_stays_missing(env, launches):
    settings, instance, storage, catalog = env
    tracks = ["flac48", "broken", "ogg32"]
    outcome = run(instance, storage, ["downsampled_audio"], tracks)
    assert not outcome.success
    assert set(instance.get_materialized_partitions(dg.AssetKey("downsampled_audio"))) == {
        "flac48",
        "ogg32",
    }
    reason = catalog.failures("downsampled_audio")["broken"]
    assert reason.startswith("track 'broken': cannot decode ") and "broken.mp3" in reason
    run_record = instance.get_run_by_id(outcome.run_id)
    assert run_record.status == dg.DagsterRunStatus.FAILURE
    assert run_record.tags["klio/failed"] == "1"
    failure = next(
        e
        for e in instance.all_logs(outcome.run_id)
        if e.dagster_event and e.dagster_event.is_step_failure
    )
    assert "1 of 3 tracks failed" in failure.dagster_event.step_failure_data.error.message
    todo, done = launch.tracks_to_run(
        instance, storage, _planned(settings), ["downsampled_audio"], tracks
    )
    assert todo == ["broken"] and done["downsampled_audio"] == ["flac48", "ogg32"]


def test_failure_reason_is_cleared_when_the_track_later_succeeds(env, catalog_tracks):
    settings, instance, storage, catalog = env
    catalog.record_outcomes(
        "downsampled_audio", version="x", run_id="r", failed={"ogg32": "old"}, succeeded=[]
    )
    assert run(instance, storage, ["downsampled_audio"], ["ogg32"]).success
    assert "ogg32" not in catalog.failures("downsampled_audio")


def test_rerun_needs_no_run_and_force_recomputes(env, launches):
    settings, instance, storage, _ = env
    tracks = ["wav44", "dup", "flac48"]
    assert run(instance, storage, ["downsampled_audio"], tracks).success
    todo, done = launch.tracks_to_run(
        instance, storage, _planned(settings), ["downsampled_audio"], tracks
    )
    assert todo == [] and sorted(done["downsampled_audio"]) == sorted(tracks)
    uri = latest(instance, "downsampled_audio", "wav44")["uri"]
    before = os.stat(uri).st_mtime_ns
    again = run(instance, storage, ["downsampled_audio"], tracks)  # a run anyway: Beam skips
    assert again.summary["assets"]["downsampled_audio"] == {"skipped": 3}
    assert latest(instance, "downsampled_audio", "wav44")["status"] == "skipped"
    assert os.stat(uri).st_mtime_ns == before
    forced = run(instance, storage, ["downsampled_audio"], tracks, force=True)
    assert forced.summary["assets"]["downsampled_audio"] == {"computed": 2, "skipped": 1}
    assert os.stat(uri).st_mtime_ns != before


def test_dry_run_materializes_and_writes_nothing(env):
    settings, instance, storage, _ = env
    outcome = run(
        instance,
        storage,
        ["source_audio", "downsampled_audio"],
        ["wav44", "dup", "flac48"],
        dry_run=True,
    )
    assert outcome.success
    assert instance.get_materialized_partitions(dg.AssetKey("downsampled_audio")) == set()
    detail = outcome.summary["tracks_detail"]
    assert detail["wav44"]["downsampled_audio"]["status"] == "would_compute"
    assert detail["dup"]["downsampled_audio"] == {
        "status": "would_skip",
        "shared_from": "wav44",
        "uri": detail["dup"]["downsampled_audio"]["uri"],
    }
    assert not os.path.exists(os.path.join(settings.storage, "downsampled_audio"))


def test_code_version_change_brings_tracks_back(env, monkeypatch):
    settings, instance, storage, _ = env
    assert run(instance, storage, ["downsampled_audio"], ["flac48"]).success
    monkeypatch.setenv("KLIO_ASSETS_PARAMS", '{"downsampled_audio": {"sample_rate": 16000}}')
    changed = Settings.from_env()
    todo, _ = launch.tracks_to_run(
        instance, storage, _planned(changed), ["downsampled_audio"], ["flac48"]
    )
    assert todo == ["flac48"]
    outcome = run(instance, storage, ["downsampled_audio"], ["flac48"])
    assert outcome.summary["assets"]["downsampled_audio"] == {"computed": 1}
    meta = latest(instance, "downsampled_audio", "flac48")
    assert (
        meta["sample_rate"] == 16000
        and meta["code_version"] != _planned(settings)["downsampled_audio"].version
    )


def test_partition_missing_from_the_catalog_fails_with_the_fix(env):
    settings, instance, storage, catalog = env
    instance.add_dynamic_partitions(TRACKS, ["ghost"])  # e.g. added by hand in the UI
    outcome = run(instance, storage, ["source_audio"], ["ghost"])
    assert not outcome.success
    assert (
        "not registered in the catalog (klio-assets add)"
        in catalog.failures("source_audio")["ghost"]
    )


def test_ui_materialization_path_runs_the_same_op(env, launches):
    """What the UI launches: the implicit asset job over a partition range, or one partition."""
    settings, instance, storage, _ = env
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    ranged = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("downsampled_audio")],
        tags={
            "dagster/asset_partition_range_start": "ogg32",
            "dagster/asset_partition_range_end": "mp3",
        },
    )
    assert ranged.success
    single = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("source_audio")], partition_key="wav8k"
    )
    assert single.success
    assert len(launches) == 2
    assert set(instance.get_materialized_partitions(dg.AssetKey("downsampled_audio"))) == {
        "ogg32",
        "mp3",
    }
    assert set(instance.get_materialized_partitions(dg.AssetKey("source_audio"))) == {"wav8k"}


def test_contiguous_ranges_follow_partition_order():
    order = ["a", "b", "c", "d", "e", "f"]
    assert launch.contiguous_ranges(order, {"a", "b", "d", "e", "f"}, 2) == [
        ["a", "b"],
        ["d", "e"],
        ["f"],
    ]
    assert launch.contiguous_ranges(order, set(), 5) == []


def _planned(settings):
    from klio_assets.analyses import load_analyses
    from klio_assets.worker.plan import plan_analyses

    return plan_analyses(load_analyses(settings.analysis_modules), settings.params)


def test_run_keys_come_from_one_range_query_including_keys_added_elsewhere(env):
    settings, instance, storage, catalog = env
    from klio_assets.orchestration.partitions import keys_in_range

    instance.add_dynamic_partitions(TRACKS, ["ghost"])  # registered in Dagster only
    assert keys_in_range(instance, "flac48", "ogg32") == ["flac48", "broken", "ogg32"]
    assert keys_in_range(instance, "wav8k", "ghost") == ["wav8k", "ghost"]
    assert keys_in_range(instance, "ogg32", "flac48") is None  # not a range: caller falls back
    outcome = run(instance, storage, ["source_audio"], ["wav8k", "ghost"])
    assert not outcome.success
    detail = outcome.summary["tracks_detail"]
    assert detail["wav8k"]["source_audio"]["status"] == "computed"
    assert detail["ghost"]["source_audio"]["status"] == "failed"


def test_batched_sqlite_event_log_reads_back_like_dagsters_own(env):
    settings, instance, storage, _ = env
    from klio_assets.orchestration.dagster_internals.sqlite_events import (
        BatchedSqliteEventLogStorage,
    )

    assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
    tracks = ["flac48", "broken", "ogg32", "mp3"]
    run(instance, storage, ["source_audio", "downsampled_audio"], tracks)
    for asset in ("source_audio", "downsampled_audio"):
        key = dg.AssetKey(asset)
        assert set(instance.get_materialized_partitions(key)) == {"flac48", "ogg32", "mp3"}
        assert (
            instance.get_latest_materialization_event(key).asset_materialization.partition == "mp3"
        )
        for track in ("flac48", "ogg32", "mp3"):
            assert latest(instance, asset, track)["uri"].endswith(
                f"/{track}." + ("json" if asset == "source_audio" else "flac")
            )
        records = instance.fetch_materializations(key, limit=10).records
        assert len(records) == 3
    run_id = records[0].run_id
    run_events = [
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    ]
    assert len(run_events) == 6
