"""``fingerprint``: a Chromaprint acoustic fingerprint of the start of each track.

Chromaprint (the fingerprint behind AcoustID) summarises 12-band chroma over time as one
32-bit value every ~0.124 s (4096/3 samples at 11025 Hz). Each bit is one of 16 filters on
the chromagram quantised to 2 bits, so re-encoding (MP3, AAC, Opus), another sample rate or
bit depth flips a few bits here and there while a different recording flips about half of
them: the catalog-level ``duplicate_groups`` asset (:mod:`klio_assets.catalog.duplicates`) compares
fingerprints by bit error rate.

The audio is decoded by the framework (mono, 11025 Hz: the rate Chromaprint works at, so it
does not resample again) and piped to Debian's ``fpcalc`` (``libchromaprint-tools``) as
16-bit PCM. Only the first ``length_s`` seconds are fingerprinted; the rest of the stream is
still consumed so that the track's full duration is known (``duplicate_groups`` compares it)
and a decode failure later in the file still fails the track.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
import tempfile
import threading
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel, Field

from klio_assets.errors import TrackError
from klio_assets.worker import audio as audio_io
from klio_assets.worker.analysis import AudioStream, SourceAudio, TrackContext, analysis
from klio_assets.worker.outputs import Json

if TYPE_CHECKING:  # imported where used: listing the analyses (run's all-done answer) imports none
    import numpy as np


#: Chromaprint's working rate (Hz); the decode delivers exactly this.
FINGERPRINT_RATE = 11025
#: Seconds of audio per fingerprint item (4096/3 samples at 11025 Hz).
ITEM_SECONDS = 4096 / 3 / FINGERPRINT_RATE
#: Chromaprint's default algorithm (``fpcalc -algorithm 2``, ``CHROMAPRINT_ALGORITHM_TEST2``).
ALGORITHM = "chromaprint-2"
#: fpcalc gives up on a hung pipe after this many seconds (a 2-minute excerpt takes ~0.05 s).
_FPCALC_TIMEOUT_S = 300.0
_INSTALL_HINT = "install Debian's libchromaprint-tools (apt-get install libchromaprint-tools)"


class FingerprintParams(BaseModel):
    """Parameters of :func:`fingerprint`."""

    length_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Seconds fingerprinted from the start of the track (Chromaprint's default).",
    )


@functools.lru_cache(maxsize=1)
def fpcalc_version() -> str | None:
    """``fpcalc``'s version string (``"1.5.1"``), or ``None`` when it is not installed."""
    exe = shutil.which("fpcalc")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    return (
        words[2] if len(words) > 2 and words[:2] == ["fpcalc", "version"] else out.strip() or None
    )


