"""Reading, converting and writing audio, block by block.

Decoding uses libsndfile (through soundfile) for the formats it reads (WAV, FLAC, MP3, OGG
Vorbis, Opus, AIFF...) and the ffmpeg command line for the rest (M4A/AAC, WMA...). Both are
read in blocks, downmixed with ``(L + R) * 0.5`` and resampled with soxr's streaming
resampler, so memory stays flat whatever the duration (a 2-hour file peaks near 35 MB where a
whole-file read needs gigabytes).

Layout convention (librosa's): mono audio is ``(n,)``, multichannel audio ``(channels, n)``,
samples are float32 in [-1, 1].
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from klio_assets.errors import DecodeError, DecodeTimeoutError, ParameterError
from klio_assets.worker import containers, decoder_log

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np
    import soxr


#: Frames per block when decoding; 256k frames of stereo float32 is 2 MiB. Bigger blocks
#: mean fewer trips through Python per second of audio, which matters when a worker's lanes
#: are threads sharing one GIL: 3.5 % less wall and 3 % less CPU than 64k frames for the
#: same downsampling in two threads (issue 15), none in two processes.
BLOCK_FRAMES = 262144
#: A decode that yields less than this fraction of the frames the header announces is truncated.
TRUNCATION_TOLERANCE = 0.99
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
#: libsndfile subtypes that ffmpeg decodes instead, when it is installed.
FFMPEG_PREFERRED = frozenset({"OPUS"})
_SOXR_QUALITY = "HQ"
#: Default per-track decode time limit, in seconds: ffmpeg decodes ~450 s of audio per
#: CPU-second, so a 24-hour file needs ~3 min of CPU on an idle core; 15 min leaves room for
#: a loaded machine while still stopping a decoder that hangs.
DEFAULT_TIMEOUT_S = 900.0
#: Lowest source rate accepted by default, in Hz (telephone audio is 8 kHz; nothing recorded
#: for listening is below 1 kHz, and a lower rate in a header is a corrupt or hostile file).
MIN_SAMPLE_RATE = 1000
#: Most frames one resampled block may hold: a bound on memory whatever the rate ratio.
MAX_RESAMPLED_BLOCK = 4 * BLOCK_FRAMES


def block_frames_for(channels: int) -> int:
    """Frames per decoded block for a source of ``channels``: :data:`BLOCK_FRAMES` up to
    stereo, fewer for more channels (at least a quarter: 8 MiB for 32 channels)."""
    return max(BLOCK_FRAMES // 4, min(BLOCK_FRAMES, 2 * BLOCK_FRAMES // max(1, channels)))


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one track may cost, checked against its header before anything is
    decoded (and, for duration and time, while decoding).

    Parameters
    ----------
    max_duration_s : float
        Longest accepted source, in seconds.
    max_channels : int
        Most channels accepted.
    max_sample_rate : int
        Highest sample rate accepted, in Hz.
    min_sample_rate : int
        Lowest sample rate accepted, in Hz: a header claiming 1 Hz would make resampling to
        22.05 kHz ask for 22,050 output frames per input frame.
    timeout_s : float
        Longest a probe or a decode of one track may take, in seconds (wall clock). A decoder
        still running then is killed (ffmpeg and ffprobe with their whole process group) and
        the track fails with :class:`~klio_assets.errors.DecodeTimeoutError`.
    """

    max_duration_s: float = 24 * 3600.0
    max_channels: int = 32
    max_sample_rate: int = 768_000
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_sample_rate: int = MIN_SAMPLE_RATE

    def __post_init__(self) -> None:
        names = (
            "max_duration_s",
            "max_channels",
            "max_sample_rate",
            "timeout_s",
            "min_sample_rate",
        )
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ParameterError(f"decode limit {name}={value!r} must be a positive number")


