"""Analyses written the way a user writes them, for the tests (importable by Beam workers)."""

import threading

import numpy as np
from pydantic import BaseModel

from klio_assets import (
    Audio,
    AudioStream,
    Json,
    NumpyArray,
    SourceAudio,
    TrackContext,
    Upstream,
    analysis,
)


@analysis(inputs={"audio": SourceAudio(mono=True)}, output=Json(), code_version="1")
def rms_level(audio: Audio) -> dict:
    """RMS of the mono source at its native rate."""
    return {"rms": float(np.sqrt(np.mean(audio.samples**2))), "sample_rate": audio.sample_rate}


@analysis(inputs={"audio": Upstream("downsampled_audio")}, output=Json(), code_version="1")
def peak_frequency(audio: Audio) -> dict:
    """Frequency of the largest spectral peak of the downsampled audio (reads another analysis)."""
    spectrum = np.abs(np.fft.rfft(audio.samples * np.hanning(audio.frames)))
    return {"hz": float(np.argmax(spectrum) * audio.sample_rate / audio.frames)}


class FrameParams(BaseModel):
    frame: int = 2048


@analysis(
    inputs={"audio": SourceAudio(sample_rate=16000, mono=True, stream=True)},
    output=NumpyArray(),
    code_version="2",
    params=FrameParams,
)
def frame_energy(audio: AudioStream, params: FrameParams) -> np.ndarray:
    """Energy per frame of the 16 kHz stream (a streaming consumer beside others)."""
    energies = [float(np.sum(block.astype(np.float64) ** 2)) for block in audio]
    return np.asarray(energies, dtype=np.float64)


@analysis(inputs={"audio": SourceAudio()}, output=Json(), code_version="1")
def explodes_on_mono(audio: Audio) -> dict:
    """Fails for mono sources (a bug in an analysis must cost only that track)."""
    if audio.channels == 1:
        raise ValueError("mono is not supported by this analysis")
    return {"channels": audio.channels}


@analysis(inputs={"audio": SourceAudio(stream=True)}, output=Json(), code_version="1")
def first_block_only(audio: AudioStream) -> dict:
    """Reads one block of the stream and stops (the shared decode must not wait for it)."""
    block = next(iter(audio))
    return {"first_block_frames": int(block.shape[-1])}


@analysis(inputs={"energies": Upstream("frame_energy")}, output=Json(), code_version="1")
def total_energy(energies: np.ndarray) -> dict:
    """Sum of another analysis' ``.npy`` output (reads a stored array back)."""
    return {"total": float(np.sum(energies))}


@analysis(inputs={"audio": SourceAudio()}, output=Json(), code_version="1")
def hangs_on_stall(audio: Audio, track: TrackContext) -> dict:
    """Never returns for tracks whose ID starts with ``stall`` (a stuck helper, an endless
    loop): the watchdog must give up on it and the batch go on."""
    if track.track_id.startswith("stall"):
        threading.Event().wait()
    return {"frames": audio.frames}


#: Environment variable naming the file :func:`waits_for_gate` waits for.
GATE_ENV = "KLIO_TEST_GATE"


@analysis(inputs={"audio": SourceAudio(stream=True)}, output=Json(), code_version="1")
def waits_for_gate(audio: AudioStream, track: TrackContext) -> dict:
    """Returns at once, except for tracks whose ID starts with ``slow``: those wait (at most
    two minutes) until the file named by ``KLIO_TEST_GATE`` exists. A Beam job that is slow
    for its last track, for tests of what is reported while it runs."""
    import os
    import time

    if track.track_id.startswith("slow"):
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ[GATE_ENV]) and time.monotonic() < deadline:
            time.sleep(0.05)
    return {"blocks": sum(1 for _ in audio)}


@analysis(inputs={"audio": SourceAudio(mono=True)}, output=Json(), code_version="1")
def crashes_on_segv(audio: Audio, track: TrackContext) -> dict:
    """Kills its own process with SIGSEGV for tracks whose ID starts with ``segv`` (what a
    segfault in a native decoder does): only that track may be lost, never the batch.
    Tracks whose ID starts with ``slow`` take 2 s (in flight when another one crashes)."""
    if track.track_id.startswith("slow"):
        import time

        time.sleep(2.0)
    if track.track_id.startswith("segv"):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    return {"frames": audio.frames}


@analysis(inputs={"level": Upstream("rms_level")}, output=Json(), code_version="1")
def crashes_after_rms(level: dict, track: TrackContext) -> dict:
    """Runs once ``rms_level`` has committed the track's output. Tracks whose ID starts with
    ``held`` create the file named by ``KLIO_TEST_GATE`` and take 4 s more; tracks whose ID
    starts with ``segv`` wait (at most 10 s) for that file, then kill their process with
    SIGSEGV: the held track dies in flight, its ``rms_level`` committed but not reported."""
    import os
    import time

    if track.track_id.startswith("held"):
        with open(os.environ[GATE_ENV], "w"):
            pass
        time.sleep(4.0)
    if track.track_id.startswith("segv"):
        import signal

        deadline = time.monotonic() + 10
        while not os.path.exists(os.environ[GATE_ENV]) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGSEGV)
    return {"rms": level["rms"]}
