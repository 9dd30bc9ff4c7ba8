"""The catalog as a user manages it: ``add`` naming rules, ``tracks``, ``remove``, ``show``."""

import os

import dagster as dg
import numpy as np
import pytest
import soundfile as sf

from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e


def _tone(path, rate=22050, seconds=0.5, **kw):
    n = int(rate * seconds)
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    sf.write(str(path), np.stack([y, y], axis=1), rate, **kw)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    """``hello`` in two formats, another track, a broken MP3 and a text file."""
    lib = tmp_path / "lib"
    lib.mkdir()
    _tone(lib / "hello.wav")
    _tone(lib / "hello.opus", rate=48000, format="OGG", subtype="OPUS")
    _tone(lib / "other.flac")
    (lib / "broken.mp3").write_text("this is not audio\n" * 20)
    (lib / "notes.txt").write_text("remember the milk")
    return lib


def _ids(home, *args):
    listing, _ = cli_json("tracks", *args, home=home)
    return [t["track_id"] for t in listing["tracks"]]


def test_add_names_same_stem_files_apart_and_refuses_named_non_audio(tmp_path, folder):
    home = str(tmp_path / "home")
    added = run_cli("add", str(folder), home=home)
    assert added.returncode == 0, added.stderr
    assert "registered 4 new tracks" in added.stdout and not added.stderr.strip()
    listing, _ = cli_json("tracks", home=home)
    uris = {t["track_id"]: t["uri"] for t in listing["tracks"]}
    # Sorted order: hello.opus comes first and keeps the stem; hello.wav takes "hello-wav".
    assert uris["hello"] == str(folder / "hello.opus")
    assert uris["hello-wav"] == str(folder / "hello.wav")
    assert set(uris) == {"broken", "hello", "hello-wav", "other"}  # notes.txt ignored

    again = run_cli("add", str(folder), home=home, check=True)
    assert "registered 0 new tracks (4 already registered)" in again.stdout

    # A third format later: the stem is registered for another file, so the extension goes on.
    _tone(folder / "hello.flac")
    later = run_cli("add", str(folder / "hello.flac"), home=home, check=True)
    assert "registered 1 new track (" in later.stdout  # singular
    assert _ids(home)[-1] == "hello-flac"
    stable = run_cli("add", str(folder), home=home, check=True)  # the whole folder again
    assert "registered 0 new tracks (5 already registered)" in stable.stdout

    refused = run_cli("add", str(folder / "notes.txt"), home=home)
    assert refused.returncode == 1
    assert "refused" in refused.stderr and "notes.txt" in refused.stderr
    assert "not an audio file" in refused.stderr and "text" in refused.stderr
    assert "notes" not in _ids(home)


def test_tracks_pages_filters_and_remove_forgets(tmp_path, folder):
    home = str(tmp_path / "home")
    run_cli("add", str(folder), home=home, check=True)
    assert _ids(home) == ["broken", "hello", "hello-wav", "other"]

    first = run_cli("tracks", "--limit", "2", home=home, check=True)
    assert [line.split()[0] for line in first.stdout.splitlines()] == ["broken", "hello"]
    assert "--after hello" in first.stderr
    page, _ = cli_json("tracks", "--limit", "2", "--after", "hello", home=home)
    assert [t["track_id"] for t in page["tracks"]] == ["hello-wav", "other"]
    assert page["next_after"] is None
    assert cli_json("tracks", "--limit", "1", home=home)[0]["next_after"] == "broken"

    done = run_cli("run", "downsampled_audio", home=home)
    assert done.returncode == 1, done.stderr  # broken.mp3 fails
    failed, _ = cli_json("tracks", "--failed", home=home)
    assert [t["track_id"] for t in failed["tracks"]] == ["broken"]
    assert "looks like text" in failed["tracks"][0]["failed"]["downsampled_audio"]
    text = run_cli("tracks", "--failed", home=home, check=True).stdout
    assert text.splitlines()[0].startswith("broken  ") and "failed " in text
    assert _ids(home, "--missing", "downsampled_audio") == ["broken"]
    refused = run_cli("tracks", "--missing", "nope", home=home)
    assert refused.returncode == 2 and "unknown analysis 'nope'" in refused.stderr

    # show: an unregistered track is said to be one; ASSET alone says which track it shows.
    unknown = run_cli("show", "downsampled_audio", "no-such-track", home=home)
    assert unknown.returncode != 0 and "not registered" in unknown.stderr
    latest, _ = cli_json("show", "downsampled_audio", home=home)
    assert latest["track_id"] in {"hello", "hello-wav", "other"}

    shown, _ = cli_json("show", "downsampled_audio", "hello-wav", home=home)
    output = shown["uri"]
    assert os.path.isfile(output)
    removed, _ = cli_json("remove", "hello-wav", "other", "--outputs", home=home)
    assert removed["removed"] == ["hello-wav", "other"] and removed["not_registered"] == []
    assert removed["outputs_deleted"]["hello-wav"] >= 1
    assert not os.path.exists(output)
    assert _ids(home) == ["broken", "hello"]
    instance = dg.DagsterInstance.from_config(home)
    assert instance.get_dynamic_partitions("tracks") == ["broken", "hello"]
    status, _ = cli_json("status", home=home, expect_code=None)
    assert status["tracks"] == 2

    kept = run_cli("remove", "broken", "ghost", home=home)
    assert kept.returncode == 1 and "ghost: not registered" in kept.stderr
    assert "removed 1 track" in kept.stdout
    assert _ids(home) == ["hello"] and _ids(home, "--failed") == []
    assert os.path.isfile(folder / "broken.mp3")  # sources are never touched
