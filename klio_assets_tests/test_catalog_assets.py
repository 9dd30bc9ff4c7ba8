"""Catalog-level assets and what the Dagster UI shows: a real instance, real runs."""

import base64
import io

import dagster as dg
import pandas as pd
import pytest

from klio_assets import launch
from klio_assets.catalog_assets import BASE_COLUMNS
from klio_assets_tests.test_assets import env, latest, run  # noqa: F401 - fixtures

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
    assert row["sample_rate"] == 44100 and row["channels"] == 2 and row["duration_s"] == pytest.approx(2.0)
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
