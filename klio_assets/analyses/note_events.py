"""``note_events`` and ``note_midi``: notes transcribed with Spotify's Basic Pitch.

The model is ``nmp.onnx`` shipped inside the ``basic-pitch`` package (no download at run
time), run with onnxruntime. On Linux with Python >= 3.11 that package pins an old TensorFlow,
so it is installed without its dependencies (``pip install --no-deps basic-pitch``; the
``models`` extra and ``scripts/setup.sh`` install what its note creation needs: librosa,
scipy, resampy, mir_eval, pretty_midi).

What the package's own ``basic_pitch.inference.predict`` does, with the windows batched:

* the audio at 22050 Hz mono, preceded by 3840 zeros (half the 30-frame overlap), cut into
  43844-sample windows every 36164 samples (the last zero-padded);
* the windows go to the model ``batch`` at a time, shared with the other tracks the worker
  process is transcribing (:meth:`~klio_assets.worker.models.LoadedModel.infer`);
* each window's outputs lose 15 frames at each end, are joined and trimmed to the track's
  length (86 frames per second);
* the package's own note creation (``basic_pitch.note_creation.model_output_to_notes``, its
  defaults: onset threshold 0.5, frame threshold 0.3, notes of at least 127.7 ms, the melodia
  trick; pitch bends left out) turns them into notes. A test checks the notes against
  ``predict`` itself.

The audio is streamed: windows are sent to the model as they fill, so memory holds a batch of
windows plus the note and onset activations (about 60 kB per second of audio: 3.6 MB per
minute, which the note creation needs whole), not the decoded track.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from klio_assets.worker.analysis import (
    AudioStream,
    LoadedModel,
    OnnxModel,
    SourceAudio,
    Upstream,
    analysis,
)
from klio_assets.worker.outputs import Json, MidiFile

if TYPE_CHECKING:
    import types

SAMPLE_RATE = 22050
FFT_HOP = 256
WINDOW = SAMPLE_RATE * 2 - FFT_HOP  # basic_pitch.constants.AUDIO_N_SAMPLES
OVERLAP_FRAMES = 30
OVERLAP = OVERLAP_FRAMES * FFT_HOP
HOP = WINDOW - OVERLAP
FPS = SAMPLE_RATE // FFT_HOP  # ANNOTATIONS_FPS
MIN_NOTE_MS = 127.70
#: The model's outputs kept: note (frame activations) and onset. The third, the pitch contour,
#: only gives pitch bends, which note events do not carry; not asking for it saves its
#: memory (264 of the 440 values per frame).
OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2")
MODEL = OnnxModel(
    path="basic_pitch:saved_models/icassp_2022/nmp.onnx",
    version="basic-pitch-0.4.0-icassp2022",
    batch=8,
    output_names=OUTPUTS,
    # with KLIO_ASSETS_MODEL_DEVICE=cuda, Dataflow gives the analysis step one GPU
    accelerator="type:nvidia-l4;count:1;install-nvidia-driver",
)


def note_creation() -> types.ModuleType:
    """``basic_pitch.note_creation``, imported without the package's warnings about the
    TensorFlow, CoreML and TFLite runtimes that are deliberately absent."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import basic_pitch.note_creation as module  # noqa: PLC0415 - the models extra
    finally:
        logging.disable(previous)
    return module


def windows(blocks: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, int]]:
    """Basic Pitch's input windows of a 22050 Hz mono stream, with the samples seen so far.

    Yields
    ------
    window : np.ndarray [shape=(43844,)]
    samples : int
        Source samples read when the window was cut (the total, after the last one).
    """
    buffer = np.zeros(OVERLAP // 2, np.float32)
    samples = 0
    for block in blocks:
        samples += len(block)
        buffer = np.concatenate([buffer, np.asarray(block, np.float32)])
        while len(buffer) >= WINDOW:
            yield buffer[:WINDOW].copy(), samples
            buffer = buffer[HOP:]
    # the remaining windows start before the end of the padded audio (as predict's do)
    while len(buffer) > 0:
        yield np.pad(buffer[:WINDOW], (0, max(0, WINDOW - len(buffer)))), samples
        buffer = buffer[HOP:]


def model_output(blocks: Iterator[np.ndarray], model: LoadedModel) -> dict[str, np.ndarray]:
    """Basic Pitch's frame-level outputs of a stream: ``note`` and ``onset`` ``(n, 88)``, at
    86 frames per second (float32: about 60 kB per second of audio)."""
    parts: dict[str, list[np.ndarray]] = {"note": [], "onset": []}
    pending: list[np.ndarray] = []
    samples = 0

    def flush() -> None:
        outputs = model.infer(np.stack(pending)[:, :, None])
        for name, array in zip(parts, outputs, strict=True):
            parts[name].append(array[:, OVERLAP_FRAMES // 2 : -(OVERLAP_FRAMES // 2), :])
        pending.clear()

    for window, seen in windows(blocks):
        samples = seen
        pending.append(window)
        if len(pending) >= model.handler.batch:
            flush()
    if pending:
        flush()
    frames = int(np.floor(samples * (FPS / SAMPLE_RATE)))
    out = {}
    for name, chunks in parts.items():
        joined = np.concatenate(chunks) if chunks else np.zeros((0, 1, 1), np.float32)
        out[name] = joined.reshape(-1, joined.shape[-1])[:frames]
    return out


def notes_of(output: dict[str, np.ndarray]) -> list[tuple[float, float, int, float]]:
    """Basic Pitch's notes (onset s, offset s, MIDI pitch, amplitude) from its model output,
    with the package's own note creation and its ``predict`` defaults."""
    creation = note_creation()
    frames = output["note"].shape[0]
    if frames == 0:
        return []
    # without pitch bends the contour is read only for its length
    _, events = creation.model_output_to_notes(
        {**output, "contour": np.empty((frames, 0), np.float32)},
        onset_thresh=0.5,
        frame_thresh=0.3,
        min_note_len=int(np.round(MIN_NOTE_MS / 1000 * (SAMPLE_RATE / FFT_HOP))),
        min_freq=None,
        max_freq=None,
        include_pitch_bends=False,
        multiple_pitch_bends=False,
        melodia_trick=True,
        midi_tempo=120,
    )
    return [(float(s), float(e), int(p), float(a)) for s, e, p, a, _ in events]


@analysis(
    inputs={"audio": SourceAudio(sample_rate=SAMPLE_RATE, mono=True, stream=True)},
    output=Json(),
    code_version="1",
    model=MODEL,
)
def note_events(audio: AudioStream, model: LoadedModel) -> dict[str, Any]:
    """Notes (onset and offset in seconds, MIDI pitch, amplitude) transcribed by Spotify's
    Basic Pitch (ONNX, 22.05 kHz mono), in onset order."""
    notes = sorted(notes_of(model_output(iter(audio), model)))
    return {
        "notes": [[round(s, 4), round(e, 4), p, round(a, 4)] for s, e, p, a in notes],
        "note_count": len(notes),
        "pitch_min": min((n[2] for n in notes), default=None),
        "pitch_max": max((n[2] for n in notes), default=None),
        "model": MODEL.version,
    }


@analysis(inputs={"events": Upstream("note_events")}, output=MidiFile(), code_version="1")
def note_midi(events: dict[str, Any]) -> bytes:
    """The transcribed notes as a standard MIDI file (one piano track, 120 BPM), as Basic
    Pitch writes it."""
    creation = note_creation()
    midi = creation.note_events_to_midi(
        [(s, e, int(p), a, None) for s, e, p, a in events["notes"]], False, 120
    )
    buffer = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()):
        midi.write(buffer)
    return buffer.getvalue()
