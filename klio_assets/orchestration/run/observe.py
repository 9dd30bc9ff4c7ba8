"""What the caller of an in-process run learns from the run itself: progress and summary.

``klio-assets run`` (:func:`klio_assets.orchestration.launch.execute_range`) executes the
analyses job in its own process. It registers a :class:`RunWatch` under the run's invocation
tag; the run's one results poller reports progress to it, and the run hands it its summary.
Nothing is listed twice or read back from storage. A run launched elsewhere (the daemon, the
UI) has no watch and reports to Dagster only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

#: Run tag naming the invocation that launched a run (``klio-assets run``).
INVOCATION_TAG = "klio/invocation"

_WATCHES: dict[str, RunWatch] = {}
_LOCK = threading.Lock()


@dataclass
class RunWatch:
    """Progress and outcome of one in-process run, as the run reports them.

    Attributes
    ----------
    on_progress : callable or None
        Called with the number of tracks reported so far.
    summary : dict or None
        The run's summary (the fields of ``klio-assets run --json``), once reported.
    """

    on_progress: Callable[[int], None] | None = None
    summary: dict[str, Any] | None = field(default=None)

    def progress(self, done: int) -> None:
        """``done`` tracks have results."""
        if self.on_progress is not None:
            self.on_progress(done)


@contextlib.contextmanager
def watching(
    invocation: str, on_progress: Callable[[int], None] | None = None
) -> Iterator[RunWatch]:
    """Register a watch for the run tagged ``klio/invocation=<invocation>`` in this process."""
    watch = RunWatch(on_progress=on_progress)
    with _LOCK:
        _WATCHES[invocation] = watch
    try:
        yield watch
    finally:
        with _LOCK:
            _WATCHES.pop(invocation, None)


def watch_of(tags: Mapping[str, str]) -> RunWatch:
    """The watch registered for a run with these tags (a detached one when none is)."""
    invocation = tags.get(INVOCATION_TAG)
    with _LOCK:
        watch = _WATCHES.get(invocation) if invocation else None
    return watch if watch is not None else RunWatch()


def context_watch(context: dg.AssetExecutionContext) -> RunWatch:
    """The watch of the run ``context`` belongs to."""
    return watch_of(context.run.tags)
