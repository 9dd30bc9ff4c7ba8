"""Output kinds: how an analysis' per-track result is written, read back and described.

Open formats only: FLAC/WAV for audio, JSON for scalars and table rows, ``.npy`` (written and
read with ``allow_pickle=False``) for arrays, PNG for images. Nothing is ever pickled.

Writers receive a local temporary path; the storage layer commits it atomically.
This module imports nothing from Dagster.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klio_assets.errors import OutputError, ParameterError
from klio_assets.worker import audio as audio_io
from klio_assets.worker.values import Audio, AudioStream

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


if TYPE_CHECKING:
    from klio_assets.worker.storage import Storage

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIDI_SIGNATURE = b"MThd"
_AUDIO_EXTENSIONS = {"FLAC": "flac", "WAV": "wav", "OGG": "ogg", "AIFF": "aiff"}
#: The sample encodings libsndfile writes in each format (``soundfile.check_format``), known
#: without importing soundfile and numpy when an analysis is defined (listing the analyses is
#: the all-done answer of ``klio-assets run``); a test keeps it equal to libsndfile's answer.
AUDIO_SUBTYPES = {
    "FLAC": frozenset({"PCM_16", "PCM_24", "PCM_S8"}),
    "WAV": frozenset(
        {
            "ALAW", "DOUBLE", "FLOAT", "G721_32", "GSM610", "IMA_ADPCM", "MPEG_LAYER_III",
            "MS_ADPCM", "NMS_ADPCM_16", "NMS_ADPCM_24", "NMS_ADPCM_32", "PCM_16", "PCM_24",
            "PCM_32", "PCM_U8", "ULAW",
        }
    ),
    "OGG": frozenset({"OPUS", "VORBIS"}),
    "AIFF": frozenset(
        {
            "ALAW", "DOUBLE", "DWVW_12", "DWVW_16", "DWVW_24", "FLOAT", "GSM610", "IMA_ADPCM",
            "PCM_16", "PCM_24", "PCM_32", "PCM_S8", "PCM_U8", "ULAW",
        }
    ),
}  # fmt: skip
#: At most this many top-level scalars of a JSON result are copied into Dagster metadata.
MAX_METADATA_SCALARS = 24


def _json_default(value: Any) -> Any:
    import numpy as np  # noqa: PLC0415

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
    import numpy as np  # noqa: PLC0415

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

    Subclasses define :attr:`extension`, :meth:`write` and :meth:`read` for one local file.
    The engine goes through :meth:`commit`, :meth:`load`, :meth:`copy` and :meth:`describe_at`,
    which handle storage; an output made of several files (:class:`AudioFiles`) overrides
    those instead.
    """

    extension: str = ""
    kind: str = ""

    def commit(self, storage: Storage, uri: str, value: Any) -> dict[str, Any]:
        """Write ``value`` and commit it atomically at ``uri``; return its metadata."""
        with storage.atomic_path(uri) as tmp:
            return self.write(value, tmp)

    def load(self, storage: Storage, uri: str, *, stream: bool, stack: contextlib.ExitStack) -> Any:
        """Read the output at ``uri`` (local copies live as long as ``stack``)."""
        path = stack.enter_context(storage.local_copy(uri))
        return self.read(path, stream=stream)

    def copy(self, storage: Storage, src: str, dst: str) -> None:
        """Copy a committed output (content shared between tracks)."""
        storage.copy(src, dst)

    def describe_at(self, storage: Storage, uri: str) -> dict[str, Any]:
        """:meth:`describe` of a committed output."""
        with storage.local_copy(uri) as path:
            return self.describe(path)

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
            raise ParameterError(
                f"audio output format {self.format!r} is not one of {sorted(_AUDIO_EXTENSIONS)}"
            )
        if self.subtype not in AUDIO_SUBTYPES[self.format]:
            raise ParameterError(
                f"audio output subtype {self.subtype!r} is not valid for {self.format}"
            )

    @property
    def extension(self) -> str:  # type: ignore[override]
        return _AUDIO_EXTENSIONS[self.format]

    def write(self, value: Any, path: str) -> dict[str, Any]:
        import soundfile as sf  # noqa: PLC0415

        if isinstance(value, AudioStream):
            blocks, rate, channels = value.frame_blocks(), value.sample_rate, value.channels
        elif isinstance(value, Audio):
            blocks, rate, channels = value.frame_blocks(), value.sample_rate, value.channels
        else:
            raise ParameterError(
                f"an AudioFile output needs Audio or AudioStream, got {type(value).__name__}"
            )
        frames = audio_io.write_audio(
            path,
            blocks,
            sample_rate=rate,
            channels=channels,
            format=self.format,
            subtype=self.subtype,
        )
        if frames == 0:
            # libsndfile leaves a 0-byte FLAC (a header-only file for others) that no reader
            # opens: the track fails instead of an unreadable output counting as done.
            raise OutputError(
                f"no audio frames to write as {self.format} at {rate} Hz: the source is too "
                "short to leave one frame at this rate"
            )
        try:
            readable = sf.info(path).frames == frames
        except sf.LibsndfileError as exc:
            raise OutputError(f"the {self.format} file written cannot be read back: {exc}") from exc
        if not readable:
            raise OutputError(f"the {self.format} file written does not hold its {frames} frames")
        return {
            "duration_s": frames / rate,
            "sample_rate": rate,
            "channels": channels,
            "frames": frames,
        }

    def read(self, path: str, *, stream: bool = False) -> Any:
        import numpy as np  # noqa: PLC0415
        import soundfile as sf  # noqa: PLC0415

        if stream:
            info = sf.info(path)

            def _blocks() -> Iterator[np.ndarray]:
                with audio_io.open_audio_blocks(path) as (_, _, blocks):
                    yield from blocks

            return AudioStream(
                _blocks(), sample_rate=int(info.samplerate), channels=int(info.channels)
            )
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        samples = data[:, 0].copy() if data.shape[1] == 1 else np.ascontiguousarray(data.T)
        return Audio(samples, int(rate))

    def describe(self, path: str) -> dict[str, Any]:
        import soundfile as sf  # noqa: PLC0415

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
        import numpy as np  # noqa: PLC0415

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
        import numpy as np  # noqa: PLC0415

        array = np.asarray(value)
        if array.dtype == object:
            raise ParameterError(
                "a NumpyArray output must not have dtype=object (it would need pickle)"
            )
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        return {"shape": list(array.shape), "dtype": str(array.dtype)}

    def read(self, path: str, *, stream: bool = False) -> Any:
        import numpy as np  # noqa: PLC0415

        return np.load(path, allow_pickle=False)

    def describe(self, path: str) -> dict[str, Any]:
        import numpy as np  # noqa: PLC0415

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
            raise ParameterError(
                f"an Image output needs PNG bytes or a figure, got {type(value).__name__}"
            )
        return {}

    def read(self, path: str, *, stream: bool = False) -> Any:
        with open(path, "rb") as fh:
            return fh.read()


