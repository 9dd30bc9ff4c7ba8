"""Measuring one step of ``klio-assets profile``: CPU (with ended children), peak memory, the
analysis function's own time, and the per-step figures."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from klio_assets.worker.analysis import AudioStream
from klio_assets.worker.execution import COMPUTED

#: Seconds between resident-size samples when the kernel's peak cannot be reset.
SAMPLE_INTERVAL_S = 0.005
_MB = 1024 * 1024


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and of its ended children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident set size of this process over a stretch of code.

    ``method`` is ``"vmhwm"`` (the kernel's peak, reset at :meth:`start`: exact),
    ``"sampled"`` (a thread reads the resident size every 5 ms: short peaks can be missed)
    or ``"unavailable"`` (no ``/proc``).
    """

    def __init__(self) -> None:
        self.method = "unavailable"
        if _proc_status_kb("VmHWM") is not None:
            self.method = "vmhwm" if self._reset_peak() else "sampled"
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _reset_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # "reset the peak resident set size to the current one"
            return True
        except OSError:
            return False

    @staticmethod
    def _rss_kb() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._peak_kb = max(self._peak_kb, self._rss_kb())

    def start(self) -> float | None:
        """Start measuring; returns the resident size now, MB."""
        if self.method == "unavailable":
            return None
        if self.method == "vmhwm":
            self._reset_peak()
            return (_proc_status_kb("VmRSS") or 0) / 1024
        self._peak_kb = self._rss_kb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="klio-profile-rss", daemon=True)
        self._thread.start()
        return self._peak_kb / 1024

    def stop(self) -> float | None:
        """Stop measuring; returns the peak resident size since :meth:`start`, MB."""
        if self.method == "vmhwm":
            return (_proc_status_kb("VmHWM") or 0) / 1024
        if self.method == "sampled" and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            return max(self._peak_kb, self._rss_kb()) / 1024
        return None


class TimedFunction:
    """An analysis function wrapped to measure the time spent in it, framework excluded.

    Input streams (:class:`AudioStream`) are rewrapped so that the time spent producing their
    blocks (decoding, resampling, reading a stored upstream) while the function runs is
    subtracted: that is framework work the function merely pulls.

    Attributes
    ----------
    wall_s, cpu_s : float
        Accumulated since :meth:`reset`.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        """Start accumulating from zero."""
        self.wall_s = self.cpu_s = 0.0
        self._inside = False

    def __call__(self, **kwargs: Any) -> Any:
        kwargs = {k: self._timed(v) if isinstance(v, AudioStream) else v for k, v in kwargs.items()}
        wall, cpu = time.perf_counter(), time.process_time()
        self._inside = True
        try:
            return self.fn(**kwargs)
        finally:
            self._inside = False
            self.wall_s += time.perf_counter() - wall
            self.cpu_s += time.process_time() - cpu

    def _timed(self, stream: AudioStream) -> AudioStream:
        def blocks() -> Iterator[np.ndarray]:
            source = stream.frame_blocks()
            while True:
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    block = next(source)
                except StopIteration:
                    return
                finally:
                    if self._inside:
                        self.wall_s -= time.perf_counter() - wall
                        self.cpu_s -= time.process_time() - cpu
                yield block

        return AudioStream(blocks(), sample_rate=stream.sample_rate, channels=stream.channels)


class ProfiledFunction:
    """An analysis function run with a profiler switched on only while it runs."""

    def __init__(self, fn: Callable[..., Any], start: Callable[[], Any], stop: Callable[[], Any]):
        self.fn, self._start, self._stop = fn, start, stop

    def __call__(self, **kwargs: Any) -> Any:
        self._start()
        try:
            return self.fn(**kwargs)
        finally:
            self._stop()


@dataclass
class StepFigures:
    """What one analysis cost on one track.

    Attributes
    ----------
    status : str
        ``computed`` or ``failed``.
    reason : str or None
        Why it failed: one line naming the track, the file and the problem.
    audio_s : float or None
        Duration of the source, seconds.
    wall_s, cpu_s : float or None
        The whole step: check, decode, function, write. CPU includes ``child_cpu_s``.
        ``None`` when the step did not run (an upstream failed).
    child_cpu_s : float or None
        CPU of child processes (ffmpeg, fpcalc) that ended during the step.
    rss_before_mb, peak_rss_mb : float or None
        Resident size at the start, and its peak during the step (this process).
    function_wall_s, function_cpu_s : float or None
        Inside the analysis function, minus the framework work its input streams did.
    """

    status: str
    reason: str | None = None
    audio_s: float | None = None
    wall_s: float | None = 0.0
    cpu_s: float | None = 0.0
    child_cpu_s: float | None = 0.0
    rss_before_mb: float | None = None
    peak_rss_mb: float | None = None
    function_wall_s: float | None = None
    function_cpu_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Rounded figures, plus ``framework_*`` and ``x_realtime*`` where they apply (else null)."""
        framework_wall = framework_cpu = x_realtime = x_realtime_cpu = None
        wall, cpu, fn_wall, fn_cpu = (
            self.wall_s,
            self.cpu_s,
            self.function_wall_s,
            self.function_cpu_s,
        )
        if wall is not None and fn_wall is not None:
            framework_wall = max(0.0, wall - fn_wall)
        if cpu is not None and fn_cpu is not None:
            framework_cpu = max(0.0, cpu - fn_cpu)
        if self.status == COMPUTED and self.audio_s:
            x_realtime = self.audio_s / wall if wall else None
            x_realtime_cpu = self.audio_s / cpu if cpu else None
        return {
            "status": self.status,
            "reason": self.reason,
            "audio_s": round_or_none(self.audio_s, 4),
            "wall_s": round_or_none(wall, 4),
            "cpu_s": round_or_none(cpu, 4),
            "child_cpu_s": round_or_none(self.child_cpu_s, 4),
            "rss_before_mb": round_or_none(self.rss_before_mb, 1),
            "peak_rss_mb": round_or_none(self.peak_rss_mb, 1),
            "function_wall_s": round_or_none(fn_wall, 4),
            "function_cpu_s": round_or_none(fn_cpu, 4),
            "framework_wall_s": round_or_none(framework_wall, 4),
            "framework_cpu_s": round_or_none(framework_cpu, 4),
            "x_realtime": round_or_none(x_realtime, 1),
            "x_realtime_cpu": round_or_none(x_realtime_cpu, 1),
        }


def round_or_none(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
