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
* each window's outputs lose 15 frames at each end, are joined (in float32 files in a
  temporary folder) and trimmed to the track's length (86 frames per second);
* the package's note creation (``basic_pitch.note_creation.model_output_to_notes``, its
  defaults: onset threshold 0.5, frame threshold 0.3, notes of at least 127.7 ms, the melodia
  trick; pitch bends left out) turns them into notes, computed chunk by chunk from the files
  by :mod:`klio_assets.analyses.note_creation`. Tests check the notes against ``predict``
  itself, and against the package's note creation on a long track.

The audio is streamed and the activations are kept on disk: memory holds a batch of windows
and a few chunks of activations, flat in track length (peak RSS of a worker 635, 591 and
640 MB for 1, 15 and 60 minutes: ``benchmarks/models.py``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from klio_assets.analyses.note_creation import ActivationFiles, notes_from_files
from klio_assets.worker.analysis import (
    AudioStream,
    LoadedModel,
    OnnxModel,
    SourceAudio,
    Upstream,
    analysis,
)
from klio_assets.worker.outputs import Json, MidiFile

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


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
    import numpy as np  # noqa: PLC0415

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


def model_output(blocks: Iterator[np.ndarray], model: LoadedModel) -> ActivationFiles:
    """Basic Pitch's frame-level outputs of a stream, ``note`` and ``onset`` ``(n, 88)`` at
    86 frames per second, written to float32 files as the batches come back (the caller
    closes them): memory holds one batch, not the track."""
    import numpy as np  # noqa: PLC0415

    files = ActivationFiles()
    pending: list[np.ndarray] = []
    samples = 0

    def flush() -> None:
        note, onset = model.infer(np.stack(pending)[:, :, None])
        trim = slice(OVERLAP_FRAMES // 2, -(OVERLAP_FRAMES // 2))
        files.append(
            note[:, trim, :].reshape(-1, note.shape[-1]),
            onset[:, trim, :].reshape(-1, onset.shape[-1]),
        )
        pending.clear()

    try:
        for window, seen in windows(blocks):
            samples = seen
            pending.append(window)
            if len(pending) >= model.handler.batch:
                flush()
        if pending:
            flush()
        files.finish(int(np.floor(samples * (FPS / SAMPLE_RATE))))
    except BaseException:
        files.close()
        raise
    return files


def frame_times(frames: np.ndarray) -> np.ndarray:
    """``basic_pitch.note_creation.model_frames_to_time`` of the given frame indices (the
    package computes it for every frame of the track; it is elementwise)."""
    import librosa  # noqa: PLC0415 - the models extra (basic-pitch's own dependency)
    import numpy as np  # noqa: PLC0415
    from basic_pitch.constants import (  # noqa: PLC0415 - the models extra
        ANNOT_N_FRAMES,
        AUDIO_N_SAMPLES,
        AUDIO_SAMPLE_RATE,
    )

    original = librosa.core.frames_to_time(frames, sr=AUDIO_SAMPLE_RATE, hop_length=FFT_HOP)
    window_numbers = np.floor(frames / ANNOT_N_FRAMES)
    window_offset = (FFT_HOP / AUDIO_SAMPLE_RATE) * (
        ANNOT_N_FRAMES - (AUDIO_N_SAMPLES / FFT_HOP)
    ) + 0.0018
    return np.asarray(original - (window_offset * window_numbers))


def notes_of(files: ActivationFiles) -> list[tuple[float, float, int, float]]:
    """Basic Pitch's notes (onset s, offset s, MIDI pitch, amplitude) from its model output,
    as the package's ``model_output_to_notes`` makes them with its ``predict`` defaults,
    computed with memory flat in track length (:mod:`.note_creation`)."""
    import numpy as np  # noqa: PLC0415

    note_creation()  # the package's constants, without its runtime warnings
    events = notes_from_files(
        files,
        onset_thresh=0.5,
        frame_thresh=0.3,
        min_note_len=int(np.round(MIN_NOTE_MS / 1000 * (SAMPLE_RATE / FFT_HOP))),
        melodia_trick=True,
    )
    if not events:
        return []
    starts = frame_times(np.array([e[0] for e in events]))
    ends = frame_times(np.array([e[1] for e in events]))
    return [
        (float(s), float(e), int(ev[2]), float(ev[3]))
        for s, e, ev in zip(starts, ends, events, strict=True)
    ]


@analysis(
    inputs={"audio": SourceAudio(sample_rate=SAMPLE_RATE, mono=True, stream=True)},
    output=Json(),
    code_version="1",
    model=MODEL,
)
def note_events(audio: AudioStream, model: LoadedModel) -> dict[str, Any]:
    """Notes (onset and offset in seconds, MIDI pitch, amplitude) transcribed by Spotify's
    Basic Pitch (ONNX, 22.05 kHz mono), in onset order."""
    files = model_output(iter(audio), model)
    try:
        notes = sorted(notes_of(files))
    finally:
        files.close()
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
