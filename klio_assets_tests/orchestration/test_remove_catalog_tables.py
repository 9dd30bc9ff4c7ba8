"""``klio-assets remove`` reaches the catalog-level tables at their next update."""

import os
import subprocess

import pandas as pd
import pytest
import sqlalchemy as sa

from klio_assets.catalog.duplicates import TRACKS as FP_TRACKS
from klio_assets.orchestration import launch
from klio_assets.orchestration.registration import register_tracks
from klio_assets_tests.conftest import cli_json
from klio_assets_tests.orchestration.test_assets import env, run  # noqa: F401 - fixtures
from klio_assets_tests.support import synth
from klio_assets_tests.support.realmusic import real_music_tracks

pytestmark = pytest.mark.e2e


def _transcode(source, path, *args):
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", "5", "-t", "25"),
            *("-i", str(source), *args, path),
        ],
        check=True,
    )
    return path


def test_removed_tracks_leave_track_features_and_the_fingerprint_index(env, tmp_path):  # noqa: F811
    _, instance, storage, catalog = env
    synth.require_ffmpeg()
    song_a, song_b = real_music_tracks(2, min_duration_s=40)
    files = {
        "a-flac": _transcode(song_a, str(tmp_path / "a.flac"), "-c:a", "flac"),
        "a-mp3": _transcode(song_a, str(tmp_path / "a.mp3"), "-b:a", "128k"),
        "a-wav": _transcode(song_a, str(tmp_path / "a.wav"), "-ar", "48000"),
        "b-flac": _transcode(song_b, str(tmp_path / "b.flac"), "-c:a", "flac"),
    }
    register_tracks(instance, catalog, list(files.items()))
    assert run(instance, storage, ["source_audio", "fingerprint"], list(files)).success
    tables = launch.execute_catalog_tables(instance, ["duplicate_groups", "track_features"])
    groups = pd.read_parquet(tables["duplicate_groups"]["uri"]).set_index("track_id")
    assert groups["duplicate_group"].to_dict() == {
        "a-flac": "a-flac",
        "a-mp3": "a-flac",
        "a-wav": "a-flac",
    }

    # the user removes the track the group is named after, and the other song
    removed, _ = cli_json("remove", "a-flac", "b-flac", home=os.environ["KLIO_ASSETS_HOME"])
    assert removed["removed"] == ["a-flac", "b-flac"]

    tables = launch.execute_catalog_tables(instance, ["duplicate_groups", "track_features"])
    assert tables["duplicate_groups"]["status"] == "materialized", tables  # not "unchanged"
    assert tables["duplicate_groups"]["removed_tracks"] == 2
    assert tables["track_features"]["status"] == "materialized", tables
    features = pd.read_parquet(tables["track_features"]["uri"]).set_index("track_id")
    assert sorted(features.index) == ["a-mp3", "a-wav"]
    # the group lives on under its oldest remaining member
    assert features["duplicate_group"].to_dict() == {"a-mp3": "a-mp3", "a-wav": "a-mp3"}
    groups = pd.read_parquet(tables["duplicate_groups"]["uri"]).set_index("track_id")
    assert groups["duplicate_group"].to_dict() == {"a-mp3": "a-mp3", "a-wav": "a-mp3"}
    with catalog.engine.connect() as conn:
        indexed = set(conn.execute(sa.select(FP_TRACKS.c.track_id)).scalars())
    assert indexed == {"a-mp3", "a-wav"}

    # registered and fingerprinted again: indexed anew, back in the group (under its new name)
    register_tracks(instance, catalog, [("a-flac", files["a-flac"])])
    assert run(instance, storage, ["source_audio", "fingerprint"], ["a-flac"], force=True).success
    tables = launch.execute_catalog_tables(instance, ["duplicate_groups", "track_features"])
    assert tables["duplicate_groups"]["new_tracks"] == 1
    features = pd.read_parquet(tables["track_features"]["uri"]).set_index("track_id")
    assert features["duplicate_group"].to_dict() == {
        "a-flac": "a-mp3",
        "a-mp3": "a-mp3",
        "a-wav": "a-mp3",
    }
