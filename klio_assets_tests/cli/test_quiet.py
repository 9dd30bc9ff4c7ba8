"""Quiet output: decoder chatter and third-party warnings stay off the CLI's output unless
``--verbose``; what the decoder said is kept in the track's metadata."""

import random

import numpy as np
import pytest
import soundfile as sf

from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e

#: What libmpg123 prints (straight to fd 2) about the damaged MP3 made below.
CHATTER = ("[src/libmpg123/", "Note: Illegal Audio-MPEG-Header", "Note: Trying to resync")


def damaged_mp3(path, *, seconds=4.0, rate=44100):
    """A real MP3 with a few frames overwritten by noise: it decodes (libmpg123 resyncs), and
    libmpg123 complains on stderr about every damaged frame."""
    t = np.arange(int(seconds * rate)) / rate
    y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(str(path), np.stack([y, y], axis=1), rate, format="MP3")
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    for offset in range(4000, len(data) - 2000, 3000):
        data[offset : offset + 40] = bytes(rng.randrange(256) for _ in range(40))
    path.write_bytes(bytes(data))
    return str(path)


def test_decoder_chatter_goes_to_metadata_not_the_terminal(tmp_path):
    home = str(tmp_path / "home")
    folder = tmp_path / "lib"
    folder.mkdir()
    damaged_mp3(folder / "damaged.mp3")
    # Beam's bigquery client logs "apitools not found" at import when apitools is missing (a
    # plain install): hide it from this process tree to bring that warning on.
    hide = tmp_path / "hide" / "apitools"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": str(hide.parent), "PYTHONWARNINGS": "default"}
    run_cli("add", str(folder), home=home, env=env, check=True)

    quiet = run_cli("run", "source_audio", home=home, env=env)
    assert quiet.returncode == 0, quiet.stderr
    for line in (quiet.stdout + quiet.stderr).splitlines():
        assert not any(c in line for c in CHATTER), line
        assert "apitools" not in line and "Warning:" not in line, line
        assert "WARNING:" not in line and "SupersessionWarning" not in line, line

    shown, _ = cli_json("show", "source_audio", "damaged", home=home)
    kept = shown["decoder_warnings"]
    assert any(line.startswith("[src/libmpg123/") for line in kept), kept
    assert any("Trying to resync" in line for line in kept), kept

    loud = run_cli("--verbose", "run", "source_audio", "--force", home=home, env=env)
    assert loud.returncode == 0, loud.stderr
    assert any(line.startswith("[src/libmpg123/") for line in loud.stderr.splitlines())
