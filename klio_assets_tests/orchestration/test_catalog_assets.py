"""Catalog-level assets and what the Dagster UI shows: a real instance, real runs."""

import base64
import io

import dagster as dg
import pandas as pd
import pytest

from klio_assets.orchestration import launch
from klio_assets.orchestration.catalog_assets import BASE_COLUMNS
from klio_assets_tests.orchestration.test_assets import env, latest, run  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_plots_are_embedded_in_the_track_materialization(env):  # noqa: F811
    _, instance, storage, _ = env
    selected = ["downsampled_audio", "mel_spectrogram", "mel_spectrogram_plot", "waveform_plot"]
    outcome = run(instance, storage, selected, ["flac48"])
    assert outcome.success, outcome.error
    from PIL import Image

    for name in ("mel_spectrogram_plot", "waveform_plot"):
        meta = latest(instance, name, "flac48")
        match = meta["plot"].split("data:image/png;base64,", 1)
        assert len(match) == 2, meta["plot"][:80]
        png = base64.b64decode(match[1].rstrip(")"))
        assert png == storage.read_bytes(meta["uri"])  # the file in storage, inline
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"


def test_track_features_table_is_updated_from_changed_rows_only(env):  # noqa: F811
    _, instance, storage, catalog = env
    selected = ["source_audio", "loudness", "downsampled_audio", "beats"]
    assert run(instance, storage, selected, ["wav44"]).success
    first = launch.execute_catalog_tables(instance, ["track_features"])["track_features"]
    assert first["status"] == "materialized", first
    assert first["rows"] == 1 and first["rows_changed"] == 1
    table = pd.read_parquet(first["uri"])
    assert list(table.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    row = table.set_index("track_id").loc["wav44"]
    loudness = storage.read_json(latest(instance, "loudness", "wav44")["uri"])
    assert row["loudness_lufs"] == pytest.approx(loudness["loudness_lufs"])
    assert row["true_peak_dbtp"] == pytest.approx(loudness["true_peak_dbtp"])
    assert (
        row["sample_rate"] == 44100
        and row["channels"] == 2
        and row["duration_s"] == pytest.approx(2.0)
    )
    assert row["duplicate_group"] == "wav44"
    assert row["loudness_version"] == latest(instance, "loudness", "wav44")["code_version"]

    assert run(instance, storage, selected, ["flac48"]).success
    second = launch.execute_catalog_tables(instance, ["track_features"])["track_features"]
    assert second["rows"] == 2 and second["rows_changed"] == 1  # only flac48's rows were read
    assert second["features_seq"] > first["features_seq"]
    table = pd.read_parquet(second["uri"]).set_index("track_id")
    assert table.loc["wav44", "loudness_lufs"] == pytest.approx(loudness["loudness_lufs"])
    assert table.loc["flac48", "sample_rate"] == 48000

    idle = launch.execute_catalog_tables(instance, ["track_features"])["track_features"]
    assert idle["rows_changed"] == 0 and idle["rows"] == 2
    events = instance.fetch_materializations(dg.AssetKey("track_features"), limit=10).records
    assert len(events) == 3


def test_duplicate_groups_join_transcodes_of_real_music_incrementally(env, tmp_path):  # noqa: F811
    """Real music through the whole path: fingerprint runs, then the catalog tables."""
    import subprocess

    from klio_assets.orchestration.registration import register_tracks
    from klio_assets_tests.support import synth
    from klio_assets_tests.support.realmusic import real_music_tracks

    _, instance, storage, catalog = env
    synth.require_ffmpeg()
    files = {}
    for name, source in zip(
        ("song-a", "song-b"), real_music_tracks(2, min_duration_s=40), strict=True
    ):
        for suffix, args in (
            ("flac", ["-c:a", "flac"]),
            ("mp3", ["-b:a", "128k"]),
            ("wav", ["-ar", "48000"]),
        ):
            path = str(tmp_path / f"{name}.{suffix}")
            subprocess.run(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-ss",
                    "5",
                    "-t",
                    "25",
                    "-i",
                    str(source),
                    *args,
                    path,
                ],
                check=True,
            )
            files[f"{name}-{suffix}"] = path
    first_batch = ["song-a-flac", "song-b-flac", "song-a-mp3"]
    register_tracks(instance, catalog, [(t, files[t]) for t in first_batch])
    assert run(instance, storage, ["source_audio", "fingerprint"], first_batch).success
    tables = launch.execute_catalog_tables(instance, ["duplicate_groups", "track_features"])
    assert tables["duplicate_groups"]["status"] == "materialized", tables
    assert tables["duplicate_groups"]["new_tracks"] == 3
    groups = pd.read_parquet(tables["duplicate_groups"]["uri"]).set_index("track_id")[
        "duplicate_group"
    ]
    assert groups.to_dict() == {"song-a-flac": "song-a-flac", "song-a-mp3": "song-a-flac"}

    later = ["song-b-mp3", "song-a-wav", "song-b-wav"]
    register_tracks(instance, catalog, [(t, files[t]) for t in later])
    assert run(instance, storage, ["source_audio", "fingerprint"], later).success
    tables = launch.execute_catalog_tables(instance, ["duplicate_groups", "track_features"])
    assert tables["duplicate_groups"]["new_tracks"] == 3  # only the new fingerprints were read
    features = pd.read_parquet(tables["track_features"]["uri"]).set_index("track_id")
    assert features["duplicate_group"].to_dict() == {
        "song-a-flac": "song-a-flac",
        "song-a-mp3": "song-a-flac",
        "song-a-wav": "song-a-flac",
        "song-b-flac": "song-b-flac",
        "song-b-mp3": "song-b-flac",
        "song-b-wav": "song-b-flac",
    }
    assert features.loc["song-b-wav", "sample_rate"] == 48000
    assert features["fingerprint_version"].notna().all()


def test_catalog_tables_schedule_requests_the_catalog_job(home, monkeypatch):
    from klio_assets.definitions import CATALOG_JOB_NAME, build_definitions
    from klio_assets.settings import Settings

    monkeypatch.setenv("KLIO_ASSETS_CATALOG_TABLES_CRON", "5 * * * *")
    defs = build_definitions(Settings.from_env())
    schedule = defs.resolve_schedule_def("catalog_tables_schedule")
    assert schedule.job_name == CATALOG_JOB_NAME and schedule.cron_schedule == "5 * * * *"
    job = defs.resolve_job_def(CATALOG_JOB_NAME)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {"track_features"}
