"""The worker captures what libsndfile's MP3 decoder prints on fd 2, per track, and lets
everything else through."""

import os
import subprocess
import sys
import threading

import soundfile as sf

from klio_assets.worker import decoder_log
from klio_assets.worker.audio import SourceDecoder, probe
from klio_assets_tests.cli.test_quiet import CHATTER, damaged_mp3


def _decode(path, track_id):
    info = probe(path, track_id=track_id, uri=path)
    decoder = SourceDecoder(path, info, track_id=track_id, uri=path)
    frames = sum(len(block) for block in decoder)
    return decoder, frames


def test_libmpg123_lines_are_kept_per_decode_not_printed(tmp_path, capfd):
    path = damaged_mp3(tmp_path / "damaged.mp3")
    decoder, frames = _decode(path, "damaged")
    out, err = capfd.readouterr()
    assert frames > 0
    assert not any(c in err for c in CHATTER), err
    assert any(line.startswith("[src/libmpg123/") for line in decoder.warnings)
    assert len(decoder.warnings) <= decoder_log.MAX_LINES

    # Outside a decode, fd 2 is the real stderr again, for C and Python writers alike.
    os.write(2, b"after the decode\n")
    print("python stderr", file=sys.stderr, flush=True)
    _, err = capfd.readouterr()
    assert "after the decode" in err and "python stderr" in err


def test_clean_file_has_no_decoder_warnings_and_threads_keep_their_own(tmp_path, capfd):
    clean = str(tmp_path / "clean.wav")
    sf.write(clean, [[0.1, 0.1]] * 44100, 44100)
    damaged = damaged_mp3(tmp_path / "damaged.mp3")
    results = {}

    def work(name, path):
        results[name] = _decode(path, name)[0].warnings

    threads = [threading.Thread(target=work, args=(f"d{i}", damaged)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(any("libmpg123" in line for line in lines) for lines in results.values())
    # A clean decode on its own says nothing.
    assert _decode(clean, "clean")[0].warnings == []
    os.write(2, b"still this test's stderr\n")
    err = capfd.readouterr().err
    assert not any(c in err for c in CHATTER) and "still this test's stderr" in err


def test_a_forked_child_captures_on_its_own(tmp_path):
    """The reader thread stays in the parent across fork: the child makes its own (else its
    decodes would wait for a reader that is not there and lose their lines)."""
    path = damaged_mp3(tmp_path / "damaged.mp3")
    assert _decode(path, "parent")[0].warnings  # the parent's capture is running
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its own capture kept the lines
        code = 1
        try:
            code = 0 if any("libmpg123" in w for w in _decode(path, "child")[0].warnings) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _decode(path, "parent again")[0].warnings


def test_no_stderr_at_all_turns_capturing_off(tmp_path):
    path = damaged_mp3(tmp_path / "damaged.mp3")
    code = (
        "import sys; from klio_assets_tests.worker.test_decoder_log import _decode; "
        f"d, n = _decode({path!r}, 't'); print(n, len(d.warnings))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: os.close(2),
        check=True,
    )
    frames, kept = map(int, done.stdout.split())
    assert frames > 0 and kept == 0


def test_a_decode_that_prints_nothing_writes_nothing_through_the_pipe(tmp_path, monkeypatch):
    """A window per block is cheap only if it adds no pipe traffic (markers through the pipe
    and a reader thread woken per block cost ~8 % of a FLAC decode's CPU); a decode that
    prints still gets its lines."""
    flac = str(tmp_path / "clean.flac")
    sf.write(flac, [[0.1, 0.1]] * 441000, 44100)
    mp3 = damaged_mp3(tmp_path / "damaged.mp3")
    assert _decode(mp3, "warm-up")[0].warnings  # the pipe and its reader exist
    writes = []
    real_write = os.write

    def counting(fd, data):
        writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(decoder_log.os, "write", counting)
    decoder, frames = _decode(flac, "flac")
    assert frames == 441000 and decoder.warnings == []
    assert writes == []
    assert _decode(mp3, "mp3")[0].warnings
