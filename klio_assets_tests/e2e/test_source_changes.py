"""Results never describe another file: a changed source is recomputed, a stale content index
is not trusted, a source swapped for a symlink is refused, and a bad upstream output is named.

Each test starts what a user starts (the ``klio-assets`` CLI on a fresh home).
"""

import json
import os
import shutil
import sqlite3
import time

import blake3
import pytest
import soundfile

from klio_assets.worker.storage import Storage, source_stat
from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.support import synth

pytestmark = pytest.mark.e2e


def _tone(path, freq: float, seconds: float, rate: int = 22050) -> str:
    return synth.write(str(path), synth.sine(freq, seconds, rate, channels=1), rate)


def _record(out, track, name):
    return out["tracks"][track][name]


def test_a_stale_content_index_never_shares_another_files_results(tmp_path):
    library, keep, home = tmp_path / "library", tmp_path / "keep", str(tmp_path / "home")
    library.mkdir()
    keep.mkdir()
    orig = _tone(library / "orig.wav", 440.0, 1.0)
    shutil.copyfile(orig, keep / "copy.wav")  # the ORIGINAL bytes of orig.wav
    run_cli("add", str(library), home=home, check=True)
    first, _ = cli_json("run", "source_audio", home=home)
    assert first["assets"]["source_audio"] == {"computed": 1}

    _tone(library / "orig.wav", 880.0, 2.5)  # orig.wav now holds other audio
    forced, _ = cli_json("run", "source_audio", "--force", home=home)
    assert forced["assets"]["source_audio"] == {"computed": 1}

    shutil.copyfile(keep / "copy.wav", library / "copy.wav")
    run_cli("add", str(library / "copy.wav"), home=home, check=True)
    second, _ = cli_json("run", "source_audio", home=home)
    record = _record(second, "copy", "source_audio")
    assert record.get("shared_from") != "orig", record
    with open(record["uri"]) as fh:
        described = json.load(fh)
    with open(library / "copy.wav", "rb") as fh:
        wanted = "blake3:" + blake3.blake3(fh.read()).hexdigest()
    assert described["content_hash"] == wanted
    assert abs(described["duration_s"] - 1.0) < 0.01


def test_a_source_replaced_by_a_symlink_after_add_is_refused_at_run(tmp_path):
    library, outside, home = tmp_path / "library", tmp_path / "outside", str(tmp_path / "home")
    library.mkdir()
    outside.mkdir()
    _tone(library / "victim.wav", 440.0, 1.0)
    secret = _tone(outside / "secret.wav", 660.0, 1.0)
    run_cli("add", str(library), home=home, check=True)
    os.remove(library / "victim.wav")
    os.symlink(secret, library / "victim.wav")
    out, done = cli_json("run", "source_audio", home=home, expect_code=None)
    assert done.returncode != 0
    record = _record(out, "victim", "source_audio")
    assert record["status"] == "failed"
    assert "symlink" in record["reason"] and "victim.wav" in record["reason"]
    assert len(record["reason"].splitlines()) == 1


def test_a_changed_source_is_recomputed_by_the_next_run(tmp_path):
    library, home = tmp_path / "library", str(tmp_path / "home")
    library.mkdir()
    path = _tone(library / "song.wav", 440.0, 1.0)
    _tone(library / "other.wav", 550.0, 1.0)
    run_cli("add", str(library), home=home, check=True)
    first, _ = cli_json("run", "source_audio", home=home)
    assert first["assets"]["source_audio"] == {"computed": 2}

    _tone(path, 880.0, 2.0)  # the same track, other audio: its results describe the old file
    checked, _ = cli_json("run", "source_audio", "--check-dagster", home=home)
    assert checked["assets"]["source_audio"] == {"computed": 1, "skipped": 1}, checked
    with open(_record(checked, "song", "source_audio")["uri"]) as fh:
        assert abs(json.load(fh)["duration_s"] - 2.0) < 0.01

    _tone(path, 330.0, 3.0)  # again, now through the CLI's fast path
    again, _ = cli_json("run", "source_audio", home=home)
    assert again["assets"]["source_audio"] == {"computed": 1, "skipped": 1}, again
    with open(_record(again, "song", "source_audio")["uri"]) as fh:
        assert abs(json.load(fh)["duration_s"] - 3.0) < 0.01
    quiet, _ = cli_json("run", "source_audio", home=home)
    assert quiet["runs"] == [] and quiet["assets"]["source_audio"] == {"skipped": 2}

    with sqlite3.connect(os.path.join(home, "catalog.db")) as db:  # a catalog from before
        db.execute("DROP TABLE klio_source_stats")
    old, _ = cli_json("run", "source_audio", home=home)
    assert old["runs"] == [] and old["assets"]["source_audio"] == {"skipped": 2}


def test_an_object_stores_source_stat_changes_when_the_object_is_rewritten():
    storage = Storage("memory://klio-stat-test")
    uri = "memory://klio-stat-test/a.wav"
    storage.write_json(uri, {"a": 1})
    first = source_stat(uri)
    time.sleep(0.01)
    storage.write_json(uri, {"a": 2})
    assert first is not None and source_stat(uri) not in (None, first)
    assert source_stat("memory://klio-stat-test/missing.wav") is None


@pytest.mark.parametrize(
    ("upstream", "downstream", "garbage"),
    [
        ("mel_spectrogram", "mfcc", b"\x93NUMPY not really an array"),
        ("downsampled_audio", "spectrogram", b"fLaC and then nothing"),
    ],
)
def test_a_bad_upstream_output_is_named_in_the_reason(tmp_path, upstream, downstream, garbage):
    library, home = tmp_path / "library", str(tmp_path / "home")
    library.mkdir()
    _tone(library / "song.wav", 440.0, 2.0)
    run_cli("add", str(library), home=home, check=True)
    first, _ = cli_json("run", upstream, home=home)
    bad = _record(first, "song", upstream)["uri"]
    with open(bad, "wb") as fh:
        fh.write(garbage)
    out, done = cli_json("run", downstream, "--no-upstream", home=home, expect_code=None)
    assert done.returncode != 0
    reason = _record(out, "song", downstream)["reason"]
    assert bad in reason and "song.wav" not in reason, reason
    assert len(reason.splitlines()) == 1


def test_a_bottom_up_run_recomputes_the_upstream_of_a_changed_source(tmp_path):
    library, home = tmp_path / "library", str(tmp_path / "home")
    library.mkdir()
    path = _tone(library / "song.wav", 440.0, 1.0)
    run_cli("add", str(library), home=home, check=True)
    first, _ = cli_json("run", "mel_spectrogram", home=home)
    assert _record(first, "song", "downsampled_audio")["status"] == "computed"

    _tone(path, 880.0, 2.0)
    again, _ = cli_json("run", "mel_spectrogram", home=home)
    assert _record(again, "song", "mel_spectrogram")["status"] == "computed"
    downsampled = _record(again, "song", "downsampled_audio")
    assert downsampled["status"] == "computed", again["tracks"]["song"]
    assert abs(soundfile.info(downsampled["uri"]).duration - 2.0) < 0.01
