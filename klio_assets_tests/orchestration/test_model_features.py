"""Model analyses as Dagster assets: their scalars in ``track_features``, the piano roll in the
track's materialization. A real instance and real runs."""

import base64

import pandas as pd
import pytest

from klio_assets.orchestration import launch
from klio_assets.orchestration.catalog_assets import BASE_COLUMNS
from klio_assets_tests.orchestration.test_assets import env, latest, run  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_track_features_gain_key_mode_speech_ratio_and_note_count(env):  # noqa: F811
    _, instance, storage, _ = env
    selected = ["source_audio", "key", "speech_segments", "note_events", "piano_roll_plot"]
    outcome = run(instance, storage, selected, ["wav44", "flac48"])
    assert outcome.success, outcome.error
    done = launch.execute_catalog_tables(instance, ["track_features"])["track_features"]
    table = pd.read_parquet(done["uri"]).set_index("track_id")
    assert list(table.reset_index().columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    for track in ("wav44", "flac48"):
        key = storage.read_json(latest(instance, "key", track)["uri"])
        notes = storage.read_json(latest(instance, "note_events", track)["uri"])
        speech = storage.read_json(latest(instance, "speech_segments", track)["uri"])
        row = table.loc[track]
        assert (row["key"], row["mode"]) == (key["key"], key["mode"])
        assert row["note_count"] == notes["note_count"] == len(notes["notes"])
        assert row["speech_ratio"] == pytest.approx(speech["speech_ratio"])
    assert str(table["note_count"].dtype) == "Int64"
    assert str(table["speech_ratio"].dtype) == "float64"
    meta = latest(instance, "piano_roll_plot", "wav44")
    png = base64.b64decode(meta["plot"].split("data:image/png;base64,", 1)[1].rstrip(")"))
    assert png == storage.read_bytes(meta["uri"])
    model_meta = latest(instance, "note_events", "wav44")
    assert model_meta["model"] == "basic-pitch-0.4.0-icassp2022"
