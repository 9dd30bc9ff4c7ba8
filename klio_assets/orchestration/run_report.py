"""The outcome of a ``klio-assets run`` in figures: per analysis counts, failures, audio hours.

Imports no Dagster: the all-done answer of ``klio-assets run`` reports through it too. The
``--json`` form (:meth:`RunReport.to_json`) is a contract: its keys do not change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from klio_assets.orchestration.invocation import Invocation

#: The order of the status columns in the human table.
STATUS_ORDER = ("computed", "skipped", "failed", "would_compute", "would_skip")


def _count_rows(selected: Sequence[str], invocation: Invocation) -> dict[str, Counter[str]]:
    rows: dict[str, Counter[str]] = {name: Counter() for name in selected}
    for name, done in invocation.already_done.items():
        if done:
            rows[name]["skipped"] += len(done)
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

    def to_json(self) -> dict[str, Any]:
        """The ``klio-assets run --json`` object.

        Returns
        -------
        dict
            ``assets``, ``runs``, ``failed`` (``"analysis/track"`` to reason), ``tracks``,
            ``already_materialized``, ``audio_hours``, ``computed_audio_hours``,
            ``beam_seconds``, ``beam_cpu_seconds``, ``wall_seconds``, ``errors``, ``catalog``.
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
        }