def _to_s16le(block: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] as little-endian 16-bit PCM (clipped, rounded)."""
    import numpy as np  # noqa: PLC0415

    return np.clip(np.rint(block * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _feed_fpcalc(
    exe: str, audio: AudioStream, budget: int, errors: BinaryIO, track: TrackContext
) -> tuple[int, bytes, int, bool]:
    """Pipe the first ``budget`` frames of ``audio`` to fpcalc and drain the rest.

    Returns frames fed, fpcalc's stdout, its exit status and whether it closed its input early.
    """
    # fpcalc's own limit is set above ours: it must never stop reading before we stop writing.
    command = [
        exe, "-format", "s16le", "-rate", str(FINGERPRINT_RATE), "-channels", "1",
        "-length", str(math.ceil(budget / FINGERPRINT_RATE) + 1), "-raw", "-json", "-",
    ]  # fmt: skip
    fed = 0
    broken_pipe = False
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        start_new_session=True,
    )
    # A stalled fpcalc would block the write below forever: kill it at the deadline.
    watchdog = threading.Timer(_FPCALC_TIMEOUT_S, audio_io.kill_process_group, args=(proc,))
    watchdog.daemon = True
    watchdog.start()
    stdout: bytes | None = None

    def finish() -> bytes:
        try:
            out, _ = proc.communicate(timeout=_FPCALC_TIMEOUT_S)  # also closes its stdin
        except subprocess.TimeoutExpired:
            raise TrackError(
                track.track_id,
                track.uri,
                f"fingerprint: fpcalc did not finish within {_FPCALC_TIMEOUT_S:.0f} s",
            ) from None
        watchdog.cancel()
        return out

    try:
        assert proc.stdin is not None
        for block in audio:
            # Past the budget fpcalc is done with, and the stream is still drained (cheap: the
            # blocks are decoded anyway), so that the duration and decode errors cover the
            # whole file and a shared decode never waits on this analysis.
            if stdout is not None or broken_pipe:
                continue
            chunk = block[: budget - fed]
            fed += len(chunk)
            try:
                proc.stdin.write(_to_s16le(chunk))
            except BrokenPipeError:
                broken_pipe = True  # fpcalc died; its stderr says why
            if fed >= budget and not broken_pipe:
                stdout = finish()
        if stdout is None:
            stdout = finish()
    finally:
        watchdog.cancel()
        if proc.poll() is None:  # an exception in the decode, or the timeout
            audio_io.kill_process_group(proc)
            proc.wait()
    return fed, stdout, proc.returncode, broken_pipe


@analysis(
    inputs={"audio": SourceAudio(sample_rate=FINGERPRINT_RATE, mono=True, stream=True)},
    output=Json(),
    code_version="1",
    params=FingerprintParams,
)
def fingerprint(
    audio: AudioStream, params: FingerprintParams, track: TrackContext
) -> dict[str, Any]:
    """Chromaprint fingerprint (raw, unsigned 32-bit items) of the first ``length_s`` seconds,
    computed by ``fpcalc`` from the decoded audio; tracks shorter than ~3 s have an empty one.

    Parameters
    ----------
    audio : AudioStream
        Mono, 11025 Hz.
    params : FingerprintParams
    track : TrackContext

    Returns
    -------
    dict
        ``fingerprint`` (list of int in [0, 2**32)), ``fingerprint_items``, ``algorithm``,
        ``item_s`` (seconds per item), ``fingerprint_duration_s`` (seconds fingerprinted),
        ``duration_s`` (the whole decoded track) and ``fpcalc_version``.

    Raises
    ------
    TrackError
        ``fpcalc`` is missing, fails or returns something unreadable.
    """
    exe = shutil.which("fpcalc")
    if exe is None:
        raise TrackError(
            track.track_id, track.uri, f"fingerprint: fpcalc not found on PATH; {_INSTALL_HINT}"
        )
    if audio.sample_rate != FINGERPRINT_RATE or audio.channels != 1:
        raise TrackError(
            track.track_id,
            track.uri,
            f"fingerprint: needs mono {FINGERPRINT_RATE} Hz audio, got {audio.channels} channel(s) "
            f"at {audio.sample_rate} Hz",
        )
    budget = round(params.length_s * FINGERPRINT_RATE)
    # stderr goes to a file: a pipe nobody reads while we write could fill up and stall fpcalc.
    with tempfile.TemporaryFile() as errors:
        fed, stdout, returncode, broken_pipe = _feed_fpcalc(exe, audio, budget, errors, track)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    message = " / ".join(
        line for line in stderr.splitlines()
        # fpcalc reports the end of piped input as a decode error (exit status 3) even when
        # the fingerprint is complete: that line is expected.
        if line.strip() and "End of file" not in line
    )  # fmt: skip
    items: list[int]
    if "Empty fingerprint" in message and not broken_pipe:
        items = []  # shorter than Chromaprint's first item (~2.7 s): nothing to fingerprint
    else:
        try:
            items = [int(v) for v in json.loads(stdout)["fingerprint"]]
        except (ValueError, KeyError, TypeError):
            detail = message or f"exit status {returncode}, no fingerprint in its output"
            raise TrackError(
                track.track_id, track.uri, f"fingerprint: fpcalc failed: {detail}"
            ) from None
        if returncode not in (0, 3) or broken_pipe or any(v < 0 or v >= 2**32 for v in items):
            detail = message or f"exit status {returncode}"
            raise TrackError(track.track_id, track.uri, f"fingerprint: fpcalc failed: {detail}")
    return {
        "fingerprint": items,
        "fingerprint_items": len(items),
        "algorithm": ALGORITHM,
        "item_s": ITEM_SECONDS,
        "fingerprint_duration_s": fed / FINGERPRINT_RATE,
        "duration_s": audio.duration_s,
        "fpcalc_version": fpcalc_version() or "unknown",
    }
