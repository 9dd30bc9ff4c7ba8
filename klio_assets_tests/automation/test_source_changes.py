"""``source_changes_sensor``: a sweep of the source files finds a file changed on disk, the UI
shows its track stale, and the sensor asks for exactly what ``run --stale`` recomputes."""

import json
import shutil

import dagster as dg
import pytest

from klio_assets.automation.on_demand import automation_now
from klio_assets.definitions import build_definitions
from klio_assets.orchestration import launch
from klio_assets.orchestration.source_files import SOURCE_FILES
from klio_assets.settings import Settings
from klio_assets_tests.conftest import cli_json
from klio_assets_tests.orchestration.test_staleness import CHAIN, _run, _stale, env

__all__ = ["env"]  # the fixture, used by name

pytestmark = pytest.mark.e2e


def _tick(instance, cursor=None):
    settings = Settings.from_env()
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("source_changes_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor(context)


def _sweep(instance, cursor, ticks=3):
    """``ticks`` ticks from ``cursor`` (pages of 2 over the 4 tracks, and the catalog's end):
    every request, and the last cursor."""
    requests = []
    for _ in range(ticks):
        result = _tick(instance, cursor)
        requests += result.run_requests
        cursor = result.cursor
    return requests, cursor


def _observed(instance):
    records = instance.fetch_observations(dg.AssetKey(SOURCE_FILES), limit=100).records
    return sorted(r.partition_key for r in records)


def _range(request):
    tags = request.tags
    return tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]


def test_the_sweep_observes_a_changed_file_and_requests_its_chain_once(env, home, monkeypatch):
    settings, instance, storage, copies = env
    monkeypatch.setenv("KLIO_ASSETS_SOURCE_CHECKS_PER_TICK", "2")  # pages: 2 + 2 tracks
    _run(instance, storage)  # wav44, flac48, broken, ogg32 (broken fails)
    shutil.copyfile(copies["ogg32"], copies["flac48"])  # new bytes for one track

    # the preview (`klio-assets automation source_changes --dry-run`) writes nothing
    preview = automation_now("source_changes", Settings.from_env(), dry_run=True, force=False)
    assert preview["checks"] == {"tracks": 2, "changed": ["flac48"]}
    [entry] = preview["requests"]
    assert entry["selected"] == CHAIN and (entry["start"], entry["end"]) == ("flac48", "flac48")
    assert entry["would_compute"] == {name: 1 for name in CHAIN}
    per_tick = {"KLIO_ASSETS_SOURCE_CHECKS_PER_TICK": "2"}
    cli, _ = cli_json("automation", "source_changes", "--dry-run", home=home, env=per_tick)
    assert cli == preview
    assert _observed(instance) == [] and _stale(settings, instance) == {}

    first = _tick(instance)  # wav44, flac48
    assert _observed(instance) == ["flac48"]
    # the UI shows it: exactly that track's source_audio (Dagster flags direct children)
    assert _stale(settings, instance) == {"source_audio": ["flac48"]}
    [request] = first.run_requests
    assert [k.to_user_string() for k in request.asset_selection] == CHAIN
    assert _range(request) == ("flac48", "flac48")
    assert request.tags["klio/trigger"] == "source_change"
    assert request.run_config["ops"]["audio_analyses"]["config"]["force"] is True

    # the second page, the end of the catalog, then a new sweep: the file is still changed
    # (no run yet), so the same request comes back under the same key (launched once)
    second = _tick(instance, first.cursor)
    assert second.run_requests == []
    end = _tick(instance, second.cursor)
    assert end.run_requests == [] and json.loads(end.cursor) == {"after_seq": 0, "sweeps": 1}
    again = _tick(instance, end.cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    assert _observed(instance) == ["flac48"]  # observed once

    # what the request runs clears it; the next sweep asks for nothing
    assert launch.execute_range(
        instance, selected=CHAIN, track_ids=["flac48"], storage=storage, force=True
    ).success
    assert _stale(settings, instance) == {}
    requests, cursor = _sweep(instance, again.cursor)
    assert requests == []

    # a file changed later is a new change: the second page finds it, under a new key
    shutil.copyfile(copies["wav44"], copies["ogg32"])
    requests, _ = _sweep(instance, cursor)
    assert [_range(r) for r in requests] == [("ogg32", "ogg32")]
    assert requests[0].run_key != request.run_key


def test_a_file_changed_twice_gets_two_runs_of_what_was_computed_from_it(env, monkeypatch):
    """Only ``loudness`` was computed (no ``source_audio``, so no observation to compare
    with): the change is found through the stat ``loudness`` was computed from, and a second
    change of the same file is a new run."""
    _, instance, storage, copies = env
    monkeypatch.setenv("KLIO_ASSETS_SOURCE_CHECKS_PER_TICK", "10")
    assert launch.execute_range(
        instance, selected=["loudness"], track_ids=["wav44", "flac48"], storage=storage
    ).success
    shutil.copyfile(copies["flac48"], copies["wav44"])
    [first] = _tick(instance).run_requests
    assert [k.to_user_string() for k in first.asset_selection] == ["loudness"]
    assert _range(first) == ("wav44", "wav44")
    assert launch.execute_range(
        instance, selected=["loudness"], track_ids=["wav44"], storage=storage, force=True
    ).success
    assert _tick(instance).run_requests == []
    shutil.copyfile(copies["ogg32"], copies["wav44"])
    [second] = _tick(instance).run_requests
    assert _range(second) == ("wav44", "wav44") and second.run_key != first.run_key
