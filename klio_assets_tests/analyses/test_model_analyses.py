"""The model analyses checked against the reference implementations, through the real engine.

* ``note_events`` against ``basic_pitch.inference.predict`` (the package's own windowing,
  onnxruntime backend and note creation) on the same real music;
* ``speech_segments`` against ``silero_vad.get_speech_timestamps`` with the package's own
  ``OnnxWrapper`` (torch is installed by ``scripts/setup.sh --test``) on real spoken prompts,
  and on prompts joined with known silences between them;
* ``key`` on synthesized I-IV-V-I cadences in all 24 keys.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from klio_assets.analyses import (
    key,
    note_events,
    note_midi,
    piano_roll_plot,
    source_audio,
    speech_segments,
)
from klio_assets.analyses.key import PITCH_CLASSES, estimate_key, mean_chroma
from klio_assets.analyses.speech_segments import speech_probabilities, speech_timestamps
from klio_assets.worker import models
from klio_assets_tests.support import synth
from klio_assets_tests.support.realmusic import real_music_tracks, real_speech_clips
from klio_assets_tests.worker.test_pipeline import run_plan

FRAME_S = 256 / 22050  # one Basic Pitch frame


class _Track:
    def __init__(self, track_id, path):
        self.track_id, self.path = track_id, str(path)


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def music_22k(tmp_path_factory):
    """Two real music excerpts (25 s), 22050 Hz mono float WAV: what Basic Pitch reads."""
    synth.require_ffmpeg()
    folder = tmp_path_factory.mktemp("music22k")
    out = []
    for i, source in enumerate(real_music_tracks(2, min_duration_s=60)):
        path = str(folder / f"music{i}.wav")
        _ffmpeg("-ss", "15", "-t", "25", "-i", str(source), "-ar", "22050", "-ac", "1",
                "-c:a", "pcm_f32le", path)  # fmt: skip
        out.append(_Track(f"music{i}", path))
    return out


def test_note_events_equal_basic_pitch_predict(tmp_path, music_22k):
    from basic_pitch.inference import predict

    analyses = [source_audio, note_events, note_midi, piano_roll_plot]
    results, _, storage = run_plan(
        tmp_path, music_22k, ["note_events", "note_midi", "piano_roll_plot"], analyses=analyses
    )
    model_path = models.resolve_weights(note_events.model.path)
    for track in music_22k:
        record = results[track.track_id]["analyses"]["note_events"]
        assert record["status"] == "computed", record
        ours = storage.read_json(record["uri"])["notes"]
        _, _, reference = predict(track.path, model_path)
        expected = sorted((float(s), float(e), int(p), float(a)) for s, e, p, a, _ in reference)
        assert len(ours) == len(expected) > 20, (len(ours), len(expected))
        for (s, e, p, a), (rs, re_, rp, ra) in zip(ours, expected, strict=True):
            assert p == rp
            assert abs(s - rs) <= FRAME_S + 1e-4 and abs(e - re_) <= FRAME_S + 1e-4
            assert a == pytest.approx(ra, abs=1e-3)
        midi = results[track.track_id]["analyses"]["note_midi"]
        assert midi["status"] == "computed"
        import pretty_midi

        local = tmp_path / f"{track.track_id}.mid"
        local.write_bytes(storage.read_bytes(midi["uri"]))
        notes = pretty_midi.PrettyMIDI(str(local)).instruments[0].notes
        assert sorted(n.pitch for n in notes) == sorted(n[2] for n in ours)
        plot = results[track.track_id]["analyses"]["piano_roll_plot"]
        assert plot["status"] == "computed"
        assert storage.read_bytes(plot["uri"]).startswith(b"\x89PNG")


def _reference_speech(path):
    """silero-vad's own get_speech_timestamps with its OnnxWrapper, on 16 kHz mono."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and y.ndim == 1
    model = load_silero_vad(onnx=True)
    return get_speech_timestamps(torch.from_numpy(y), model, sampling_rate=16000), len(y)


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory):
    """Real spoken prompts at 16 kHz mono, and the same prompts joined with 1.5 s silences."""
    synth.require_ffmpeg()
    folder = tmp_path_factory.mktemp("speech16k")
    clips = real_speech_clips(4, min_duration_s=2.5)
    singles = []
    for i, source in enumerate(clips):
        path = str(folder / f"prompt{i}.wav")
        _ffmpeg("-i", str(source), "-ar", "16000", "-ac", "1", "-c:a", "pcm_f32le", path)
        singles.append(_Track(f"prompt{i}", path))
    gap = np.zeros(int(1.5 * 16000), np.float32)
    parts, spans, at = [gap], [], len(gap)
    for track in singles:
        y, _ = sf.read(track.path, dtype="float32")
        parts += [y, gap]
        spans.append((at / 16000, (at + len(y)) / 16000))
        at += len(y) + len(gap)
    joined = str(folder / "joined.wav")
    sf.write(joined, np.concatenate(parts), 16000, subtype="FLOAT")
    return singles, _Track("joined", joined), spans