@dataclass(frozen=True)
class SourceInfo:
    """What a file's header says about its audio.

    Attributes
    ----------
    container : str
        Container format, e.g. ``"FLAC"``, ``"WAV"``, ``"OGG"``, ``"MP3"``, ``"mov,mp4,m4a"``.
    codec : str
        Sample encoding, e.g. ``"PCM_16"``, ``"VORBIS"``, ``"MPEG_LAYER_III"``, ``"aac"``.
    sample_rate : int
        Hz.
    channels : int
    frames : int
        Frames per channel announced by the header (exact after a full decode only).
    decoder : str
        ``"soundfile"`` or ``"ffmpeg"``.
    """

    container: str
    codec: str
    sample_rate: int
    channels: int
    frames: int
    decoder: str

    @property
    def duration_s(self) -> float:
        """Duration announced by the header, in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


@functools.lru_cache(maxsize=1)
def ffmpeg_available() -> bool:
    """Whether the ``ffmpeg`` and ``ffprobe`` commands are on ``PATH``."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def probe(
    path: str,
    *,
    track_id: str,
    uri: str,
    limits: DecodeLimits | None = None,
    header: SourceInfo | None = None,
) -> SourceInfo:
    """Read a file's header: container, codec, rate, channels, announced length.

    Parameters
    ----------
    path : str
        Local path of the file.
    track_id, uri : str
        Used in error messages (``uri`` is the file as the user knows it).
    limits : DecodeLimits, optional
        Checked against the header; defaults to :class:`DecodeLimits()`.
    header : SourceInfo, optional
        This file's header as :func:`read_header` read it earlier, the file unchanged since
        (:mod:`klio_assets.worker.prehash`): only the limits are checked.

    Raises
    ------
    DecodeError
        Empty file, unknown format (and ffmpeg absent), no audio stream, or a header outside
        the limits.
    """
    limits = limits or DecodeLimits()
    info = header or read_header(path, track_id=track_id, uri=uri, timeout_s=limits.timeout_s)
    _check_limits(info, limits, track_id=track_id, uri=uri)
    return info


def read_header(
    path: str, *, track_id: str, uri: str, timeout_s: float, ffprobe: bool = True
) -> SourceInfo:
    """:func:`probe` without the limits (``path``, ``track_id`` and ``uri`` as there): what
    the file's header and container say.

    Parameters
    ----------
    timeout_s : float
        For ffprobe, where libsndfile cannot read the file.
    ffprobe : bool
        Ask ffprobe where libsndfile cannot read the file (False: a DecodeError then).

    Raises
    ------
    DecodeError
        Empty file, unknown format (and ffmpeg absent), no audio stream.
    """
    import soundfile as sf  # noqa: PLC0415

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DecodeError(track_id, uri, f"cannot read the file: {exc.strerror}") from exc
    if size == 0:
        raise DecodeError(track_id, uri, "the file is empty (0 bytes)")
    try:
        # The decode repeats what libmpg123 says when opening the file, and keeps it.
        with decoder_log.capture() as log, log.window():
            raw = sf.info(path)
        info = SourceInfo(
            container=raw.format,
            codec=raw.subtype,
            sample_rate=int(raw.samplerate),
            channels=int(raw.channels),
            frames=int(raw.frames),
            # ffmpeg decodes Opus ~1.5x faster than libsndfile 1.2.2, which also stops with
            # "file is malformed" in the middle of some valid Opus streams.
            decoder="ffmpeg"
            if raw.subtype in FFMPEG_PREFERRED and ffmpeg_available()
            else "soundfile",
        )
    except sf.LibsndfileError as exc:
        sndfile_problem = _sndfile_problem(exc)
        looks_like = _sniff(path)
        if looks_like:
            raise DecodeError(
                track_id, uri, f"not audio: the file looks like {looks_like}"
            ) from exc
        if not ffprobe:
            raise DecodeError(
                track_id, uri, f"libsndfile cannot read it ({sndfile_problem})"
            ) from exc
        if not ffmpeg_available():
            raise DecodeError(
                track_id,
                uri,
                f"libsndfile cannot read it ({sndfile_problem}); formats such as M4A/AAC need "
                "ffmpeg, which is not installed (apt-get install ffmpeg)",
            ) from exc
        info = _ffprobe(
            path,
            track_id=track_id,
            uri=uri,
            sndfile_problem=sndfile_problem,
            timeout_s=timeout_s,
        )
    return _announced_by_container(path, info, track_id=track_id, uri=uri)


