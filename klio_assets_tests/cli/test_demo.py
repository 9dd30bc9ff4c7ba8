"""``klio-assets demo`` (what scripts/demo.sh runs): as many files as it says, safe to run
again, the UI hint printed whatever happened."""

import os
import shutil

import pytest

from klio_assets.cli.demo import COPY_NAME, make_demo_audio
from klio_assets_tests.conftest import run_cli

pytestmark = pytest.mark.e2e

HINT = "Open the Dagster UI on this instance with:"


@pytest.mark.parametrize("n_tracks", [1, 2, 3, 10])
def test_demo_makes_exactly_the_number_of_tracks_asked(tmp_path, n_tracks):
    folder = tmp_path / "demo-audio"
    paths = make_demo_audio(str(folder), n_tracks=n_tracks)
    assert len(paths) == n_tracks == len(os.listdir(folder))
    assert (COPY_NAME in os.listdir(folder)) == (n_tracks >= 2)
    if n_tracks >= 3 and shutil.which("ffmpeg"):
        assert "demo-aac.m4a" in os.listdir(folder)


def test_demo_again_exits_0_and_hints_even_after_a_failure(tmp_path):
    home = str(tmp_path / "home")
    first = run_cli("demo", "--tracks", "3", home=home)
    assert first.returncode == 0, first.stderr
    assert "demo audio: 3 files" in first.stdout and "registered 3 new tracks" in first.stdout
    assert f"demo-01.wav and {COPY_NAME} hold the same bytes" in first.stdout  # "skipped 1"
    assert HINT in first.stdout

    again = run_cli("demo", "--tracks", "3", home=home)
    assert again.returncode == 0, again.stderr
    assert "registered 0 new tracks (3 already registered)" in again.stdout
    assert HINT in again.stdout

    # A broken file dropped into the demo's folder: the demo still ends with the hint, and
    # says where the failure is listed.
    with open(os.path.join(home, "demo-audio", "zz-broken.mp3"), "w") as fh:
        fh.write("not audio\n" * 50)
    broken = run_cli("demo", "--tracks", "3", home=home)
    assert "registered 1 new track " in broken.stdout
    assert HINT in broken.stdout
    assert broken.returncode in (0, 1)  # 1 while a failure is new; 0 once remembered (13b)
    if broken.returncode:
        assert "tracks --failed" in broken.stderr
