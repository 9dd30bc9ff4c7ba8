"""The flat-memory note creation equals basic-pitch's own ``output_to_notes_polyphonic``.

The activations come from the real model on real music (and on a long file joined from corpus
tracks); the package's function runs on the whole arrays in memory, ours on the files with
small chunks so that notes, onsets and the melodia walk cross chunk seams and the cache
evicts (and writes back) chunks.
"""

from __future__ import annotations

import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf

from klio_assets.analyses import note_creation
from klio_assets.analyses import note_events as note_events_asset
from klio_assets.worker import models
from klio_assets_tests.support import synth
from klio_assets_tests.support.realmusic import real_music_tracks

module = __import__("klio_assets.analyses.note_events", fromlist=["model_output"])
MIN_NOTE_LEN = int(np.round(module.MIN_NOTE_MS / 1000 * (module.SAMPLE_RATE / module.FFT_HOP)))


def _package_notes(files):
    creation = module.note_creation()
    frames = files.read("note", 0, files.rows)
    onsets = files.read("onset", 0, files.rows)
    return creation.output_to_notes_polyphonic(
        frames, onsets, onset_thresh=0.5, frame_thresh=0.3, min_note_len=MIN_NOTE_LEN,
        infer_onsets=True, max_freq=None, min_freq=None, melodia_trick=True,
    )  # fmt: skip


def _ours(files):
    return note_creation.notes_from_files(
        files, onset_thresh=0.5, frame_thresh=0.3, min_note_len=MIN_NOTE_LEN
    )


def _activations(path):
    model = models.acquire(note_events_asset.model, "cpu")
    try:
        y, sr = sf.read(path, dtype="float32")
        assert sr == module.SAMPLE_RATE
        blocks = (y[i : i + 65536] for i in range(0, len(y), 65536))
        return module.model_output(blocks, model)
    finally:
        models.release(note_events_asset.model, "cpu")


def _decode(sources, path, seconds=None):
    synth.require_ffmpeg()
    args = []
    for source in sources:
        args += ["-i", str(source)]
    graph = "".join(f"[{i}:a]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=0:a=1"
    cut = ["-t", str(seconds)] if seconds else []
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, "-filter_complex", graph,
         *cut, "-ar", "22050", "-ac", "1", "-c:a", "pcm_f32le", str(path)],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """Real music tracks joined into one file of 8 minutes: its activations from the real
    model, and the package's notes of them."""
    path = tmp_path_factory.mktemp("joined") / "joined.wav"
    _decode(real_music_tracks(3, min_duration_s=60), path, seconds=480)
    files = _activations(str(path))
    try:
        yield files, _package_notes(files)
    finally:
        files.close()


@pytest.mark.parametrize(("chunk", "cache"), [(64, 2), (2048, 8)])
def test_notes_equal_the_package_on_a_long_joined_track(joined, monkeypatch, chunk, cache):
    monkeypatch.setattr(note_creation, "CHUNK", chunk)
    monkeypatch.setattr(note_creation, "CACHE", cache)
    files, expected = joined
    assert files.rows >= 8 * 60 * module.FPS - 1
    assert len(expected) > 500
    # identical: frames, pitches and amplitudes, in the same order
    assert _ours(files) == [(int(s), int(e), int(p), float(a)) for s, e, p, a in expected]


def test_notes_equal_the_package_on_edge_cases(tmp_path, monkeypatch):
    """Silence (no onsets: the package divides 0 by 0), a track shorter than a chunk, and
    activations with notes running into both ends of the track and across seams."""
    monkeypatch.setattr(note_creation, "CHUNK", 16)
    monkeypatch.setattr(note_creation, "CACHE", 2)
    rng = np.random.default_rng(7)
    cases = {
        "silence": (np.zeros((300, 88), np.float32), np.zeros((300, 88), np.float32)),
        "short": (rng.random((9, 88), np.float32), rng.random((9, 88), np.float32)),
    }
    note = (rng.random((700, 88)) ** 6).astype(np.float32)
    note[:200, 40] = 0.9  # a note from the first frame across many chunks
    note[-150:, 41] = 0.8  # and one running to the end
    cases["random"] = (note, (rng.random((700, 88)) ** 8).astype(np.float32))
    for name, (frames, onsets) in cases.items():
        files = note_creation.ActivationFiles(str(tmp_path))
        try:
            files.append(frames, onsets)
            files.finish(len(frames))
            with np.errstate(divide="ignore", invalid="ignore"):
                expected = _package_notes(files)
            ours = _ours(files)
            assert ours == [(int(s), int(e), int(p), float(a)) for s, e, p, a in expected], name
            assert (len(ours) > 20) == (name == "random"), name
        finally:
            files.close()
    assert not list(tmp_path.iterdir()), "the activation files are removed"


def test_activation_files_are_removed_when_the_stream_fails(tmp_path, monkeypatch):
    """A decode that fails halfway leaves no activation files behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def blocks():
        yield np.zeros(22050 * 5, np.float32)
        raise RuntimeError("the decoder failed")

    model = models.acquire(note_events_asset.model, "cpu")
    try:
        with pytest.raises(RuntimeError, match="decoder failed"):
            module.model_output(blocks(), model)
        files = module.model_output(iter([np.zeros(22050 * 5, np.float32)]), model)
        assert files.rows == int(5 * module.FPS)
        assert [p.name.startswith("klio-notes-") for p in tmp_path.iterdir()] == [True]
        files.close()
    finally:
        models.release(note_events_asset.model, "cpu")
    assert not list(tmp_path.iterdir())
