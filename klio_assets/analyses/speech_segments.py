"""``speech_segments``: where people speak, with Silero VAD (the ONNX model in ``silero-vad``).

The model is the ``silero_vad.onnx`` shipped inside the ``silero-vad`` package (no download at
run time), run with onnxruntime; the package's own dependency on torch is not needed. The audio
is decoded at 16 kHz mono and streamed (memory flat in track length) through the model 512
samples at a time, each window preceded by the last 64 samples of the one before and the
model's recurrent state carried over: exactly what the package's ``OnnxWrapper`` does. The
per-window speech probabilities become segments with :func:`speech_timestamps`, a port of the
package's ``get_speech_timestamps_from_probs`` with its defaults (threshold 0.5, at least 250 ms
of speech, 100 ms of silence to end a segment, 30 ms of padding); a test checks it against the
package's own function.

The model is recurrent, so the windows of one track are stepped in order, one call each (the
declaration's ``batch=1``); tracks of a process share one loaded model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from klio_assets.worker.analysis import AudioStream, LoadedModel, OnnxModel, SourceAudio, analysis
from klio_assets.worker.outputs import Json

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
MODEL = OnnxModel(path="silero_vad:data/silero_vad.onnx", version="silero-vad-6.2.3", batch=1)


class SpeechParams(BaseModel):
    """Parameters of ``speech_segments`` (Silero's ``get_speech_timestamps`` defaults)."""

    threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability threshold.")
    min_speech_ms: int = Field(250, ge=0, description="Shorter speech segments are dropped.")
    min_silence_ms: int = Field(100, ge=0, description="Silence that ends a segment.")
    speech_pad_ms: int = Field(30, ge=0, description="Padding added to each segment.")


def speech_probabilities(blocks: Any, session: Any) -> tuple[list[float], int]:
    """Silero VAD's speech probability per 512-sample window of a 16 kHz mono stream.

    Returns
    -------
    probs : list of float
        One per window (the last window zero-padded).
    samples : int
        Samples in the stream.
    """
    import numpy as np  # noqa: PLC0415

    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    probs: list[float] = []
    carry = np.zeros(0, np.float32)
    samples = 0

    def step(chunk: np.ndarray) -> None:
        nonlocal state, context
        x = np.concatenate([context, chunk[None, :]], axis=1)
        out, state = session.run(None, {"input": x, "state": state, "sr": sr})
        probs.append(float(out[0, 0]))
        context = x[:, -CONTEXT:]

    for block in blocks:
        block = np.asarray(block, np.float32)
        samples += len(block)
        carry = np.concatenate([carry, block]) if len(carry) else block
        whole = len(carry) // WINDOW * WINDOW
        for start in range(0, whole, WINDOW):
            step(carry[start : start + WINDOW])
        carry = carry[whole:]
    if len(carry):
        step(np.pad(carry, (0, WINDOW - len(carry))))
    return probs, samples


def speech_timestamps(
    probs: list[float],
    *,
    samples: int,
    sampling_rate: int = SAMPLE_RATE,
    threshold: float = 0.5,
    min_speech_duration_ms: int = 250,
    min_silence_duration_ms: int = 100,
    speech_pad_ms: int = 30,
) -> list[dict[str, int]]:
    """Speech segments (in samples) from per-window probabilities.

    A port of ``silero_vad.utils_vad.get_speech_timestamps_from_probs`` (silero-vad 6.2.3)
    with no maximum segment length, which is its default.
    """
    window = WINDOW if sampling_rate == 16000 else 256
    min_speech = sampling_rate * min_speech_duration_ms / 1000
    pad = sampling_rate * speech_pad_ms / 1000
    min_silence = sampling_rate * min_silence_duration_ms / 1000
    neg_threshold = max(threshold - 0.15, 0.01)
    triggered = False
    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    temp_end = 0
    for i, prob in enumerate(probs):
        cur = window * i
        if prob >= threshold and temp_end:
            temp_end = 0
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = cur
            continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech:
                speeches.append(current)
            current = {}
            temp_end = 0
            triggered = False
    if current and samples - current["start"] > min_speech:
        current["end"] = samples
        speeches.append(current)
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(samples, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(samples, speech["end"] + pad))
    return speeches


@analysis(
    inputs={"audio": SourceAudio(sample_rate=SAMPLE_RATE, mono=True, stream=True)},
    output=Json(),
    code_version="1",
    params=SpeechParams,
    model=MODEL,
)
def speech_segments(audio: AudioStream, params: SpeechParams, model: LoadedModel) -> dict[str, Any]:
    """Speech segments ([start, end] in seconds) and the share of the track that is speech,
    from Silero VAD (ONNX, 16 kHz mono)."""
    probs, samples = speech_probabilities(iter(audio), model.session())
    spans = speech_timestamps(
        probs,
        samples=samples,
        threshold=params.threshold,
        min_speech_duration_ms=params.min_speech_ms,
        min_silence_duration_ms=params.min_silence_ms,
        speech_pad_ms=params.speech_pad_ms,
    )
    segments = [
        [round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3)] for s in spans
    ]
    speech_s = sum(s["end"] - s["start"] for s in spans) / SAMPLE_RATE
    duration = samples / SAMPLE_RATE
    return {
        "segments": segments,
        "segment_count": len(segments),
        "speech_s": round(speech_s, 3),
        "speech_ratio": round(speech_s / duration, 4) if duration else 0.0,
        "model": MODEL.version,
    }
