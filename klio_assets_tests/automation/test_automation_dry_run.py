"""``klio-assets automation MODE --dry-run``: what each mode would register, request and
compute, with nothing changed (no partition, no catalog row, no run, no stored state)."""

import json
import os
import time

import dagster as dg
from click.testing import CliRunner

from klio_assets.automation.landing import CLOCK_MARGIN_S
from klio_assets.catalog.database import get_catalog
from klio_assets.cli.main import main
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets_tests.automation.test_sensors import drop


def dry(mode, *extra):
    result = CliRunner().invoke(
        main, ["automation", mode, "--dry-run", "--json", *extra], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_landing_dry_run_lists_what_the_sensor_would_take_and_changes_nothing(
    home, tmp_path, monkeypatch
):
    landing = str(tmp_path / "landing")
    monkeypatch.setenv("KLIO_ASSETS_LANDING", landing)
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SETTLE_S", "0")
    monkeypatch.setenv("KLIO_ASSETS_AUTO_ANALYSES", "beats")
    drop(landing, "d1.wav")
    drop(landing, "d2.wav")
    time.sleep(2 * CLOCK_MARGIN_S)  # a file younger than the clock margin waits a tick
    plan = dry("landing")
    assert plan["registers"]["new"] == ["d1", "d2"]
    assert [(r["start"], r["end"], r["selected"]) for r in plan["requests"]] == [
        ("d1", "d2", ["source_audio", "downsampled_audio", "beats"]),
    ]
    assert plan["requests"][0]["would_compute"] == {
        "source_audio": 2,
        "downsampled_audio": 2,
        "beats": 2,
    }
    instance = dg.DagsterInstance.get()
    assert list(instance.get_dynamic_partitions(TRACKS)) == []
    assert get_catalog(Settings.from_env().catalog_url).count() == 0


def test_backfill_dry_run_lists_missing_tracks_and_launches_nothing(
    home, catalog_tracks, monkeypatch
):
    monkeypatch.setenv("KLIO_ASSETS_AUTO_ANALYSES", "downsampled_audio")
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(Settings.from_env().catalog_url)
    register_tracks(instance, catalog, [(t, catalog_tracks[t].path) for t in ("wav44", "flac48")])
    plan = dry("backfill")
    assert plan["reasons"]["downsampled_audio"]["missing"] == 2
    assert [(r["start"], r["end"]) for r in plan["requests"]] == [("wav44", "flac48")]
    assert plan["requests"][0]["would_compute"] == {"source_audio": 2, "downsampled_audio": 2}
    assert instance.get_runs() == []
    assert catalog.get_state("backfill_versions") == {}
    assert dry("propagation")["requests"] == []
    assert os.path.isdir(home)
