"""Top-down: when a run materialized some analyses for a range of tracks, run their
descendants for the same range.

Dagster's ``AutomationCondition.eager()`` would do this, but evaluates every partition of
every asset on every tick (24-42 s per idle tick at 100k tracks). Here a tick reads only the
run-status events written since its cursor (one indexed query per status) and, per finished
run, its record: O(finished runs), nothing per registered track. The landing sensor already
selects every analysis in one fused run, so for its runs there is nothing to add; this
catches the runs that materialized only an upstream (the UI, ``klio-assets run
downsampled_audio``, a backfill of one asset).

The downstream selection is closed under descendants, so a propagated run has nothing
downstream of it left to propagate: no chain of runs, no loop. Dry runs propagate nothing;
a forced run propagates ``force`` (its outputs may have changed under the same version).
Tracks that failed in the finished run are left out (their descendants would only fail on
the missing input); the catalog backfill retries them. So are tracks whose every downstream
analysis failed earlier on the same file and version and is not to be retried
(:mod:`klio_assets.catalog.failures`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg

from klio_assets.automation.runs import TRIGGER_TAG, run_flags, run_requests, run_track_ids
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import RetryPolicy, held_failures
from klio_assets.orchestration.lineage import descendants
from klio_assets.orchestration.ranges import partition_ranges
from klio_assets.worker.plan import PlannedAnalysis

#: Finished runs read per status and tick (more wait for the next tick).
EVENTS_PER_TICK = 200
_STATUSES: tuple[Literal[dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE], ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
)


@dataclass
class Propagation:
    """One downstream request: a finished run, what follows it, and for which tracks."""

    upstream_run_id: str
    selected: list[str]
    ranges: list[list[str]]
    force: bool = False


@dataclass
class PropagationTick:
    """What one propagation tick saw and requests.

    Attributes
    ----------
    runs_seen : int
        Finished runs read this tick.
    requests : list of Propagation
    cursor : str
    """

    runs_seen: int = 0
    requests: list[Propagation] = field(default_factory=list)
    cursor: str = ""


def _latest_storage_id(instance: dg.DagsterInstance) -> int:
    latest = 0
    for status in _STATUSES:
        records = instance.fetch_run_status_changes(status, limit=1, ascending=False).records
        if records:
            latest = max(latest, records[0].storage_id)
    return latest


def propagation_tick(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    cursor: str | None,
    graph: Mapping[str, Sequence[str]],
    allowed: Sequence[str],
    batch_size: int,
    planned: Mapping[str, PlannedAnalysis] | None = None,
    policy: RetryPolicy | None = None,
) -> PropagationTick:
    """Read the runs finished since ``cursor`` and say which downstream runs follow.

    Parameters
    ----------
    graph : mapping
        Analysis name to the names it depends on (:func:`klio_assets.orchestration.lineage.parents`).
    allowed : sequence of str
        Analyses that may be requested (``KLIO_ASSETS_AUTO_ANALYSES``), in topological order.
    planned : mapping, optional
        Every analysis' plan (current versions): with it, tracks held by a remembered failure
        of every downstream analysis are left out (``policy``: when transient ones are not).

    A first tick (no cursor) starts after the latest finished run: history is the catalog
    backfill's business, not a flood of runs at deployment.
    """
    tick = PropagationTick()
    if not cursor:
        tick.cursor = json.dumps({"after": _latest_storage_id(instance)})
        return tick
    after = int(json.loads(cursor)["after"])
    batches = []
    for status in _STATUSES:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=status, after_storage_id=after),
            limit=EVENTS_PER_TICK,
            ascending=True,
        )
        batches.append(list(result.records))
    # A full batch of one status may stop before events of the other: advance only to the
    # point both are complete.
    limit_id = min((b[-1].storage_id for b in batches if len(b) == EVENTS_PER_TICK), default=None)
    records = sorted((r for b in batches for r in b), key=lambda r: r.storage_id)
    if limit_id is not None:
        records = [r for r in records if r.storage_id <= limit_id]
    tick.cursor = json.dumps({"after": records[-1].storage_id if records else after})
    tick.runs_seen = len(records)
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        follow_up = _follow_up(instance, catalog, run, graph, allowed, batch_size)
        if follow_up is not None and planned is not None:
            follow_up = _without_held(instance, catalog, follow_up, planned, policy, batch_size)
        if follow_up is not None:
            tick.requests.append(follow_up)
    return tick


def _follow_up(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    run: dg.DagsterRun | None,
    graph: Mapping[str, Sequence[str]],
    allowed: Sequence[str],
    batch_size: int,
) -> Propagation | None:
    """The downstream request after ``run``, if any (none for dry runs, other jobs, runs
    with nothing downstream or whose tracks all failed)."""
    if run is None or not run.asset_selection:
        return None
    selection = {k.to_user_string() for k in run.asset_selection}
    if not selection <= set(graph):
        return None  # not a run of the analyses (catalog tables, other jobs)
    force, dry_run = run_flags(run)
    if dry_run:
        return None
    downstream = [name for name in allowed if name in descendants(graph, selection) - selection]
    if not downstream:
        return None
    track_ids = run_track_ids(instance, run)
    failed: set[str] = set()
    for name in selection:
        failed |= set(catalog.failures(name, track_ids))
    ranges = partition_ranges(instance, [t for t in track_ids if t not in failed], batch_size)
    return Propagation(run.run_id, downstream, ranges, force) if ranges else None


def _without_held(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    follow_up: Propagation,
    planned: Mapping[str, PlannedAnalysis],
    policy: RetryPolicy | None,
    batch_size: int,
) -> Propagation | None:
    """``follow_up`` without the tracks every downstream analysis of which failed earlier."""
    if follow_up.force:  # a forced run's outputs may have changed: the follow-up tries all
        return follow_up
    track_ids = [t for r in follow_up.ranges for t in r]
    held = held_failures(catalog, planned, follow_up.selected, track_ids, policy or RetryPolicy())
    skip = set.intersection(*(set(held[n]) for n in follow_up.selected))
    if not skip:
        return follow_up
    ranges = partition_ranges(instance, [t for t in track_ids if t not in skip], batch_size)
    return dataclasses.replace(follow_up, ranges=ranges) if ranges else None


def propagation_run_requests(tick: PropagationTick) -> list[dg.RunRequest]:
    """The tick's ``RunRequest``s (run keys name the upstream run: one follow-up each)."""
    out = []
    for request in tick.requests:
        out.extend(
            run_requests(
                request.ranges,
                selected=request.selected,
                trigger="propagation",
                key_prefix=f"after-{request.upstream_run_id}",
                force=request.force,
                extra_tags={"klio/upstream_run": request.upstream_run_id},
            )
        )
    return out


__all__ = [
    "TRIGGER_TAG",
    "Propagation",
    "PropagationTick",
    "propagation_run_requests",
    "propagation_tick",
]
