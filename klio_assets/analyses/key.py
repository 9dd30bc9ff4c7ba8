"""``key``: the musical key, its mode and a confidence, from a chroma of the downsampled audio.

The method is Krumhansl-Schmuckler's (Krumhansl 1990, *Cognitive Foundations of Musical
Pitch*): the track's mean chroma (energy per pitch class) is correlated with the
Krumhansl-Kessler major and minor key profiles rotated to each of the 12 tonics; the best of
the 24 correlations names the key. The confidence is that correlation (Pearson r, -1..1) and
the margin over the runner-up is reported beside it: a relative or dominant key close behind
means the call is uncertain.

The chroma is computed from the source decoded at 11025 Hz mono, streamed block by block
(memory flat in track length): Hann-windowed 4096-point STFT frames (2.7 Hz bins), bins from
55 Hz to 2 kHz folded onto pitch classes with a triangular weight around each semitone, and a
square-root compression so that a few loud notes do not outweigh the harmony.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from klio_assets.worker.analysis import AudioStream, SourceAudio, analysis
from klio_assets.worker.outputs import Json

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


SAMPLE_RATE = 11025
N_FFT = 4096
HOP = 2048
FMIN, FMAX = 55.0, 2000.0
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
#: Krumhansl-Kessler probe-tone profiles, tonic first (tuples: numpy is imported where used).
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def chroma_filter(sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Weights folding STFT magnitudes onto the 12 pitch classes.

    Returns
    -------
    np.ndarray [shape=(12, n_fft // 2 + 1)]
        Row 0 is C.
    """
    import numpy as np  # noqa: PLC0415

    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    weights = np.zeros((12, len(freqs)))
    band = (freqs >= FMIN) & (freqs <= FMAX)
    midi = 69 + 12 * np.log2(freqs[band] / 440.0)
    nearest = np.round(midi)
    weight = np.clip(1.0 - 2.0 * np.abs(midi - nearest), 0.0, None)  # 1 on pitch, 0 a 1/4 off
    columns = np.flatnonzero(band)
    weights[(nearest.astype(np.int64) % 12), columns] = weight
    return weights


def mean_chroma(blocks: Any, *, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """The mean chroma of a stream of mono blocks, and the number of frames it averages."""
    import numpy as np  # noqa: PLC0415

    fold = chroma_filter(sr)
    window = np.hanning(N_FFT).astype(np.float32)
    total = np.zeros(12)
    frames = 0
    carry = np.zeros(0, np.float32)
    for block in blocks:
        carry = np.concatenate([carry, np.asarray(block, np.float32)])
        count = 0 if len(carry) < N_FFT else 1 + (len(carry) - N_FFT) // HOP
        if count:
            idx = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
            spectrum = np.abs(np.fft.rfft(carry[idx] * window, axis=1))
            total += np.sqrt(spectrum @ fold.T).sum(axis=0)
            frames += count
            carry = carry[count * HOP :]
    return (total / frames if frames else total), frames


def estimate_key(chroma: np.ndarray) -> dict[str, Any]:
    """Krumhansl-Schmuckler key of a mean chroma.

    Parameters
    ----------
    chroma : np.ndarray [shape=(12,)]
        Energy per pitch class, C first.

    Returns
    -------
    dict
        ``key`` (tonic name), ``mode`` (``major``/``minor``), ``confidence`` (Pearson r of
        the best profile), ``margin`` (over the second best), ``runner_up``; ``key`` and
        ``mode`` are ``None`` for a chroma with no variation (silence, noise).
    """
    import numpy as np  # noqa: PLC0415

    if not np.any(chroma) or np.ptp(chroma) <= 1e-9 * np.max(np.abs(chroma)):
        return {"key": None, "mode": None, "confidence": 0.0, "margin": 0.0, "runner_up": None}
    scores = []
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(np.array(profile), tonic))[0, 1])
            scores.append((r, PITCH_CLASSES[tonic], mode))
    scores.sort(key=lambda s: s[0], reverse=True)
    (best, key, mode), (second, key2, mode2) = scores[0], scores[1]
    return {
        "key": key,
        "mode": mode,
        "confidence": round(best, 4),
        "margin": round(best - second, 4),
        "runner_up": f"{key2} {mode2}",
    }


@analysis(
    inputs={"audio": SourceAudio(sample_rate=SAMPLE_RATE, mono=True, stream=True)},
    output=Json(),
    code_version="1",
)
def key(audio: AudioStream) -> dict[str, Any]:
    """Musical key (tonic, major/minor) and a confidence (Krumhansl-Schmuckler key profiles on
    a chroma of the audio at 11025 Hz), toward Spotify's former Audio Features ``key``/``mode``."""
    chroma, frames = mean_chroma(iter(audio))
    found = estimate_key(chroma)
    return {
        **found,
        "chroma": [round(float(c), 5) for c in chroma / (chroma.sum() or 1.0)],
        "frames": frames,
        "method": "Krumhansl-Schmuckler (Krumhansl-Kessler profiles), STFT chroma 55-2000 Hz",
    }
