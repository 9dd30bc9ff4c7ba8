"""Output kinds: how an analysis' per-track result is written, read back and described.

Open formats only: FLAC/WAV for audio, JSON for scalars and table rows, ``.npy`` (written and
read with ``allow_pickle=False``) for arrays, PNG for images. Nothing is ever pickled.

Writers receive a local temporary path; the storage layer commits it atomically.
This module imports nothing from Dagster.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from klio_assets.errors import ParameterError
from klio_assets.worker import audio as audio_io

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_AUDIO_EXTENSIONS = {"FLAC": "flac", "WAV": "wav", "OGG": "ogg", "AIFF": "aiff"}
#: At most this many top-level scalars of a JSON result are copied into Dagster metadata.
MAX_METADATA_SCALARS = 24


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_strict(obj: Any) -> bytes:
    """JSON bytes; NaN and infinity are refused (they are not JSON)."""
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False, sort_keys=True).encode()
    except ValueError as exc:
        raise ParameterError(f"result is not valid JSON: {exc} (NaN or infinity?)") from exc
    except TypeError as exc:
        raise ParameterError(f"result is not valid JSON: {exc}") from exc


def scalar_metadata(obj: Any) -> dict[str, Any]:
    """Top-level finite numbers, booleans and short strings of a JSON-like result."""
    if not isinstance(obj, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if len(out) >= MAX_METADATA_SCALARS:
            break
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or (isinstance(value, int)):
            out[str(key)] = value
        elif isinstance(value, float) and math.isfinite(value):
            out[str(key)] = value
        elif isinstance(value, str) and len(value) <= 200:
            out[str(key)] = value
    return out


class OutputKind:
    """Base of output kinds.

    Subclasses define :attr:`extension`, :meth:`write` and :meth:`read`.
    """

    extension: str = ""
    kind: str = ""

    def write(self, value: Any, path: str) -> dict[str, Any]:
        """Write ``value`` to the local ``path``; return metadata describing it."""
        raise NotImplementedError

    def read(self, path: str, *, stream: bool = False) -> Any:
        """Read an output back (for a downstream analysis)."""
        raise NotImplementedError

    def describe(self, path: str) -> dict[str, Any]:
        """Metadata readable cheaply from a committed output (used when it is skipped)."""
        return {}

    def spec(self) -> dict[str, Any]:
        """A JSON description, shown as asset metadata."""
        return {"kind": self.kind, "extension": self.extension}


@dataclass(frozen=True)
class AudioFile(OutputKind):
    """An audio file per track.

    Parameters
    ----------
    format : str
        ``"FLAC"`` (default), ``"WAV"``, ``"OGG"`` or ``"AIFF"``.
    subtype : str
        Sample encoding, ``"PCM_16"`` by default; ``"PCM_24"`` or ``"FLOAT"`` (WAV) keep more.

    The function returns an :class:`~klio_assets.worker.analysis.Audio` or
    :class:`~klio_assets.worker.analysis.AudioStream`.
    """

    format: str = "FLAC"
    subtype: str = "PCM_16"
    kind = "audio"

    def __post_init__(self) -> None:
        if self.format not in _AUDIO_EXTENSIONS:
            raise ParameterError(f"audio output format {self.format!r} is not one of {sorted(_AUDIO_EXTENSIONS)}")
        if not sf.check_format(self.format, self.subtype):
            raise ParameterError(f"audio output subtype {self.subtype!r} is not valid for {self.format}")

    @property
    def extension(self) -> str:  # type: ignore[override]
        return _AUDIO_EXTENSIONS[self.format]

    def write(self, value: Any, path: str) -> dict[str, Any]:
        from klio_assets.worker.analysis import Audio, AudioStream  # noqa: PLC0415 - cycle

        if isinstance(value, AudioStream):
            blocks, rate, channels = value.frame_blocks(), value.sample_rate, value.channels
        elif isinstance(value, Audio):
            blocks, rate, channels = value.frame_blocks(), value.sample_rate, value.channels
        else:
            raise ParameterError(
                f"an AudioFile output needs Audio or AudioStream, got {type(value).__name__}"
            )
        frames = audio_io.write_audio(
            path, blocks, sample_rate=rate, channels=channels, format=self.format, subtype=self.subtype
        )
        return {"duration_s": frames / rate, "sample_rate": rate, "channels": channels, "frames": frames}

    def read(self, path: str, *, stream: bool = False) -> Any:
        from klio_assets.worker.analysis import Audio, AudioStream  # noqa: PLC0415 - cycle

        if stream:
            info = sf.info(path)

            def _blocks() -> Iterator[np.ndarray]:
                with audio_io.open_audio_blocks(path) as (_, _, blocks):
                    yield from blocks

            return AudioStream(_blocks(), sample_rate=int(info.samplerate), channels=int(info.channels))
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        samples = data[:, 0].copy() if data.shape[1] == 1 else np.ascontiguousarray(data.T)
        return Audio(samples, int(rate))

    def describe(self, path: str) -> dict[str, Any]:
        info = sf.info(path)
        return {
            "duration_s": info.frames / info.samplerate,
            "sample_rate": int(info.samplerate),
            "channels": int(info.channels),
            "frames": int(info.frames),
        }

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "format": self.format, "subtype": self.subtype}


@dataclass(frozen=True)
class Json(OutputKind):
    """A JSON document per track (a dict of scalars, lists, nested dicts).

    Top-level scalars are also shown in the track's Dagster metadata.
    """

    kind = "json"
    extension = "json"

    def write(self, value: Any, path: str) -> dict[str, Any]:
        data = dumps_strict(value)
        with open(path, "wb") as fh:
            fh.write(data)
        return scalar_metadata(value)

    def read(self, path: str, *, stream: bool = False) -> Any:
        with open(path, "rb") as fh:
            return json.load(fh)

    def describe(self, path: str) -> dict[str, Any]:
        return scalar_metadata(self.read(path))


@dataclass(frozen=True)
class TableRow(Json):
    """One row of a catalog-level table: a flat dict of scalars, stored as JSON."""

    kind = "table_row"

    def write(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ParameterError(f"a TableRow output needs a dict, got {type(value).__name__}")
        nested = [k for k, v in value.items() if isinstance(v, (dict, list, tuple, np.ndarray))]
        if nested:
            raise ParameterError(f"a TableRow must be flat; columns {nested} are not scalars")
        return super().write(value, path)


@dataclass(frozen=True)
class NumpyArray(OutputKind):
    """A numpy array per track, as ``.npy`` (loadable with ``allow_pickle=False``)."""

    kind = "array"
    extension = "npy"

    def write(self, value: Any, path: str) -> dict[str, Any]:
        array = np.asarray(value)
        if array.dtype == object:
            raise ParameterError("a NumpyArray output must not have dtype=object (it would need pickle)")
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        return {"shape": list(array.shape), "dtype": str(array.dtype)}

    def read(self, path: str, *, stream: bool = False) -> Any:
        return np.load(path, allow_pickle=False)

    def describe(self, path: str) -> dict[str, Any]:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return {"shape": list(array.shape), "dtype": str(array.dtype)}


@dataclass(frozen=True)
class Image(OutputKind):
    """A PNG image per track: PNG bytes, or a matplotlib figure (closed after saving)."""

    kind = "image"
    extension = "png"

    def write(self, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, (bytes, bytearray)):
            if not bytes(value[:8]) == _PNG_SIGNATURE:
                raise ParameterError("an Image output given bytes must be PNG data")
            with open(path, "wb") as fh:
                fh.write(value)
        elif hasattr(value, "savefig"):
            value.savefig(path, format="png")
            with contextlib.suppress(ImportError):
                import matplotlib.pyplot as plt  # noqa: PLC0415 - optional

                plt.close(value)
        else:
            raise ParameterError(f"an Image output needs PNG bytes or a figure, got {type(value).__name__}")
        return {}

    def read(self, path: str, *, stream: bool = False) -> Any:
        with open(path, "rb") as fh:
            return fh.read()
