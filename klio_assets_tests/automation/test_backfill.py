"""The catalog backfill schedule, evaluated on a real instance with real runs (Beam local
runner): missing, failed and stale tracks are requested, done ones are not, a code-version
bump re-requests exactly the affected tracks once."""

import datetime

import dagster as dg
import pytest

from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage


@pytest.fixture
def backfill_home(home, catalog_tracks, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_ANALYSES", "klio_assets_tests.support.sample_analyses")
    monkeypatch.setenv("KLIO_ASSETS_AUTO_ANALYSES", "frame_energy")  # brings source_audio (lineage)
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    order = ["wav44", "flac48", "broken", "wav8k"]
    register_tracks(
        instance, get_catalog(settings.catalog_url), [(t, catalog_tracks[t].path) for t in order]
    )
    storage = Storage(settings.storage)
    outcome = launch.execute_range(
        instance,
        selected=["source_audio", "frame_energy"],
        track_ids=["wav44", "flac48", "broken"],
        storage=storage,
    )
    assert not outcome.success  # broken fails; the other two are materialized
    yield instance, storage
    instance.dispose()


def tick(instance, day):
    schedule = build_definitions(Settings.from_env()).resolve_schedule_def(
        "catalog_backfill_schedule"
    )
    when = datetime.datetime(2026, 1, day, 3, 0, tzinfo=datetime.UTC)
    data = schedule.evaluate_tick(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    )
    return [
        (
            sorted(k.to_user_string() for k in r.asset_selection),
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in data.run_requests or []
    ], data


def test_backfill_schedule_selects_missing_failed_and_stale_and_skips_done(
    backfill_home, monkeypatch
):
    instance, storage = backfill_home
    both = ["frame_energy", "source_audio"]
    # broken failed on a file that is not audio: remembered, not requested again (failed
    # earlier); wav8k was never run; done tracks absent.
    runs, data = tick(instance, 1)
    assert runs == [(both, "wav8k", "wav8k")]
    runs, _ = tick(instance, 2)
    assert runs == [(both, "wav8k", "wav8k")]  # still missing; no output listing needed to say so

    # A parameter change gives frame_energy a new output version: its two done tracks are stale.
    monkeypatch.setenv("KLIO_ASSETS_PARAMS", '{"frame_energy": {"frame": 1024}}')
    # broken's frame_energy failure was for the old version: requested once more.
    runs, _ = tick(instance, 3)
    assert sorted(runs) == sorted([(both, "wav8k", "wav8k"), (["frame_energy"], "wav44", "broken")])
    new_state = get_catalog(Settings.from_env().catalog_url).get_state("backfill_versions")
    assert new_state["frame_energy"]["tick"].startswith("2026-01-03")

    # The stale run happens (broken fails again, on the new version); the next tick asks for
    # the stale tracks no more (scanned once), nor for broken.
    assert not launch.execute_range(
        instance,
        selected=["frame_energy"],
        track_ids=["wav44", "flac48", "broken"],
        storage=Storage(Settings.from_env().storage),
    ).success
    runs, _ = tick(instance, 4)
    assert runs == [(both, "wav8k", "wav8k")]


def test_backfill_schedule_rescans_when_its_own_tick_is_evaluated_again(backfill_home, monkeypatch):
    instance, _ = backfill_home
    monkeypatch.setenv("KLIO_ASSETS_PARAMS", '{"frame_energy": {"frame": 512}}')
    first, _ = tick(instance, 5)
    # The daemon died before submitting: the same tick evaluated again must not trust the
    # versions it stored the first time.
    again, _ = tick(instance, 5)
    assert sorted(first) == sorted(again)
    assert (["frame_energy"], "wav44", "broken") in again  # broken: failed on the old version
    later, _ = tick(instance, 6)
    assert (["frame_energy"], "wav44", "broken") not in later


def test_backfill_schedule_caps_runs_per_tick(backfill_home, monkeypatch):
    instance, _ = backfill_home
    monkeypatch.setenv("KLIO_ASSETS_BATCH_SIZE", "1")
    monkeypatch.setenv("KLIO_ASSETS_BACKFILL_MAX_RUNS", "1")
    runs, _ = tick(instance, 7)
    assert len(runs) == 1 and runs[0][1] == runs[0][2]