def _announced_by_container(path: str, info: SourceInfo, *, track_id: str, uri: str) -> SourceInfo:
    """``info`` corrected where libsndfile's view of the container is wrong (see
    :mod:`klio_assets.worker.containers`): what a WAV/RF64 header claims, an MP3 length
    estimate that counted a cover-art tag, the streams of a chained Ogg."""
    if info.container in ("WAV", "WAVEX", "RF64"):
        announced = containers.riff_announced_frames(path)
        if announced is not None and announced > info.frames:
            # libsndfile quietly shortens a WAV to what the file holds; keep what the header
            # claims so that a truncated file (or a header claiming gigabytes) is caught.
            return dataclasses.replace(info, frames=announced)
    elif info.container == "MP3" and info.decoder == "soundfile":
        fraction = containers.mp3_audio_fraction(path)
        if fraction is not None:
            return dataclasses.replace(info, frames=int(info.frames * fraction))
    elif info.container == "OGG":
        chain = containers.ogg_chain(path)
        if chain is not None:
            return _chained_ogg(chain, info, track_id=track_id, uri=uri)
    return info


def _chained_ogg(
    chain: list[containers.OggStream], info: SourceInfo, *, track_id: str, uri: str
) -> SourceInfo:
    """A chained Ogg decodes with ffmpeg (libsndfile stops after the first stream)."""
    shapes = {(s.sample_rate, s.channels) for s in chain}
    if len(shapes) > 1 or any(s.codec not in ("vorbis", "opus") for s in chain):
        described = ", ".join(f"{s.codec} {s.sample_rate} Hz x{s.channels}" for s in chain)
        raise DecodeError(
            track_id, uri,
            f"chained Ogg of {len(chain)} streams that differ ({described}): only chains of "
            "one codec, rate and channel count are supported",
        )  # fmt: skip
    if not ffmpeg_available():
        raise DecodeError(
            track_id, uri,
            f"chained Ogg of {len(chain)} streams: libsndfile reads only the first; decoding "
            "it whole needs ffmpeg, which is not installed (apt-get install ffmpeg)",
        )  # fmt: skip
    ((rate, channels),) = shapes
    return dataclasses.replace(
        info,
        sample_rate=rate,
        channels=channels,
        frames=sum(s.frames for s in chain),
        decoder="ffmpeg",
    )


_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program (ELF)"),
)


