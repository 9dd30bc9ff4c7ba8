"""Typed per-track records: what a run found or did for each track and analysis.

The Engine produces a :class:`TrackResult` per track; the Beam workers write it as one JSON
file per track (:meth:`TrackResult.to_json`) under the run's results folder, and the
orchestrator reads it back (:meth:`TrackResult.from_json`). That boundary is the only place a
record is a dict; everywhere else it is these classes, and a status is a :class:`Status`.

The JSON is the one written before these classes existed: an outcome's keys appear only when
set, in the same order, so summaries and ``--json`` output stay identical.

This module imports nothing from Dagster or Beam.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from typing import Any

from klio_assets.errors import is_permanent


class Status(enum.StrEnum):
    """What happened to one analysis of one track."""

    #: The output was computed and committed in this run.
    COMPUTED = "computed"
    #: The output already existed for this version, or was shared from identical content.
    SKIPPED = "skipped"
    #: The analysis could not be done for this track (the outcome's ``reason`` says why).
    FAILED = "failed"
    #: Dry run: would be computed.
    WOULD_COMPUTE = "would_compute"
    #: Dry run: would be skipped (exists, or shared from identical content).
    WOULD_SKIP = "would_skip"

    @property
    def done(self) -> bool:
        """Whether the output exists for the current version (materialized in Dagster)."""
        return self in (Status.COMPUTED, Status.SKIPPED)


#: Standard per-track facts, kept at the top of a record (the rest goes under ``metadata``).
STANDARD_FACTS = ("duration_s", "sample_rate", "channels")

#: Outcome fields in the order they are serialized (the order of the former dict records).
_ORDER = (
    "status",
    "reason",
    "error",
    "uri",
    "shared_from",
    "version",
    "seconds",
    "duration_s",
    "sample_rate",
    "channels",
    "metadata",
    "permanent",
)


@dataclasses.dataclass
class AnalysisOutcome:
    """One analysis of one track.

    Parameters
    ----------
    status : Status
    reason : str, optional
        Why it failed: one line naming the track, the file and the problem.
    error : str, optional
        Name of the exception class behind a failure (``DecodeError``, ``TrackTimeout``...).
    uri : str, optional
        The output (written, existing, or that would be written in a dry run).
    shared_from : str, optional
        Track whose output was copied (identical source bytes).
    version : str, optional
        Code version of the analysis that produced the output.
    seconds : float, optional
        Wall time spent on it in this run, seconds (0 when skipped).
    duration_s, sample_rate, channels : optional
        Length (seconds), rate (Hz) and channels of the audio the output describes.
    metadata : dict, optional
        The analysis' own metadata (JSON values).
    permanent : bool, optional
        For a failure: whether the same input would fail the same way again (not audio,
        truncated, over a limit, an exception in the analysis), so that it is remembered and
        not retried until the file or the analysis' version changes; False for a transient
        one (storage, timeout, a lost worker), retried a bounded number of times.
    """

    status: Status
    reason: str | None = None
    error: str | None = None
    uri: str | None = None
    shared_from: str | None = None
    version: str | None = None
    seconds: float | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    metadata: dict[str, Any] | None = None
    permanent: bool | None = None

    @classmethod
    def failed(
        cls, reason: str, error: BaseException | None = None, *, permanent: bool | None = None
    ) -> AnalysisOutcome:
        """A failure with its one-line ``reason`` (and the exception's class name).

        Its class (:attr:`permanent`) is ``permanent`` when given, else the exception's
        (:func:`klio_assets.errors.is_permanent`), else permanent: a failure found without an
        exception (a missing file, a failed upstream) describes the input.
        """
        if permanent is None:
            permanent = is_permanent(error) if error is not None else True
        return cls(
            status=Status.FAILED,
            reason=reason.replace("\n", " "),
            error=type(error).__name__ if error is not None else None,
            permanent=permanent,
        )

    @property
    def transient(self) -> bool:
        """Whether this is a failure that a later run may not meet (retried, bounded)."""
        return self.status == Status.FAILED and self.permanent is False

    def describe(self, described: Mapping[str, Any]) -> None:
        """Take the standard facts of ``described`` as fields, the rest as ``metadata``."""
        for key in STANDARD_FACTS:
            if key in described:
                setattr(self, key, described[key])
        extra = {k: v for k, v in described.items() if k not in STANDARD_FACTS}
        if extra:
            self.metadata = {**(self.metadata or {}), **extra}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this outcome (unset fields left out)."""
        out: dict[str, Any] = {}
        for name in _ORDER:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value) if name == "status" else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisOutcome:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {k: data[k] for k in _ORDER if k in data and k != "status"}
        return cls(status=Status(data["status"]), **known)


@dataclasses.dataclass(frozen=True)
class SourceStat:
    """What one stat of a track's source says: enough to notice that the file changed.

    Results record the stat of the source they were computed from; a later stat that
    differs means they describe a file that is no longer there (no hash needed).

    Parameters
    ----------
    size_bytes : int
    modified : str
        ``st_mtime_ns`` of a local file; the object's generation, ETag or update time in an
        object store.
    """

    size_bytes: int
    modified: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this stat."""
        return {"size_bytes": self.size_bytes, "modified": self.modified}

    @classmethod
    def from_dict(cls, data: Any) -> SourceStat | None:
        """Inverse of :meth:`to_dict`; None when ``data`` is not a stat."""
        try:
            return cls(size_bytes=int(data["size_bytes"]), modified=str(data["modified"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclasses.dataclass
class TrackResult:
    """Every selected analysis of one track in one run.

    Parameters
    ----------
    track_id : str
    uri : str
        The track's source audio.
    analyses : dict
        Analysis name to its :class:`AnalysisOutcome`.
    content_hash : str, optional
        Hash of the source bytes (known when the source was read).
    source_stat : SourceStat, optional
        The source's stat as this run saw it (the catalog's ledger keeps it to notice a
        changed file).
    """

    track_id: str
    uri: str
    analyses: dict[str, AnalysisOutcome] = dataclasses.field(default_factory=dict)
    content_hash: str | None = None
    source_stat: SourceStat | None = None

    def status(self, name: str) -> Status:
        """Status of analysis ``name`` (failed when the track has no outcome for it)."""
        outcome = self.analyses.get(name)
        return outcome.status if outcome is not None else Status.FAILED

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this result."""
        out: dict[str, Any] = {
            "track_id": self.track_id,
            "uri": self.uri,
            "analyses": {n: o.to_dict() for n, o in self.analyses.items()},
        }
        if self.content_hash is not None:
            out["content_hash"] = self.content_hash
        if self.source_stat is not None:
            out["source_stat"] = self.source_stat.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            track_id=str(data["track_id"]),
            uri=str(data.get("uri", "")),
            analyses={
                str(n): AnalysisOutcome.from_dict(o) for n, o in data.get("analyses", {}).items()
            },
            content_hash=data.get("content_hash"),
            source_stat=SourceStat.from_dict(data.get("source_stat")),
        )

    def to_json(self) -> str:
        """Serialized for the worker -> orchestrator boundary (one file per track)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> TrackResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
