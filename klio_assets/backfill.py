"""Scheduled catalog backfill: per analysis, the tracks missing, failed or stale, in bounded runs.

* **missing**: registered, never materialized (Dagster's materialized partitions);
* **failed**: the catalog holds a failure reason (failed tracks are not materialized);
* **stale**: materialized, but the analysis' output version changed since (a code-version or
  parameter bump, or an upstream's). Finding them means listing the new version's outputs,
  so it is done only when the version differs from the one recorded as fully requested
  (``klio_state``; schedules have no cursor): a bump re-requests exactly the tracks whose
  output for the new version does not exist, once. Other ticks cost no output listing.

Tracks needing the same set of analyses go in the same runs (one Beam job computes them all,
reading each source once), in contiguous ranges of at most ``batch_size``; a tick launches at
most ``max_runs`` runs (the rest waits for the next tick) and skips tracks of runs still queued
or running, so a slow backfill is not requested twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.catalog import TrackCatalog
from klio_assets.launch import contiguous_ranges, existing_outputs
from klio_assets.partitions import TRACKS
from klio_assets.propagation import _run_tracks
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage

#: ``klio_state`` key of the versions whose stale tracks were all requested.
STATE_KEY = "backfill_versions"
_IN_FLIGHT = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


@dataclass
class BackfillRun:
    """One run to launch: analyses and one contiguous range of tracks."""

    selected: list[str]
    track_ids: list[str]


@dataclass
class BackfillPlan:
    """What a backfill tick found and requests.

    Attributes
    ----------
    reasons : dict
        Per analysis, ``{"missing": n, "failed": n, "stale": n, "in_flight": n}``.
    runs : list of BackfillRun
        At most ``max_runs``.
    deferred_runs : int
        Runs left for the next ticks by the cap.
    state : dict
        The ``klio_state`` document to store once the runs are requested.
    scanned_for_stale : list of str
        Analyses whose outputs were listed this tick (a version changed).
    """

    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    runs: list[BackfillRun] = field(default_factory=list)
    deferred_runs: int = 0
    state: dict[str, dict[str, str]] = field(default_factory=dict)
    scanned_for_stale: list[str] = field(default_factory=list)


def in_flight_tracks(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """Per analysis, the tracks of runs queued or running (O(runs in flight))."""
    out: dict[str, set[str]] = defaultdict(set)
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT)):
        if not run.asset_selection:
            continue
        tracks = _run_tracks(instance, run)
        for key in run.asset_selection:
            out[key.to_user_string()].update(tracks)
    return out


def plan_backfill(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    storage: Storage,
    *,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    batch_size: int,
    max_runs: int,
    tick: str,
) -> BackfillPlan:
    """Find missing, failed and stale tracks per analysis and cut them into bounded runs.

    Parameters
    ----------
    planned : mapping
        Every analysis' plan (for its current output version).
    selected : sequence of str
        Analyses the backfill covers, in topological order.
    tick : str
        Identifies this schedule tick (its scheduled time): a tick evaluated again after a
        crash, before its runs were submitted, scans again instead of trusting what it stored.
    """
    plan = BackfillPlan()
    ordered = list(instance.get_dynamic_partitions(TRACKS))
    registered = set(ordered)
    busy = in_flight_tracks(instance)
    previous = catalog.get_state(STATE_KEY)
    need: dict[str, set[str]] = {}
    stale_by: dict[str, set[str]] = {}
    for name in selected:
        version = planned[name].version
        materialized = set(instance.get_materialized_partitions(dg.AssetKey(name))) & registered
        missing = registered - materialized
        failed = set(catalog.failures(name)) & registered
        seen = previous.get(name, {})
        stale: set[str] = set()
        if seen.get("version") != version or seen.get("tick") == tick:
            plan.scanned_for_stale.append(name)
            done = existing_outputs(storage, planned[name], sorted(materialized)) if materialized else set()
            stale = materialized - done
        stale_by[name] = stale
        wanted = missing | failed | stale
        need[name] = wanted - busy.get(name, set())
        plan.reasons[name] = {
            "missing": len(missing - failed),
            "failed": len(failed),
            "stale": len(stale - failed),
            "in_flight": len(wanted & busy.get(name, set())),
        }
    by_set: dict[frozenset[str], list[str]] = defaultdict(list)
    per_track: dict[str, list[str]] = defaultdict(list)
    for name in selected:
        for track_id in need[name]:
            per_track[track_id].append(name)
    for track_id, names in per_track.items():
        by_set[frozenset(names)].append(track_id)
    all_runs = []
    for names, track_ids in sorted(by_set.items(), key=lambda kv: (-len(kv[1]), sorted(kv[0]))):
        for track_range in contiguous_ranges(ordered, track_ids, batch_size):
            all_runs.append(BackfillRun([n for n in selected if n in names], track_range))
    plan.runs = all_runs[:max_runs]
    plan.deferred_runs = len(all_runs) - len(plan.runs)
    requested: dict[str, set[str]] = defaultdict(set)
    for run in plan.runs:
        for name in run.selected:
            requested[name].update(run.track_ids)
    plan.state = dict(previous)
    for name in selected:
        # Record the version as done only when every stale track is requested (or running).
        pending = stale_by[name] - requested[name] - busy.get(name, set())
        if not pending:
            plan.state[name] = {"version": planned[name].version, "tick": tick}
    return plan


def backfill_run_requests(plan: BackfillPlan, *, tick: str, force: bool = False) -> list[dg.RunRequest]:
    """The plan's ``RunRequest``s; run keys name the tick and the range."""
    from klio_assets.landing import run_requests  # noqa: PLC0415

    out = []
    for run in plan.runs:
        out.extend(
            run_requests([run.track_ids], selected=run.selected, trigger="backfill", key_prefix=f"backfill-{tick}",
                         force=force)
        )
    return out
