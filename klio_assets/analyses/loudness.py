"""``loudness``: EBU R128 / ITU-R BS.1770-4 loudness of the source, at its native rate.

Integrated loudness (LUFS), loudness range (LU) and sample peak come from libebur128 (through
``pyebur128``), fed block by block so that memory does not grow with duration. True peak is the
peak of the signal oversampled 4x with soxr (high quality), the BS.1770-4 method; it agrees with
libebur128's own true-peak mode and costs a quarter of it.

Measured at the source's native rate on purpose: resampling first shifts integrated loudness by
up to 1 LU (the resampler's passband ripple and the K-weighting filter's rate dependence).
"""

from __future__ import annotations

import math
from typing import Any

from klio_assets.errors import ParameterError
from klio_assets.worker.analysis import AudioStream, Result, SourceAudio, analysis
from klio_assets.worker.outputs import Json

#: libebur128 channel roles for the usual layouts (WAVE/SMPTE channel order).
_LAYOUTS = {
    1: ("CENTER",),
    2: ("LEFT", "RIGHT"),
    3: ("LEFT", "RIGHT", "CENTER"),
    4: ("LEFT", "RIGHT", "LEFT_SURROUND", "RIGHT_SURROUND"),
    5: ("LEFT", "RIGHT", "CENTER", "LEFT_SURROUND", "RIGHT_SURROUND"),
    6: ("LEFT", "RIGHT", "CENTER", "UNUSED", "LEFT_SURROUND", "RIGHT_SURROUND"),  # 5.1: LFE unused
}
TRUE_PEAK_OVERSAMPLING = 4


def _db(value: float) -> float | None:
    return round(20 * math.log10(value), 3) if value > 0 else None


def _finite(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(value) else None


def measure_loudness(audio: AudioStream) -> dict[str, Any]:
    """EBU R128 figures of a stream of audio blocks.

    Parameters
    ----------
    audio : AudioStream
        Any rate, 1 to 6 channels (more are measured with channels beyond the 6th unused).

    Returns
    -------
    dict
        ``loudness_lufs`` (integrated, LUFS; ``None`` for silence, which has no loudness),
        ``loudness_range_lu`` (LU), ``sample_peak_dbfs`` and ``true_peak_dbtp`` (dB, ``None``
        for digital silence) and the rate measured at.
    """
    import numpy as np  # noqa: PLC0415
    import pyebur128  # noqa: PLC0415 - keeps `import klio_assets.analyses` light
    import soxr  # noqa: PLC0415

    if audio.sample_rate < 8000:
        raise ParameterError(
            f"loudness needs a sample rate of at least 8000 Hz, got {audio.sample_rate}"
        )
    modes = pyebur128.MeasurementMode
    state = pyebur128.R128State(
        audio.channels, audio.sample_rate, modes.MODE_I | modes.MODE_LRA | modes.MODE_SAMPLE_PEAK
    )
    roles = _LAYOUTS.get(audio.channels, _LAYOUTS[6] + ("UNUSED",) * max(0, audio.channels - 6))
    for index, role in enumerate(roles):
        state.set_channel(index, getattr(pyebur128.ChannelType, role))
    oversampler = soxr.ResampleStream(
        audio.sample_rate,
        audio.sample_rate * TRUE_PEAK_OVERSAMPLING,
        audio.channels,
        dtype="float32",
        quality="HQ",
    )
    true_peak = 0.0
    for block in audio.frame_blocks():
        block = np.ascontiguousarray(block, dtype=np.float32)
        if not len(block):
            continue
        state.add_frames(block.ravel(), len(block))
        over = oversampler.resample_chunk(block)
        if over.size:
            true_peak = max(true_peak, float(np.abs(over).max()))
    tail = oversampler.resample_chunk(np.zeros((0, audio.channels), np.float32), last=True)
    if tail.size:
        true_peak = max(true_peak, float(np.abs(tail).max()))
    sample_peak = max(
        (pyebur128.get_sample_peak(state, c) for c in range(audio.channels)), default=0.0
    )
    true_peak = max(true_peak, sample_peak)  # oversampling can only find higher peaks
    integrated = pyebur128.get_loudness_global(state) if audio.frames else -math.inf
    lra = pyebur128.get_loudness_range(state)
    return {
        "loudness_lufs": _finite(integrated),
        "loudness_range_lu": _finite(lra),
        "sample_peak_dbfs": _db(sample_peak),
        "true_peak_dbtp": _db(true_peak),
        "measured_sample_rate": audio.sample_rate,
        "method": f"ITU-R BS.1770-4 / EBU R128 (libebur128 {pyebur128.get_libebur128_version()}; "
        f"true peak: soxr {TRUE_PEAK_OVERSAMPLING}x oversampling)",
    }


@analysis(inputs={"audio": SourceAudio(stream=True)}, output=Json(), code_version="1")
def loudness(audio: AudioStream) -> Result:
    """EBU R128 integrated loudness (LUFS), loudness range (LU), sample peak (dBFS) and true
    peak (dBTP) of the source at its native rate, decoded once and measured block by block."""
    figures = measure_loudness(audio)
    note = (
        {} if figures["loudness_lufs"] is not None else {"note": "silent: no integrated loudness"}
    )
    return Result({**figures, **note})
