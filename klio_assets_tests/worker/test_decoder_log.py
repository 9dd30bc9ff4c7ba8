"""The worker captures what libsndfile's MP3 decoder prints on fd 2, per track, and lets
everything else through."""

import os
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
