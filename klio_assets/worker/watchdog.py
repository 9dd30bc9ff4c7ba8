"""A time limit on each group's analyses, on one long-lived analysis thread per lane.

A decoder that hangs is killed by its own deadline; an analysis can hang too (a helper process
that stops reading, a loop that never ends), and a Python thread cannot be killed. So a lane
hands its groups to an analysis thread of its own and waits for each at most
:data:`WATCHDOG_FACTOR` x ``timeout_s``. When a group outlives that, its tracks' pending
analyses are reported failed with that reason, the thread is abandoned (it can only ever
commit whole outputs) and the lane's next group gets a new thread.

The thread lives as long as the lane. A new thread for every group, as before, cost the
200-track batch of ``benchmarks/throughput.py`` 0.3-0.5 s of its 19-s Beam job (the lanes'
time between groups 0.28-0.32 lane-s against 0.09-0.18, and more time off-CPU within each
group; measured side by side, five runs each). This module imports nothing from Dagster.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
from collections.abc import Sequence
from typing import Any

from klio_assets.worker.execution import Engine, track_result
from klio_assets.worker.records import AnalysisOutcome, Status, TrackResult

#: A group's analyses get this many times the decode limit (``timeout_s``) before the worker
#: gives up on them: streamed analyses are already bounded by the decode deadline, whole-array
#: ones run after the decode and get as long again.
WATCHDOG_FACTOR = 2.0

#: Numbers the analysis threads of a worker process (``klio-analyze-<n>``).
_THREAD_NUMBERS = itertools.count(1)


@dataclasses.dataclass
class _Job:
    """One group handed to an analysis thread, and what became of it."""

    group: Sequence[dict[str, Any]]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    results: list[TrackResult] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


class AnalysisThread:
    """The thread one lane's groups are analyzed on, each within its time limit.

    Parameters
    ----------
    engine : Engine
        The lane's engine (one per Beam DoFn instance).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def analyze(self, group: Sequence[dict[str, Any]]) -> list[TrackResult]:
        """:meth:`Engine.analyze` of ``group`` on this lane's analysis thread.

        Returns
        -------
        list of TrackResult
            One result per track of ``group``; when the group outlived its limit, its tracks'
            pending analyses failed with the reason (``TrackTimeout``).
        """
        limit = WATCHDOG_FACTOR * self.engine.limits.timeout_s
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            name = f"klio-analyze-{next(_THREAD_NUMBERS)}"
            threading.Thread(target=self._serve, args=(self._jobs,), name=name, daemon=True).start()
        job = _Job(group)
        self._jobs.put(job)
        if not job.done.wait(limit):
            self.close()  # the stuck thread leaves after this group, if it ever ends
            return timed_out(group, limit)
        if job.error is not None:
            raise job.error
        return job.results

    def close(self) -> None:
        """Let the thread end once its group is done (the next group starts a new one)."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            try:
                job.results = self.engine.analyze(job.group)
            except BaseException as exc:  # re-raised in the lane's thread
                job.error = exc
            finally:
                job.done.set()


def timed_out(group: Sequence[dict[str, Any]], limit: float) -> list[TrackResult]:
    """``group``'s results when its analyses outlived ``limit`` seconds: every pending
    analysis failed, transient (a retry may get through)."""
    results = []
    for task in group:
        reason = (
            f"track {task['track_id']!r}: {task['uri']}: analyses did not finish within "
            f"{limit:g} s ({WATCHDOG_FACTOR:g} x timeout_s); the worker gave up on them"
        )
        result = track_result(task)
        for name in task["pending"]:
            result.analyses[name] = AnalysisOutcome(
                Status.FAILED, reason=reason, error="TrackTimeout", permanent=False
            )
        results.append(result)
    return results
