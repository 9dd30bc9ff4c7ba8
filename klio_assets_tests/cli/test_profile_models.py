"""``klio-assets profile`` profiles the model analyses like any other analysis."""

import json

import pytest

from klio_assets_tests.conftest import run_cli
from klio_assets_tests.support.realmusic import real_speech_clips

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("asset", ["speech_segments", "note_events", "key"])
def test_profile_runs_a_model_analysis_on_a_file(tmp_path, asset):
    (clip,) = real_speech_clips(1, min_duration_s=5)
    done = run_cli("profile", asset, "--file", str(clip), "--json", home=str(tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    (track,) = data["tracks"].values()
    assert track["status"] == "computed", track
    assert track["function_cpu_s"] > 0 and track["audio_s"] > 5
    assert data["profile"]["function"] == f"klio_assets.analyses.{asset}.{asset}"
    assert any(f["function"] == asset for f in data["profile"]["functions"])
