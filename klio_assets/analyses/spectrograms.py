"""``spectrogram``, ``mel_spectrogram`` and ``mfcc``: time-frequency arrays of the downsampled
audio, as ``.npy`` files (float32, loadable with ``allow_pickle=False``).

Each array is ``(bins, frames)``, librosa's layout; frame ``t`` is centred at
``t * hop_length / sample_rate`` seconds. The parameters are configurable per deployment
(``KLIO_ASSETS_PARAMS``), recorded in each track's metadata, and part of the output version, so
changing them never mixes arrays computed two ways. ``mfcc`` is computed from the
``mel_spectrogram`` array (the same steps ``librosa.feature.mfcc`` takes from audio), so it
follows the mel parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from klio_assets.analyses._librosa import librosa
from klio_assets.worker.analysis import Audio, Result, Upstream, analysis
from klio_assets.worker.outputs import NumpyArray

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


class StftParams(BaseModel):
    """Parameters of :func:`spectrogram`."""

    n_fft: int = Field(2048, ge=16, le=65536, description="FFT size, in samples.")
    hop_length: int = Field(512, ge=1, le=65536, description="Hop between frames, in samples.")
    top_db: float | None = Field(
        80.0, gt=0, description="Floor at this many dB below the peak (None: no floor)."
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> StftParams:
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length={self.hop_length} must not exceed n_fft={self.n_fft}")
        return self


class MelParams(StftParams):
    """Parameters of :func:`mel_spectrogram`."""

    n_mels: int = Field(128, ge=1, le=1024, description="Mel bands.")
    fmin: float = Field(0.0, ge=0, description="Lowest band edge, Hz.")
    fmax: float | None = Field(None, gt=0, description="Highest band edge, Hz (None: Nyquist).")


class MfccParams(BaseModel):
    """Parameters of :func:`mfcc`."""

    n_mfcc: int = Field(20, ge=1, le=256, description="Coefficients kept.")


def _recorded(audio: Audio, params: BaseModel, array: np.ndarray, units: str) -> dict[str, Any]:
    return {
        **{k: v for k, v in params.model_dump().items() if v is not None},
        "analysis_sample_rate": audio.sample_rate,
        "units": units,
        "frames": int(array.shape[-1]),
        "bins": int(array.shape[0]),
    }


@analysis(
    inputs={"audio": Upstream("downsampled_audio")},
    output=NumpyArray(),
    code_version="1",
    params=StftParams,
)
def spectrogram(audio: Audio, params: StftParams) -> Result:
    """STFT magnitude in dB (re 1.0 full scale), ``(1 + n_fft // 2, frames)`` float32:
    ``librosa.amplitude_to_db(abs(librosa.stft(y, n_fft=, hop_length=)), ref=1.0, top_db=)``."""
    import numpy as np  # noqa: PLC0415

    lr = librosa()
    magnitude = np.abs(lr.stft(audio.mono(), n_fft=params.n_fft, hop_length=params.hop_length))
    array = lr.amplitude_to_db(magnitude, ref=1.0, top_db=params.top_db).astype(np.float32)
    return Result(array, _recorded(audio, params, array, "dB re full scale (magnitude)"))


@analysis(
    inputs={"audio": Upstream("downsampled_audio")},
    output=NumpyArray(),
    code_version="1",
    params=MelParams,
)
def mel_spectrogram(audio: Audio, params: MelParams) -> Result:
    """Mel power spectrogram in dB (re 1.0), ``(n_mels, frames)`` float32:
    ``librosa.power_to_db(librosa.feature.melspectrogram(y, sr=, n_fft=, hop_length=, n_mels=,
    fmin=, fmax=), ref=1.0, top_db=)``."""
    import numpy as np  # noqa: PLC0415

    lr = librosa()
    power = lr.feature.melspectrogram(
        y=audio.mono(),
        sr=audio.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
    )
    array = lr.power_to_db(power, ref=1.0, top_db=params.top_db).astype(np.float32)
    return Result(array, _recorded(audio, params, array, "dB re full scale (mel power)"))


@analysis(
    inputs={"mel": Upstream("mel_spectrogram")},
    output=NumpyArray(),
    code_version="1",
    params=MfccParams,
)
def mfcc(mel: np.ndarray, params: MfccParams) -> Result:
    """Mel-frequency cepstral coefficients, ``(n_mfcc, frames)`` float32: the type-II
    orthonormal DCT of the mel spectrogram in dB, as ``librosa.feature.mfcc`` computes them."""
    import numpy as np  # noqa: PLC0415

    lr = librosa()
    array = lr.feature.mfcc(S=np.asarray(mel, dtype=np.float32), n_mfcc=params.n_mfcc).astype(
        np.float32
    )
    return Result(
        array,
        {**params.model_dump(), "frames": int(array.shape[-1]), "units": "cepstral coefficients"},
    )
