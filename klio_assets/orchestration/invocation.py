"""What a ``klio-assets run`` did: the runs it launched and what it found already done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunOutcome:
    """One Dagster run launched by :func:`execute_range`."""

    run_id: str
    success: bool
    track_ids: list[str]
    summary: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Invocation:
    """Everything a ``klio-assets run`` did.

    ``failed_earlier`` holds, per analysis, the tracks not tried because a remembered failure
    holds them (track ID to its ``failed earlier: <reason>`` line); ``would_compute``, in a
    dry run, the tracks per analysis that the real run would compute (no run is launched).
    ``back_in_window`` lists the wanted tracks that were out of Dagster's window and entered
    it again for this invocation; ``window_sync``, the runs that materialized, all skipped,
    the analyses ``window_sync_analyses`` the catalog has done for all of them (so that the UI
    shows them done, not missing).
    """

    selected: list[str]
    already_done: dict[str, list[str]] = field(default_factory=dict)
    failed_earlier: dict[str, dict[str, str]] = field(default_factory=dict)
    would_compute: dict[str, list[str]] = field(default_factory=dict)
    runs: list[RunOutcome] = field(default_factory=list)
    wall_seconds: float = 0.0
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    back_in_window: list[str] = field(default_factory=list)
    window_sync_analyses: list[str] = field(default_factory=list)
    window_sync: list[RunOutcome] = field(default_factory=list)
