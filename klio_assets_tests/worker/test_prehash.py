"""Content hashes computed while a waiting worker has nothing to do (issue 15): used only
for the same file, unchanged."""

import io
import json
import os
import time

import pytest

from klio_assets.errors import DecodeError
from klio_assets.worker import __main__ as worker_main
from klio_assets.worker import audio, prehash
from klio_assets.worker.storage import hash_file
from klio_assets_tests.support import synth


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """Each test starts with no thread, no early hash and nothing used."""
    prehash.stop()
    if prehash._thread is not None:
        prehash._thread.join(10)
    monkeypatch.setattr(prehash, "_thread", None)
    monkeypatch.setattr(prehash, "_hashes", {})
    monkeypatch.setattr(prehash, "_headers", {})
    monkeypatch.setattr(prehash, "_used", 0)
    monkeypatch.setattr(prehash, "RECENT_S", 0.2)
    yield
    prehash.stop()


def _files(tmp_path, n, size=300_000):
    paths = []
    for i in range(n):
        path = tmp_path / f"s{i}.flac"
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    time.sleep(0.25)  # older than RECENT_S
    return paths


def _wait_hashed(n, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while prehash.prehashed() < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert prehash.prehashed() == n


def test_early_hashes_are_used_once_for_the_unchanged_file(tmp_path):
    paths = _files(tmp_path, 3)
    assert prehash.start([f"file://{paths[0]}", *paths[1:]])
    _wait_hashed(3)
    for path in paths:
        assert prehash.content_hash(path) == hash_file(path)
    assert prehash.used() == 3
    assert prehash.prehashed() == 0  # each taken once: a second ask hashes again
    assert prehash.content_hash(paths[0]) == hash_file(paths[0])
    assert prehash.used() == 3


def test_a_file_rewritten_after_its_early_hash_is_hashed_again(tmp_path):
    """Same size, same inode, other bytes: the early hash must not be used."""
    (path,) = _files(tmp_path, 1)
    prehash.start([path])
    _wait_hashed(1)
    time.sleep(0.05)  # past the file clock's tick
    with open(path, "r+b") as fh:
        fh.write(os.urandom(300_000))
    fresh = hash_file(path)
    assert prehash.content_hash(path) == fresh
    assert prehash.used() == 0


def test_a_replaced_file_is_hashed_again(tmp_path):
    """A new file renamed over the old one (another inode), even with its times set back."""
    (path,) = _files(tmp_path, 1)
    prehash.start([path])
    _wait_hashed(1)
    old = os.stat(path)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(300_000))
    os.utime(other, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(other, path)
    assert prehash.content_hash(path) == hash_file(path)
    assert prehash.used() == 0


def test_recent_files_symlinks_and_object_uris_are_left_to_the_job(tmp_path):
    (old,) = _files(tmp_path, 1)
    link = tmp_path / "link.flac"
    link.symlink_to(old)
    fresh = tmp_path / "fresh.flac"
    fresh.write_bytes(os.urandom(1000))  # written just now: its stamps may not move again
    assert prehash.start(["gs://bucket/a.flac", str(link), str(fresh), old])
    _wait_hashed(1)
    time.sleep(0.1)
    prehash._thread.join(10)
    assert set(prehash._hashes) == {old}


def test_stop_ends_the_hashing_after_the_file_at_hand(tmp_path, monkeypatch):
    paths = _files(tmp_path, 5)
    hashed = []

    def hash_then_stop(path):  # the job arrives while the first file is being hashed
        hashed.append(path)
        prehash.stop()
        return hash_file(path)

    monkeypatch.setattr(prehash, "hash_file", hash_then_stop)
    assert prehash.start(paths)
    prehash._thread.join(10)
    assert hashed == paths[:1]
    assert prehash.prehashed() == 1


def test_the_waiting_worker_reads_hints_then_its_job(tmp_path):
    """``python -m klio_assets.worker --wait``'s input: hints start the hashing, the job's
    arguments stop it and are returned; end of input is no job."""
    paths = _files(tmp_path, 2)
    lines = io.StringIO(json.dumps({"prehash": paths}) + "\n")
    # the job comes once the hints are read; the reader blocks on a pipe in real life
    job = json.dumps(["--plan", "p.json", "--tracks", "t.jsonl"]) + "\n"

    class Pipe(io.StringIO):
        def readline(self, *args):
            line = lines.readline()
            if line:
                return line
            _wait_hashed(2)
            return job if not self.done else ""

        done = False

    pipe = Pipe()
    assert worker_main.wait_for_job(pipe) == ["--plan", "p.json", "--tracks", "t.jsonl"]
    assert prehash._stop.is_set()
    assert sorted(prehash._hashes) == sorted(paths)
    assert worker_main.wait_for_job(io.StringIO("")) is None


def _wait_headers(paths, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while len(prehash._headers) < len(paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(prehash._headers) == sorted(paths)


def test_early_headers_are_used_for_the_unchanged_file_and_still_meet_the_limits(tmp_path):
    """The header read early is what the job would read; the job's limits still apply."""
    paths = [
        synth.write(str(tmp_path / "a.flac"), synth.sine(440, 3.0, 44100), 44100),
        synth.write(str(tmp_path / "b.ogg"), synth.sine(220, 2.0, 32000, channels=1), 32000),
    ]
    time.sleep(0.25)  # older than RECENT_S
    assert prehash.start(paths)
    _wait_headers(paths)
    early = prehash.header(paths[0])
    assert early == audio.read_header(paths[0], track_id="a", uri=paths[0], timeout_s=10)
    assert early.frames == 3 * 44100 and early.container == "FLAC"
    assert prehash.header(paths[0]) is None  # taken once
    tight = audio.DecodeLimits(max_duration_s=1.0)
    with pytest.raises(DecodeError, match=r"b\.ogg"):
        audio.probe(
            paths[1], track_id="b", uri=paths[1], limits=tight, header=prehash.header(paths[1])
        )


def test_a_header_read_early_is_not_used_once_the_file_changed(tmp_path):
    path = synth.write(str(tmp_path / "a.wav"), synth.sine(440, 2.0, 44100), 44100)
    time.sleep(0.25)
    prehash.start([path])
    _wait_headers([path])
    time.sleep(0.05)  # past the file clock's tick
    synth.write(path, synth.sine(440, 1.0, 22050, channels=1), 22050)
    assert prehash.header(path) is None
    assert audio.probe(path, track_id="a", uri=path).frames == 22050


def test_a_file_libsndfile_cannot_read_gets_no_early_header(tmp_path):
    """Not audio, or audio only ffprobe reads: left to the job, which reports it."""
    (path,) = _files(tmp_path, 1)
    prehash.start([path])
    _wait_hashed(1)
    prehash.stop()
    prehash._thread.join(10)
    assert prehash.header(path) is None