def test_speech_segments_equal_silero_get_speech_timestamps(tmp_path, speech_16k):
    singles, joined, _ = speech_16k
    tracks = [*singles, joined]
    results, _, storage = run_plan(
        tmp_path, tracks, ["speech_segments"], analyses=[source_audio, speech_segments]
    )
    for track in tracks:
        record = results[track.track_id]["analyses"]["speech_segments"]
        assert record["status"] == "computed", record
        ours = storage.read_json(record["uri"])
        reference, samples = _reference_speech(track.path)
        assert reference, track.track_id  # real speech is found at all
        expected = [[round(s["start"] / 16000, 3), round(s["end"] / 16000, 3)] for s in reference]
        assert ours["segments"] == expected, track.track_id
        assert ours["speech_ratio"] == pytest.approx(
            sum(s["end"] - s["start"] for s in reference) / samples, abs=1e-3
        )


def test_speech_segments_fall_on_the_prompts_not_the_silences(tmp_path, speech_16k):
    _, joined, spans = speech_16k
    results, _, storage = run_plan(
        tmp_path, [joined], ["speech_segments"], analyses=[source_audio, speech_segments]
    )
    found = storage.read_json(results["joined"]["analyses"]["speech_segments"]["uri"])
    pad = 0.1
    for start, end in found["segments"]:
        assert any(s - pad <= start and end <= e + pad for s, e in spans), (start, end, spans)
    for s, e in spans:
        assert any(start < e and end > s for start, end in found["segments"]), (s, e)
    speech = sum(e - s for s, e in spans)
    total = sf.info(joined.path).duration
    assert 0.5 * speech / total <= found["speech_ratio"] <= (speech + 0.1 * len(spans)) / total


def _port_against_package_function(probs, samples):
    """Our segment function against the package's get_speech_timestamps_from_probs."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    expected = get_speech_timestamps_from_probs(list(probs), audio_length_samples=samples)
    assert speech_timestamps(list(probs), samples=samples) == expected


def test_speech_timestamps_port_equals_the_package_function(speech_16k):
    singles, joined, _ = speech_16k
    session = models.OnnxModel(path=speech_segments.model.path, version="x").session("cpu")
    y, _ = sf.read(joined.path, dtype="float32")
    probs, samples = speech_probabilities(iter(np.array_split(y, 37)), session)
    _port_against_package_function(probs, samples)
    rng = np.random.default_rng(3)
    for _ in range(50):  # random walks through the thresholds: every branch
        walk = np.clip(np.cumsum(rng.normal(0, 0.15, 400)) + 0.4, 0, 1)
        _port_against_package_function(walk.tolist(), 400 * 512 - int(rng.integers(0, 511)))


def _tone(midi, seconds, sr):
    t = np.arange(int(sr * seconds)) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    y = sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(4) if f * (k + 1) < sr / 2)
    return y * np.hanning(len(t))


def cadence(tonic, minor, sr=22050):
    """I-IV-V-I (i-iv-V-i, harmonic minor) in close position with a bass, one second each."""
    third = 3 if minor else 4
    chords = [
        [tonic - 12, tonic, tonic + third, tonic + 7],
        [tonic - 7, tonic + 5, tonic + 5 + third, tonic + 12],
        [tonic - 5, tonic + 7, tonic + 11, tonic + 14],
        [tonic - 12, tonic, tonic + third, tonic + 7],
    ]
    return np.concatenate([sum(_tone(m, 1.0, sr) for m in c) for c in chords]) * 0.08


def _related(found, tonic, minor):
    """The relative or dominant key of (tonic, minor)."""
    relative = ((tonic + 9) % 12, True) if not minor else ((tonic + 3) % 12, False)
    dominant = ((tonic + 7) % 12, minor)
    return found in (relative, dominant)


def test_key_of_cadences_in_all_24_keys(tmp_path):
    exact, files = 0, []
    for minor in (False, True):
        for pc in range(12):
            y = cadence(60 + pc, minor, sr=11025).astype(np.float32)
            chroma, _ = mean_chroma(np.array_split(y, 11))
            got = estimate_key(chroma)
            found = (PITCH_CLASSES.index(got["key"]), got["mode"] == "minor")
            if found == (pc, minor):
                exact += 1
            else:
                assert _related(found, pc, minor), (pc, minor, got)
            if pc in (0, 9):  # a few through the engine, from files at 44.1 kHz
                name = f"{PITCH_CLASSES[pc].replace('#', 's')}_{'minor' if minor else 'major'}"
                path = str(tmp_path / f"{name}.wav")
                sf.write(path, cadence(60 + pc, minor, sr=44100), 44100)
                files.append((_Track(name.lower(), path), PITCH_CLASSES[pc], minor))
    assert exact >= 22  # >= 90 %
    results, _, storage = run_plan(
        tmp_path, [f[0] for f in files], ["key"], analyses=[source_audio, key]
    )
    for track, tonic, minor in files:
        got = storage.read_json(results[track.track_id]["analyses"]["key"]["uri"])
        assert (got["key"], got["mode"]) == (tonic, "minor" if minor else "major"), got
        assert got["confidence"] > 0.5 and len(got["chroma"]) == 12


def test_key_of_silence_is_unknown():
    assert estimate_key(np.zeros(12))["key"] is None
    assert estimate_key(np.ones(12))["mode"] is None
