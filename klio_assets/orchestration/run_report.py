"""The outcome of a ``klio-assets run`` in figures: per analysis counts, failures, audio hours.

Imports no Dagster: the all-done answer of ``klio-assets run`` reports through it too. The
``--json`` form (:meth:`RunReport.to_json`) is a contract: its keys do not change.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from klio_assets.orchestration.invocation import Invocation

#: The order of the status columns in the human table.
STATUS_ORDER = ("computed", "skipped", "failed", "failed_earlier", "would_compute", "would_skip")
#: Analyses named on a failed track's line before ``+N``.
NAMES_SHOWN = 3

_UPSTREAM = re.compile(r"^upstream '[^']*' failed for this track: ")
_EARLIER = "failed earlier: "


@dataclass(frozen=True)
class TrackFailure:
    """One failed track, its analyses grouped under one reason.

    Attributes
    ----------
    track_id : str
    reason : str
        The root reason (not "upstream ... failed"), without the ``track 'ID': `` prefix.
    analyses : list of str
        Every analysis that failed for the track, in the order given.
    earlier : bool
        Held by a remembered failure (not tried in this run).
    """

    track_id: str
    reason: str
    analyses: list[str]
    earlier: bool = False

    def names(self, shown: int = NAMES_SHOWN) -> str:
        """``loudness, beats, +8``."""
        more = len(self.analyses) - shown
        return ", ".join(self.analyses[:shown]) + (f", +{more}" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        """``{"track_id", "reason", "analyses", "failed_earlier"}``."""
        return {
            "track_id": self.track_id,
            "reason": self.reason,
            "analyses": self.analyses,
            "failed_earlier": self.earlier,
        }


def _root_reason(track_id: str, reason: str) -> str:
    while (found := _UPSTREAM.match(reason)) is not None:
        reason = reason[found.end() :]
    for prefix in (f"track {track_id!r}: ", f'track "{track_id}": '):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


def group_failures(failed: Mapping[str, Mapping[str, str]]) -> list[TrackFailure]:
    """Per-analysis failures regrouped per track: one entry per failed track.

    Parameters
    ----------
    failed : mapping
        Analysis name (in the order to show) to track ID to the reason; a reason starting
        ``failed earlier: `` marks a remembered failure.

    Returns
    -------
    list of TrackFailure
        In the order tracks first appear. The reason is that of the first analysis that did
        not fail only because its upstream did.
    """
    per_track: dict[str, list[tuple[str, str]]] = {}
    for name, tracks in failed.items():
        for track_id, reason in tracks.items():
            per_track.setdefault(track_id, []).append((name, reason))
    out = []
    for track_id, entries in per_track.items():
        earlier = all(r.startswith(_EARLIER) for _, r in entries)
        texts = [r[len(_EARLIER) :] if r.startswith(_EARLIER) else r for _, r in entries]
        roots = [t for t in texts if not _UPSTREAM.match(t)] or texts
        out.append(
            TrackFailure(
                track_id=track_id,
                reason=_root_reason(track_id, roots[0]),
                analyses=[n for n, _ in entries],
                earlier=earlier,
            )
        )
    return out


def _by_analysis(pairs: Iterable[tuple[tuple[str, str], str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for (name, track_id), reason in pairs:
        out.setdefault(name, {})[track_id] = reason
    return out


def _count_rows(selected: Sequence[str], invocation: Invocation) -> dict[str, Counter[str]]:
    rows: dict[str, Counter[str]] = {name: Counter() for name in selected}
    for name, done in invocation.already_done.items():
        if done:
            rows[name]["skipped"] += len(done)
    for name, held in invocation.failed_earlier.items():
        if held and name in rows:
            rows[name]["failed_earlier"] += len(held)
    for name, todo in invocation.would_compute.items():
        if todo and name in rows:
            rows[name]["would_compute"] += len(todo)
    for run in invocation.runs:
        if run.summary:
            for name, counts in run.summary["assets"].items():
                rows[name].update(counts)
        else:  # the run died before its summary: every track counts as failed
            for name in selected:
                rows[name]["failed"] += len(run.track_ids)
    return rows


@dataclass
class RunReport:
    """What a ``klio-assets run`` did, summed over its runs.

    Attributes
    ----------
    invocation : Invocation
        The runs, the tracks found done, the catalog tables.
    rows : dict
        Analysis name to counts per status (``computed``, ``skipped``, ``failed``, and in a
        dry run ``would_compute``, ``would_skip``).
    tracks_detail : dict
        Track ID to analysis name to the per-track record of the run's summary.
    failed : dict
        ``(analysis, track ID)`` to the reason, for every failed track.
    audio_hours, computed_hours : float
        Hours of audio in the runs, and computed (not skipped).
    beam_seconds : float
        Wall seconds of the Beam jobs.
    beam_cpu_seconds : float or None
        CPU seconds of the Beam jobs, where the runner reports them.
    errors : list of str
        Run-level errors (a run that failed before its summary).
    """

    invocation: Invocation
    rows: dict[str, Counter[str]]
    tracks_detail: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    audio_hours: float = 0.0
    computed_hours: float = 0.0
    beam_seconds: float = 0.0
    beam_cpu_seconds: float | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_invocation(cls, invocation: Invocation, selected: Sequence[str]) -> RunReport:
        """Sum the runs' summaries.

        Parameters
        ----------
        invocation : Invocation
            What the command did.
        selected : sequence of str
            The analyses reported on (one row each, in this order).

        Returns
        -------
        RunReport
        """
        report = cls(invocation=invocation, rows=_count_rows(selected, invocation))
        for run in invocation.runs:
            if run.summary:
                report.tracks_detail.update(run.summary.get("tracks_detail", {}))
                report.audio_hours += run.summary.get("audio_hours", 0.0)
                report.computed_hours += run.summary.get("computed_audio_hours", 0.0)
                report.beam_seconds += run.summary.get("beam_seconds", 0.0)
                if run.summary.get("beam_cpu_seconds") is not None:
                    report.beam_cpu_seconds = (report.beam_cpu_seconds or 0.0) + run.summary[
                        "beam_cpu_seconds"
                    ]
            if run.error:
                report.errors.append(f"run {run.run_id}: {run.error}")
        for name, todo in invocation.would_compute.items():  # a dry run's plan
            for track_id in todo:
                report.tracks_detail.setdefault(track_id, {})[name] = {"status": "would_compute"}
        report.failed = {
            (name, t): rec.get("reason", "")
            for t, per in report.tracks_detail.items()
            for name, rec in per.items()
            if rec.get("status") == "failed"
        }
        return report

    @property
    def failures(self) -> int:
        """Failed tracks (per analysis) plus catalog tables not materialized: non-zero exits 1."""
        tables = sum(1 for t in self.invocation.catalog.values() if t["status"] != "materialized")
        return sum(c["failed"] for c in self.rows.values()) + tables

    @property
    def statuses(self) -> list[str]:
        """The status columns with a non-zero count, in :data:`STATUS_ORDER` (else ``skipped``)."""
        return [s for s in STATUS_ORDER if any(c[s] for c in self.rows.values())] or ["skipped"]

    @property
    def failed_tracks(self) -> list[TrackFailure]:
        """Every failed track, new failures first, then those that failed earlier."""
        new = group_failures(_by_analysis(self.failed.items()))
        earlier = group_failures(
            {
                name: dict(held)
                for name, held in self.invocation.failed_earlier.items()
                if name in self.rows
            }
        )
        seen = {f.track_id for f in new}
        return new + [f for f in earlier if f.track_id not in seen]

    def to_json(self) -> dict[str, Any]:
        """The ``klio-assets run --json`` object.

        Returns
        -------
        dict
            ``assets``, ``runs``, ``failed`` (``"analysis/track"`` to reason), ``tracks``,
            ``already_materialized``, ``audio_hours``, ``computed_audio_hours``,
            ``beam_seconds``, ``beam_cpu_seconds``, ``wall_seconds``, ``errors``, ``catalog``,
            ``failed_earlier`` (``"analysis/track"`` to the reason, for the tracks held by
            a remembered failure, not tried), and ``back_in_window`` (tracks out of Dagster's
            window that entered it again: :meth:`back_in_window_json`, or null).
        """
        cpu = self.beam_cpu_seconds
        return {
            "assets": {n: dict(c) for n, c in self.rows.items()},
            "runs": [r.run_id for r in self.invocation.runs],
            "failed": {f"{n}/{t}": reason for (n, t), reason in self.failed.items()},
            "tracks": self.tracks_detail,
            "already_materialized": self.invocation.already_done,
            "audio_hours": round(self.audio_hours, 4),
            "computed_audio_hours": round(self.computed_hours, 4),
            "beam_seconds": round(self.beam_seconds, 3),
            "beam_cpu_seconds": None if cpu is None else round(cpu, 3),
            "wall_seconds": self.invocation.wall_seconds,
            "errors": self.errors,
            "catalog": self.invocation.catalog,
            "failed_earlier": {
                f"{n}/{t}": reason
                for n, held in self.invocation.failed_earlier.items()
                for t, reason in held.items()
            },
            "back_in_window": self.back_in_window_json(),
        }

    def back_in_window_json(self) -> dict[str, Any] | None:
        """``{"tracks", "analyses", "runs", "success"}``: the wanted tracks that were out of
        Dagster's window and entered it again, the analyses the catalog had done for all of
        them, materialized again (skipped) by ``runs``; None when no track came back."""
        invocation = self.invocation
        if not invocation.back_in_window:
            return None
        return {
            "tracks": invocation.back_in_window,
            "analyses": invocation.window_sync_analyses,
            "runs": [r.run_id for r in invocation.window_sync],
            "success": all(r.success for r in invocation.window_sync),
        }