@dataclass(frozen=True)
class MidiFile(OutputKind):
    """A standard MIDI file per track: the SMF bytes, or an object with ``write(file)``
    (``pretty_midi.PrettyMIDI``, ``mido.MidiFile``...)."""

    kind = "midi"
    extension = "mid"

    def write(self, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif hasattr(value, "write"):
            buffer = io.BytesIO()
            value.write(buffer)
            data = buffer.getvalue()
        else:
            raise ParameterError(
                f"a MidiFile output needs MIDI bytes or an object with write(), got "
                f"{type(value).__name__}"
            )
        if not data.startswith(_MIDI_SIGNATURE):
            raise ParameterError("a MidiFile output must be a standard MIDI file (MThd header)")
        with open(path, "wb") as fh:
            fh.write(data)
        return {"size_bytes": len(data)}

    def read(self, path: str, *, stream: bool = False) -> Any:
        with open(path, "rb") as fh:
            return fh.read()


_PART_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class AudioFiles(OutputKind):
    """Several audio files per track (stems): one file per part, plus a manifest.

    The parts go next to the manifest as ``<track_id>.<part>.<ext>``; the manifest
    ``<track_id>.parts.json`` is committed last and is what marks the output complete, so a
    run killed between two parts never leaves an output that looks done.

    Parameters
    ----------
    parts : tuple of str
        Part names (lowercase letters, digits, ``_``), e.g. ``("vocals", "accompaniment")``.
    format, subtype : str
        As for :class:`AudioFile`.

    The function returns a mapping of part name to
    :class:`~klio_assets.worker.analysis.Audio`; downstream analyses receive the same.
    """

    parts: tuple[str, ...] = ()
    format: str = "FLAC"
    subtype: str = "PCM_16"
    kind = "audio_files"
    extension = "parts.json"

    def __post_init__(self) -> None:
        if not self.parts or any(not p or not set(p) <= _PART_CHARS for p in self.parts):
            raise ParameterError(
                f"AudioFiles parts {self.parts!r} must be non-empty names of [a-z0-9_]"
            )
        if len(set(self.parts)) != len(self.parts):
            raise ParameterError(f"AudioFiles parts {self.parts!r} repeat a name")
        AudioFile(format=self.format, subtype=self.subtype)  # validates the pair

    def _part_uri(self, storage: Storage, uri: str, part: str) -> str:
        # Storage URIs are "/"-joined checked components (local ones too); part names are
        # [a-z0-9_], so a part file never collides with another track's files.
        folder, name = uri.rsplit("/", 1)
        stem = name[: -len(self.extension) - 1]
        return f"{folder}/{stem}.{part}.{_AUDIO_EXTENSIONS[self.format]}"

    def commit(self, storage: Storage, uri: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping) or set(value) != set(self.parts):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ParameterError(
                f"an AudioFiles output needs a mapping with parts {list(self.parts)}, got {got}"
            )
        single = AudioFile(format=self.format, subtype=self.subtype)
        manifest: dict[str, Any] = {"parts": {}}
        uris = {part: self._part_uri(storage, uri, part) for part in self.parts}
        if any(isinstance(v, AudioStream) for v in value.values()):
            # Streams made by lockstep_streams advance together: their parts are written at
            # the same time, each in its own thread, so that none waits for the whole track.
            with concurrent.futures.ThreadPoolExecutor(len(self.parts)) as pool:
                futures = {
                    part: pool.submit(single.commit, storage, uris[part], value[part])
                    for part in self.parts
                }
                described_parts = {part: f.result() for part, f in futures.items()}
        else:
            described_parts = {
                part: single.commit(storage, uris[part], value[part]) for part in self.parts
            }
        for part in self.parts:
            manifest["parts"][part] = {
                "file": uris[part].rsplit("/", 1)[1],
                **described_parts[part],
            }
        first = manifest["parts"][self.parts[0]]
        manifest.update({k: first[k] for k in ("duration_s", "sample_rate", "channels")})
        storage.write_json(uri, manifest)
        return {
            **{k: first[k] for k in ("duration_s", "sample_rate", "channels")},
            **{f"{part}_uri": self._part_uri(storage, uri, part) for part in self.parts},
        }

    def load(self, storage: Storage, uri: str, *, stream: bool, stack: contextlib.ExitStack) -> Any:
        single = AudioFile(format=self.format, subtype=self.subtype)
        return {
            part: single.load(
                storage, self._part_uri(storage, uri, part), stream=stream, stack=stack
            )
            for part in self.parts
        }

    def copy(self, storage: Storage, src: str, dst: str) -> None:
        for part in self.parts:
            storage.copy(self._part_uri(storage, src, part), self._part_uri(storage, dst, part))
        storage.copy(src, dst)  # the manifest last: it marks the copy complete

    def describe_at(self, storage: Storage, uri: str) -> dict[str, Any]:
        manifest = storage.read_json(uri)
        return {
            **{k: manifest[k] for k in ("duration_s", "sample_rate", "channels") if k in manifest},
            **{f"{part}_uri": self._part_uri(storage, uri, part) for part in self.parts},
        }

    def part_uris(self, storage: Storage, uri: str) -> dict[str, str]:
        """Where each part of the output at ``uri`` lives."""
        return {part: self._part_uri(storage, uri, part) for part in self.parts}

    def spec(self) -> dict[str, Any]:
        return {
            **super().spec(),
            "parts": list(self.parts),
            "format": self.format,
            "subtype": self.subtype,
        }
