"""Failures remembered, so that a broken file is not retried forever.

A run records every failed analysis of a track here (:func:`remember_failures`, from the
run's report), with its class (:attr:`~klio_assets.worker.records.AnalysisOutcome.permanent`)
and the source it failed on. From then on the failure is *held*, that is the track is not
tried again for that analysis by ``klio-assets run``, the sensors or the backfill schedule,
and it is reported as "failed earlier: <reason>" (:func:`held_failures`), while:

* the analysis' version is the one that failed (a code-version or parameter bump retries);
* the source's stat is the one it failed on (a changed or touched file retries);
* for a **permanent** failure (not audio, truncated, over a limit, an exception in the
  analysis): always;
* for a **transient** one (storage, timeout, a lost worker): during its backoff
  (``backoff_s * 2 ** (attempts - 1)`` seconds after the failure; the automation waits it
  out, ``klio-assets run`` does not), and for good once it has failed more than
  ``max_transient_retries`` runs in a row.

``--retry-failed`` forgets them (:func:`forget_failures`); a success forgets the track's
failure of that analysis (:meth:`~klio_assets.catalog.database.TrackCatalog.record_outcomes`).
One query per analysis and one stat per failed track: cheap enough for the all-done answer.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klio_assets.catalog.sqlite_reader import SqliteCatalogReader
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.records import SourceStat, Status, TrackResult
from klio_assets.worker.storage import source_stat

if TYPE_CHECKING:  # SQLAlchemy is imported where it is used: not by the all-done answer
    from klio_assets.catalog.database import TrackCatalog

__all__ = [
    "FAILED_EARLIER",
    "RememberedFailure",
    "RetryPolicy",
    "forget_failures",
    "held_failures",
    "remember_failures",
    "remembered",
]

#: How a held failure's reason starts wherever it is shown.
FAILED_EARLIER = "failed earlier"
_CHUNK = 5000


@dataclass(frozen=True)
class RetryPolicy:
    """When a transient failure is tried again.

    Parameters
    ----------
    max_transient_retries : int
        Runs after the first failure that may try it again; after that it is held like a
        permanent failure (until ``--retry-failed``).
    backoff_s : float
        Seconds after the first failure before a retry; doubled after each failed retry.
    """

    max_transient_retries: int = 3
    backoff_s: float = 60.0


@dataclass(frozen=True)
class RememberedFailure:
    """One analysis of one track that failed, as remembered.

    Attributes
    ----------
    asset, track_id, version, reason : str
    permanent : bool
    attempts : int
        Runs in a row that met this failure (same version, same source).
    failed_at : float
        Unix time of the latest failure.
    error : str or None
        The exception's class name.
    content_hash : str or None
        Hash of the source bytes, where the run read them.
    source_stat : SourceStat or None
        The source's stat when it failed (None: it could not be stat'ed).
    """

    asset: str
    track_id: str
    version: str
    reason: str
    permanent: bool
    attempts: int
    failed_at: float
    error: str | None = None
    content_hash: str | None = None
    source_stat: SourceStat | None = None

    def retry_at(self, policy: RetryPolicy) -> float | None:
        """Unix time from which a run may try it again; None: not before ``--retry-failed``."""
        if self.permanent or self.attempts > policy.max_transient_retries:
            return None
        return float(self.failed_at + policy.backoff_s * 2.0 ** (self.attempts - 1))

    def held_line(self, policy: RetryPolicy) -> str:
        """``failed earlier: <reason>``, with when a transient failure is tried again."""
        line = f"{FAILED_EARLIER}: {self.reason}"
        if self.permanent:
            return line
        at = self.retry_at(policy)
        if at is None:
            return f"{line} (transient; gave up after {self.attempts} tries: --retry-failed)"
        when = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%H:%M:%S UTC")
        return f"{line} (transient, try {self.attempts}; tried again after {when})"


def _row_failure(row: Any) -> RememberedFailure:
    stat = (
        SourceStat(size_bytes=int(row.size_bytes), modified=str(row.modified))
        if row.size_bytes is not None and row.modified is not None
        else None
    )
    return RememberedFailure(
        asset=row.asset,
        track_id=row.track_id,
        version=row.version,
        reason=row.reason,
        permanent=bool(row.permanent),
        attempts=int(row.attempts),
        failed_at=float(row.failed_at),
        error=row.error,
        content_hash=row.content_hash,
        source_stat=stat,
    )


def remembered(
    catalog: TrackCatalog | SqliteCatalogReader, asset: str, track_ids: Sequence[str] | None = None
) -> dict[str, RememberedFailure]:
    """The remembered failures of ``asset`` (all versions), by track.

    Parameters
    ----------
    catalog : TrackCatalog or SqliteCatalogReader
    asset : str
    track_ids : sequence of str, optional
        Only these tracks (default: every track with a remembered failure).
    """
    if isinstance(catalog, SqliteCatalogReader):
        return {row.track_id: _row_failure(row) for row in catalog.failure_memory(asset, track_ids)}
    import sqlalchemy as sa  # noqa: PLC0415

    from klio_assets.catalog.database import FAILURE_MEMORY  # noqa: PLC0415

    query = sa.select(FAILURE_MEMORY).where(FAILURE_MEMORY.c.asset == asset)
    out: dict[str, RememberedFailure] = {}
    with catalog.engine.connect() as conn:
        if track_ids is None:
            rows = list(conn.execute(query))
        else:
            ids = list(dict.fromkeys(track_ids))
            rows = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                rows.extend(conn.execute(query.where(FAILURE_MEMORY.c.track_id.in_(chunk))))
    for row in rows:
        out[row.track_id] = _row_failure(row)
    return out


def remember_failures(
    catalog: TrackCatalog,
    asset: str,
    *,
    version: str,
    run_id: str,
    results: Sequence[TrackResult],
) -> None:
    """Remember the failures of ``asset`` among ``results`` (a run's report calls this).

    A track is remembered as failing transiently when any of its analyses did (a failed
    upstream's class carries over, and a track whose storage or worker let it down says
    nothing about its file). A transient failure met again on the same version and source
    counts one more attempt.

    Parameters
    ----------
    catalog : TrackCatalog
    asset : str
        The analysis.
    version : str
        Its current version.
    run_id : str
    results : sequence of TrackResult
        The batch's results; only the failed outcomes of ``asset`` are recorded.
    """
    failed = [
        (r, o)
        for r in results
        if (o := r.analyses.get(asset)) is not None and o.status == Status.FAILED
    ]
    if not failed:
        return
    previous = remembered(catalog, asset, [r.track_id for r, _ in failed])
    now = time.time()
    rows = []
    for result, outcome in failed:
        transient = any(o.transient for o in result.analyses.values())
        permanent = outcome.permanent is not False and not transient
        before = previous.get(result.track_id)
        again = (
            before is not None
            and not before.permanent
            and not permanent
            and before.version == version
            and before.source_stat == result.source_stat
        )
        stat = result.source_stat
        rows.append(
            {
                "asset": asset,
                "track_id": result.track_id,
                "version": version,
                "permanent": permanent,
                "attempts": before.attempts + 1 if again and before else 1,
                "reason": outcome.reason or "failed",
                "error": outcome.error,
                "content_hash": result.content_hash,
                "size_bytes": stat.size_bytes if stat else None,
                "modified": stat.modified if stat else None,
                "run_id": run_id,
                "failed_at": now,
            }
        )
    from klio_assets.catalog.database import FAILURE_MEMORY  # noqa: PLC0415

    ids = [row["track_id"] for row in rows]

    def write(conn: Any) -> None:
        for start in range(0, len(ids), _CHUNK):
            conn.execute(
                FAILURE_MEMORY.delete().where(
                    FAILURE_MEMORY.c.asset == asset,
                    FAILURE_MEMORY.c.track_id.in_(ids[start : start + _CHUNK]),
                )
            )
        conn.execute(FAILURE_MEMORY.insert(), rows)

    catalog.replacing(write)  # two runs failing on the same track at once


def forget_failures(
    catalog: TrackCatalog, assets: Sequence[str], track_ids: Sequence[str] | None = None
) -> None:
    """Forget the remembered failures of ``assets`` (``--retry-failed``), for every track or
    for ``track_ids``."""
    from klio_assets.catalog.database import FAILURE_MEMORY  # noqa: PLC0415

    with catalog.engine.begin() as conn:
        if track_ids is None:
            conn.execute(FAILURE_MEMORY.delete().where(FAILURE_MEMORY.c.asset.in_(list(assets))))
            return
        ids = list(dict.fromkeys(track_ids))
        for start in range(0, len(ids), _CHUNK):
            conn.execute(
                FAILURE_MEMORY.delete().where(
                    FAILURE_MEMORY.c.asset.in_(list(assets)),
                    FAILURE_MEMORY.c.track_id.in_(ids[start : start + _CHUNK]),
                )
            )


def held_failures(
    catalog: TrackCatalog | SqliteCatalogReader,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    track_ids: Sequence[str] | None,
    policy: RetryPolicy,
    *,
    inputs: Mapping[str, Sequence[str]] | None = None,
    now: float | None = None,
) -> dict[str, dict[str, str]]:
    """Per analysis, the tracks not to try again now, each with its ``failed earlier`` line.

    With ``inputs``, a track held for an analysis is held for every analysis downstream of
    it too (they read its output, which will not be there).

    Parameters
    ----------
    catalog : TrackCatalog or SqliteCatalogReader
    planned : mapping of str to PlannedAnalysis
        Every analysis at its current version.
    selected : sequence of str
        The analyses asked about.
    track_ids : sequence of str or None
        The wanted tracks; None for every track.
    policy : RetryPolicy
    inputs : mapping of str to sequence of str, optional
        Analysis name to the analyses it reads (in ``planned``'s topological order).
    now : float, optional
        Unix time (default: now).

    Returns
    -------
    dict of str to dict of str to str
        Every key of ``selected``; the tracks whose remembered failure still holds.
    """
    now = time.time() if now is None else now
    asked = list(selected)
    if inputs:  # the upstreams' failures hold their descendants
        closure = set(asked)
        for name in reversed(list(planned)):
            if name in closure:
                closure.update(inputs.get(name, ()))
        asked = [n for n in planned if n in closure]
    candidates: dict[str, list[RememberedFailure]] = {}
    for name in asked:
        found = remembered(catalog, name, track_ids)
        candidates[name] = [
            f
            for f in found.values()
            if f.version == planned[name].version
            and ((at := f.retry_at(policy)) is None or now < at)
        ]
    ids = sorted({f.track_id for failures in candidates.values() for f in failures})
    uris = catalog.resolve(ids) if ids else {}
    current: dict[str, SourceStat | None] = {}
    held: dict[str, dict[str, str]] = {name: {} for name in asked}
    for name, failures in candidates.items():
        for failure in failures:
            uri = uris.get(failure.track_id)
            if uri is None:  # no longer registered: nothing to hold
                continue
            if failure.track_id not in current:
                current[failure.track_id] = source_stat(uri)
            if current[failure.track_id] != failure.source_stat:
                continue  # the file changed (or appeared, or went): try it again
            held[name][failure.track_id] = failure.held_line(policy)
    for name in asked:  # topological order: an upstream is complete before its readers
        for upstream in (inputs or {}).get(name, ()):
            for track_id, line in held.get(upstream, {}).items():
                reason = line[len(FAILED_EARLIER) + 2 :]
                held[name].setdefault(
                    track_id,
                    f"{FAILED_EARLIER}: upstream {upstream!r} failed for this track: {reason}",
                )
    return {name: held[name] for name in selected}
