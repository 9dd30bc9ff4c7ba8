"""The window's retention: tracks done for every analysis leave Dagster; the catalog keeps them.

Each tick goes through the next page of the window (``KLIO_ASSETS_WINDOW_CHECKS_PER_TICK``
tracks, in the order they entered it; after the last page it starts again) and takes out
those that

* entered the window more than ``KLIO_ASSETS_WINDOW_RETAIN_S`` ago,
* are settled for every analysis the automation runs: done at its current version (the
  catalog's ledger), or failed at it for good (a permanent failure, or a transient one whose
  retries are used up: :func:`klio_assets.catalog.work.settled_failures`), and
* are in no queued or running run.

A settled failure leaves too, or a run with one broken track among a thousand would keep all
their events; ``klio-assets status --failed`` and ``tracks --failed`` still list it, from
the catalog, and it comes back when its file or the analysis' version changes.

Their ``tracks`` partitions are deleted; ``klio-assets show``, ``status``, ``tracks`` and
``track_features`` answer for them from the catalog. Then the per-partition events go: the
finished runs of the analyses job older than the retention whose tracks have all left the
window are deleted (``DagsterInstance.delete_run``: the run and its events), a page of runs
per tick. A track that needs work again enters the window again
(:mod:`klio_assets.automation.catalog_ranges`, :mod:`klio_assets.automation.source_changes`).

A tick costs its page (one query on the window, one on the ledger per chunk of tracks) plus
the runs it looks at: nothing grows with the catalog.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.automation.backfill import in_flight_tracks
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import RetryPolicy
from klio_assets.catalog.work import current_in_ledger, settled_failures
from klio_assets.orchestration.window import leave, run_tracks_in_window, window_page

#: Finished runs looked at per tick for deletion.
RUNS_PER_TICK = 100
_FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


@dataclass
class RetentionTick:
    """What one retention tick looked at and did.

    Attributes
    ----------
    checked : int
        Window tracks looked at.
    left : list of str
        Tracks taken out of the window (in a dry run: those that would be).
    left_failed : int
        Of ``left``, those with a settled failure (not retried on their own).
    working : int
        Checked tracks kept because some analysis is not done (or failed) for them.
    young : int
        Checked tracks kept because they entered the window too recently.
    in_flight : int
        Checked tracks kept because a queued or running run covers them.
    runs_deleted : list of str
        Run IDs deleted with their events (in a dry run: those that would be).
    cursor : str
        The next tick's cursor (JSON: the window row and the run to continue after).
    """

    checked: int = 0
    left: list[str] = field(default_factory=list)
    left_failed: int = 0
    working: int = 0
    young: int = 0
    in_flight: int = 0
    runs_deleted: list[str] = field(default_factory=list)
    cursor: str = ""


def _read_cursor(cursor: str | None) -> tuple[int, str | None]:
    try:
        state = json.loads(cursor) if cursor else {}
        return int(state.get("after_id", 0)), state.get("after_run") or None
    except (ValueError, TypeError, AttributeError):
        return 0, None


def retention_tick(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    versions: Mapping[str, str],
    job_name: str,
    cursor: str | None,
    per_tick: int,
    retain_s: float,
    policy: RetryPolicy,
    inputs: Mapping[str, Sequence[str]] | None = None,
    now: float | None = None,
    dry_run: bool = False,
) -> RetentionTick:
    """One retention tick: take done tracks out of the window, delete runs of tracks all out.

    Parameters
    ----------
    versions : mapping of str to str
        The analyses the automation runs (topological order), to their current versions.
    job_name : str
        The analyses job: only its runs are deleted.
    per_tick : int
        Window tracks looked at per tick.
    retain_s : float
        Seconds a track stays in the window after entering it, and a run after it started.
    policy : RetryPolicy
        Which transient failures are still retried (work to do).
    inputs : mapping, optional
        Analysis name to the analyses it reads: an upstream's settled failure settles it.
    dry_run : bool
        Change nothing; ``left`` and ``runs_deleted`` say what would go.
    """
    now = time.time() if now is None else now
    after_id, after_run = _read_cursor(cursor)
    page = window_page(instance, after_id=after_id, limit=per_tick)
    tick = RetentionTick(checked=len(page))
    old = [track_id for _, track_id, entered in page if entered <= now - retain_s]
    tick.young = len(page) - len(old)
    busy: set[str] = set()
    if old:
        for tracks in in_flight_tracks(instance).values():
            busy |= tracks
    candidates = [t for t in old if t not in busy]
    tick.in_flight = len(old) - len(candidates)
    done = current_in_ledger(catalog, candidates, versions)
    failed = settled_failures(catalog, candidates, versions, policy, inputs)
    for track_id in candidates:
        if all(track_id in done[a] or track_id in failed[a] for a in versions):
            tick.left.append(track_id)
            tick.left_failed += any(track_id not in done[a] for a in versions)
    tick.working = len(candidates) - len(tick.left)
    if tick.left and not dry_run:
        leave(instance, tick.left)
    next_run = _delete_runs(instance, tick, job_name, after_run, now - retain_s, dry_run=dry_run)
    next_id = page[-1][0] if len(page) == per_tick else 0
    tick.cursor = json.dumps({"after_id": next_id, "after_run": next_run})
    return tick


def _delete_runs(
    instance: dg.DagsterInstance,
    tick: RetentionTick,
    job_name: str,
    after_run: str | None,
    before: float,
    *,
    dry_run: bool,
) -> str | None:
    """Delete the next page of old finished runs whose tracks all left the window; the run to
    continue after next tick (None: start again from the oldest)."""
    filters = dg.RunsFilter(
        job_name=job_name,
        statuses=_FINISHED,
        created_before=datetime.datetime.fromtimestamp(before, tz=datetime.UTC),
    )
    try:
        records = instance.get_run_records(
            filters=filters, limit=RUNS_PER_TICK, ascending=True, cursor=after_run
        )
    except dg.DagsterInvariantViolationError:  # the cursor's run was deleted meanwhile
        records = instance.get_run_records(filters=filters, limit=RUNS_PER_TICK, ascending=True)
    last: str | None = None
    leaving = set(tick.left)  # gone already, or in a dry run as good as gone
    for record in records:
        run_id = record.dagster_run.run_id
        if run_tracks_in_window(instance, run_id) - leaving:
            last = run_id
            continue
        tick.runs_deleted.append(run_id)
        if not dry_run:
            instance.delete_run(run_id)
    return last if len(records) == RUNS_PER_TICK else None


__all__ = ["RUNS_PER_TICK", "RetentionTick", "retention_tick"]