def _sniff(path: str) -> str | None:
    """Name a common non-audio format from the first bytes, for a plain error message."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.lstrip().startswith((b"<!DOCTYPE", b"<html", b"<?xml")):
        return "an HTML or XML document"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return None


def _sndfile_problem(exc: Exception) -> str:
    problem = str(exc).split(": ", 1)[-1].rstrip(".")
    if "not a regular file" in problem:  # what libsndfile says of undecodable MPEG data
        return "unrecognised or corrupt data"
    return problem


def run_bounded(cmd: list[str], *, timeout_s: float) -> tuple[int, bytes, bytes]:
    """Run a command with a time limit, killing its whole process group when it expires.

    ``subprocess.run(timeout=...)`` kills only the direct child: a wrapper script whose own
    child keeps the pipes open would still block the caller. Here the command gets its own
    session and the group is killed.

    Returns
    -------
    (int, bytes, bytes)
        Exit status, stdout, stderr.

    Raises
    ------
    subprocess.TimeoutExpired
        The command was still running after ``timeout_s`` seconds (it has been killed).
    """
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        proc.communicate()
        raise
    finally:
        if proc.poll() is None:
            kill_process_group(proc)
            proc.wait()
    return proc.returncode, out, err


def kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child started with ``start_new_session=True`` and everything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _ffprobe(
    path: str, *, track_id: str, uri: str, sndfile_problem: str, timeout_s: float
) -> SourceInfo:
    cmd = [
        "ffprobe", "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=codec_name,sample_rate,channels,duration:format=format_name,duration",
        "-of", "json", f"file:{path}",
    ]  # fmt: skip
    try:
        returncode, stdout, stderr = run_bounded(cmd, timeout_s=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DecodeTimeoutError(
            track_id,
            uri,
            f"ffprobe did not answer within {timeout_s:g} s and was stopped (timeout_s)",
        ) from exc
    problem = stderr.decode(errors="replace").strip().splitlines()
    try:
        data = json.loads(stdout or b"{}")
    except json.JSONDecodeError:
        data = {}
    streams = data.get("streams") or []
    if returncode != 0 or not streams:
        why = problem[-1] if problem else "no audio stream found"
        raise DecodeError(
            track_id,
            uri,
            f"not a readable audio file (libsndfile: {sndfile_problem}; ffmpeg: {why})",
        )
    stream = streams[0]
    fmt = data.get("format") or {}
    try:
        sample_rate = int(stream["sample_rate"])
        channels = int(stream["channels"])
    except (KeyError, ValueError) as exc:
        raise DecodeError(track_id, uri, "ffprobe reports no sample rate or channel count") from exc
    duration = stream.get("duration") or fmt.get("duration") or 0
    try:
        frames = round(float(duration) * sample_rate)
    except ValueError:
        frames = 0
    return SourceInfo(
        container=str(fmt.get("format_name", "unknown")),
        codec=str(stream.get("codec_name", "unknown")),
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        decoder="ffmpeg",
    )


def _check_limits(info: SourceInfo, limits: DecodeLimits, *, track_id: str, uri: str) -> None:
    if info.sample_rate <= 0 or info.channels <= 0:
        raise DecodeError(
            track_id, uri, f"header announces {info.channels} channels at {info.sample_rate} Hz"
        )
    if info.channels > limits.max_channels:
        raise DecodeError(
            track_id, uri,
            f"{info.channels} channels exceeds the limit of {limits.max_channels} (max_channels)",
        )  # fmt: skip
    if info.sample_rate < limits.min_sample_rate:
        raise DecodeError(
            track_id, uri,
            f"{info.sample_rate} Hz is below the lowest accepted rate of "
            f"{limits.min_sample_rate} Hz (min_sample_rate): the header is corrupt or hostile",
        )  # fmt: skip
    if info.sample_rate > limits.max_sample_rate:
        raise DecodeError(
            track_id, uri,
            f"{info.sample_rate} Hz exceeds the limit of {limits.max_sample_rate} Hz "
            "(max_sample_rate)",
        )  # fmt: skip
    if info.duration_s > limits.max_duration_s:
        raise DecodeError(
            track_id, uri,
            f"header announces {info.duration_s:.0f} s, over the limit of "
            f"{limits.max_duration_s:.0f} s (max_duration_s)",
        )  # fmt: skip


class SourceDecoder:
    """Decode a source file in native-rate blocks of shape ``(n, channels)``.

    Iterating yields float32 blocks; afterwards :attr:`frames` holds the exact number of
    frames decoded. A decode that ends well short of the header's length, or that produces
    NaN or infinite samples, raises :class:`DecodeError`.

    Parameters
    ----------
    path : str
        Local path.
    info : SourceInfo
        From :func:`probe`.
    track_id, uri : str
        For error messages.
    block_frames : int, optional
        Frames per block; by default :func:`block_frames_for` the source's channels.
    """

    def __init__(
        self,
        path: str,
        info: SourceInfo,
        *,
        track_id: str,
        uri: str,
        block_frames: int | None = None,
        limits: DecodeLimits | None = None,
    ):
        self.path = path
        self.info = info
        self.track_id = track_id
        self.uri = uri
        self.block_frames = block_frames or block_frames_for(info.channels)
        self.limits = limits or DecodeLimits()
        self.frames = 0
        #: What the decoder library printed on stderr while decoding (libmpg123's
        #: complaints about a damaged MP3), kept for the track's metadata instead.
        self.warnings: list[str] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        import numpy as np  # noqa: PLC0415

        self.frames = 0
        self._deadline = time.monotonic() + self.limits.timeout_s
        self._timed_out = False
        blocks = self._soundfile() if self.info.decoder == "soundfile" else self._ffmpeg()
        check_finite = self.info.decoder == "ffmpeg" or self.info.codec in _FLOAT_SUBTYPES
        max_frames = int(self.limits.max_duration_s * self.info.sample_rate)
        for block in blocks:
            if time.monotonic() > self._deadline:
                raise self._timeout_error()
            if check_finite and not np.isfinite(block).all():
                bad = int(np.argmin(np.isfinite(block).all(axis=1)))
                at = (self.frames + bad) / self.info.sample_rate
                raise DecodeError(
                    self.track_id, self.uri, f"contains NaN or infinite samples at {at:.2f} s"
                )
            self.frames += len(block)
            if self.frames > max_frames:
                raise DecodeError(
                    self.track_id, self.uri,
                    f"decodes to more than {self.limits.max_duration_s:.0f} s (max_duration_s)",
                )  # fmt: skip
            yield block
        if self._timed_out:
            raise self._timeout_error()
        announced = self.info.frames
        if announced > 0 and self.frames < announced * TRUNCATION_TOLERANCE:
            raise DecodeError(
                self.track_id,
                self.uri,
                f"the file is truncated: audio stops after {self.frames / self.info.sample_rate:.2f} s "
                f"but the header announces {announced / self.info.sample_rate:.2f} s",
            )
        if self.frames == 0:
            raise DecodeError(self.track_id, self.uri, "the file contains no audio frames")

    def _timeout_error(self) -> DecodeTimeoutError:
        at = self.frames / self.info.sample_rate
        return DecodeTimeoutError(
            self.track_id,
            self.uri,
            f"decoding did not finish within {self.limits.timeout_s:g} s ({self.info.decoder}, "
            f"stopped after {at:.2f} s of audio; the per-track limit is timeout_s)",
        )

    def _soundfile(self) -> Iterator[np.ndarray]:
        import soundfile as sf  # noqa: PLC0415

        log: decoder_log.Capture | None = None
        try:
            with decoder_log.capture() as log:
                # Only the library calls are inside a window, never the consumer's code.
                with log.window():
                    fh = sf.SoundFile(self.path)
                with fh:
                    while True:
                        with log.window():
                            block = fh.read(self.block_frames, dtype="float32", always_2d=True)
                        if not len(block):
                            return
                        yield block
        except sf.LibsndfileError as exc:
            problem = _sndfile_problem(exc)
            at = self.frames / self.info.sample_rate
            raise DecodeError(
                self.track_id,
                self.uri,
                f"the audio data is corrupt or cut short (libsndfile: {problem}, in the block "
                f"starting at {at:.2f} s)",
            ) from exc
        finally:
            if log is not None:
                self.warnings = log.lines

    def _ffmpeg(self) -> Iterator[np.ndarray]:
        import numpy as np  # noqa: PLC0415

        channels = self.info.channels
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-i", f"file:{self.path}", "-map", "0:a:0", "-vn",
            "-f", "f32le", "-acodec", "pcm_f32le",
            "-ac", str(channels), "-ar", str(self.info.sample_rate), "pipe:1",
        ]  # fmt: skip
        bytes_per_block = self.block_frames * channels * 4
        # ffmpeg can hang (a stalled input, a pathological stream): it runs in its own
        # process group, which a watchdog kills at the deadline; the read then ends.
        # stderr goes to a file so that a chatty ffmpeg cannot block on a full pipe.
        errfile = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errfile,
            start_new_session=True,
        )

        def expire() -> None:
            if proc.poll() is None:
                self._timed_out = True
                kill_process_group(proc)

        watchdog = threading.Timer(max(0.0, self._deadline - time.monotonic()), expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            pending = b""
            while True:
                chunk = proc.stdout.read(bytes_per_block)
                if not chunk:
                    break
                chunk = pending + chunk
                usable = len(chunk) - len(chunk) % (channels * 4)
                pending = chunk[usable:]
                if usable:
                    yield np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, channels)
            returncode = proc.wait()
            if self._timed_out:
                raise self._timeout_error()
            if returncode != 0:
                errfile.seek(0)
                stderr = errfile.read(65536).decode(errors="replace").strip()
                last = stderr.splitlines()[-1] if stderr else f"ffmpeg exited with {returncode}"
                raise DecodeError(self.track_id, self.uri, f"ffmpeg: {last}")
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                kill_process_group(proc)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            errfile.close()


def downmix(block: np.ndarray) -> np.ndarray:
    """Mono from a ``(n, channels)`` block: ``(L + R) * 0.5`` for stereo (9x faster than mean)."""
    import numpy as np  # noqa: PLC0415

    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    if channels == 2:
        mixed: np.ndarray = (block[:, 0] + block[:, 1]) * np.float32(0.5)
        return mixed
    mean: np.ndarray = block.mean(axis=1, dtype=np.float32)
    return mean


def exact_length(frames: int, source_rate: int, target_rate: int) -> int:
    """Frames after resampling ``frames`` from ``source_rate`` to ``target_rate``:
    ``round(frames * target_rate / source_rate)``, halves rounded up as soxr does (so one
    input frame never becomes zero)."""
    return math.floor(frames * target_rate / source_rate + 0.5)


def convert_blocks(
    blocks: Iterable[np.ndarray],
    *,
    source_rate: int,
    target_rate: int | None,
    mono: bool,
) -> Iterator[np.ndarray]:
    """Downmix and resample ``(n, channels)`` blocks, keeping the exact output length.

    The output has exactly ``round(n * target_rate / source_rate)`` frames, ``n`` being the
    number of input frames: the last block is held back and trimmed or zero-padded at the end.

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(n, channels)]
        Native-rate float32 blocks.
    source_rate : int
        Hz.
    target_rate : int or None
        Hz; ``None`` keeps the source rate.
    mono : bool
        Downmix to one channel.

    Yields
    ------
    np.ndarray [shape=(m, channels')]
        float32 blocks, ``channels'`` being 1 when ``mono``.
    """
    import numpy as np  # noqa: PLC0415
    import soxr  # noqa: PLC0415

    if target_rate is not None and target_rate <= 0:
        raise ParameterError(f"target sample rate {target_rate} must be positive")
    resample = target_rate is not None and target_rate != source_rate
    if not resample:
        for block in blocks:
            yield downmix(block)[:, None] if mono else block
        return
    assert target_rate is not None
    stream: soxr.ResampleStream | None = None
    n_in = n_out = 0
    held: np.ndarray | None = None
    channels = 1
    # Input pieces small enough that no output piece exceeds MAX_RESAMPLED_BLOCK frames.
    piece = max(1, MAX_RESAMPLED_BLOCK * source_rate // target_rate)
    for block in blocks:
        x_block = downmix(block) if mono else block
        if stream is None:
            channels = 1 if x_block.ndim == 1 else x_block.shape[1]
            stream = soxr.ResampleStream(
                source_rate, target_rate, channels, dtype="float32", quality=_SOXR_QUALITY
            )
        for start in range(0, len(x_block), piece):
            x = x_block[start : start + piece]
            n_in += len(x)
            y = stream.resample_chunk(x)
            if len(y):
                if held is not None:
                    n_out += len(held)
                    yield from _slices(held, MAX_RESAMPLED_BLOCK)
                held = y if y.ndim == 2 else y[:, None]
    if stream is None:
        return
    tail = stream.resample_chunk(
        np.zeros((0, channels) if channels > 1 else 0, np.float32), last=True
    )
    if tail.ndim == 1:
        tail = tail[:, None]
    last = tail if held is None else np.concatenate([held, tail])
    want = exact_length(n_in, source_rate, target_rate) - n_out
    if want < 0:
        raise AssertionError("resampler produced more frames than the exact length")
    if len(last) > want:
        last = last[:want]
    elif len(last) < want:
        last = np.concatenate([last, np.zeros((want - len(last), last.shape[1]), np.float32)])
    yield from _slices(last, MAX_RESAMPLED_BLOCK)


def _slices(block: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(block), size):
        yield block[start : start + size]


def write_audio(
    path: str,
    blocks: Iterable[np.ndarray],
    *,
    sample_rate: int,
    channels: int,
    format: str = "FLAC",
    subtype: str = "PCM_16",
) -> int:
    """Write ``(n, channels)`` blocks to an audio file, block by block.

    Block-wise writing is not only for memory: a one-shot write of a long OGG Vorbis file
    overflows the stack inside libvorbis. Samples are clipped to [-1, 1] for integer
    encodings (resampling can overshoot slightly).

    Returns
    -------
    int
        Frames written.
    """
    import numpy as np  # noqa: PLC0415
    import soundfile as sf  # noqa: PLC0415

    clip = not subtype.startswith(("FLOAT", "DOUBLE", "VORBIS", "OPUS"))
    written = 0
    with sf.SoundFile(
        path, "w", samplerate=sample_rate, channels=channels, format=format, subtype=subtype
    ) as out:
        for block in blocks:
            if clip:
                block = np.clip(block, -1.0, 1.0)
            out.write(block)
            written += len(block)
    return written


@contextlib.contextmanager
def open_audio_blocks(
    path: str, *, block_frames: int = BLOCK_FRAMES
) -> Iterator[tuple[int, int, Iterator[np.ndarray]]]:
    """Open an audio file written by klio-assets: ``(sample_rate, channels, blocks)``."""
    import soundfile as sf  # noqa: PLC0415

    with sf.SoundFile(path) as fh:

        def _blocks() -> Iterator[np.ndarray]:
            while True:
                block = fh.read(block_frames, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block

        yield int(fh.samplerate), int(fh.channels), _blocks()
