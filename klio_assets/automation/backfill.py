"""Scheduled catalog backfill: per analysis, the tracks missing, failed or stale, in bounded runs.

* **missing**: registered, never materialized (Dagster's materialized partitions);
* **failed**: the catalog holds a failure reason (failed tracks are not materialized), unless
  the failure is remembered and holds (:mod:`klio_assets.catalog.failures`: a broken file is
  not requested again until it or the analysis' version changes; a transient failure after
  its backoff, a bounded number of times): those count as ``failed_earlier``;
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np

from klio_assets.automation.runs import run_requests, run_track_ids
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import RetryPolicy, held_failures
from klio_assets.orchestration.launch import existing_outputs, materialized_tracks
from klio_assets.orchestration.partitions import ordered_keys
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage

#: ``klio_state`` key of the versions whose stale tracks were all requested.
STATE_KEY = "backfill_versions"
_IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


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
        Per analysis, ``{"missing": n, "failed": n, "stale": n, "in_flight": n,
        "failed_earlier": n}`` (``failed_earlier``: held by a remembered failure, among the
        failed and missing ones, not requested).
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
        tracks = run_track_ids(instance, run)
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
    policy: RetryPolicy | None = None,
    graph: Mapping[str, Sequence[str]] | None = None,
) -> BackfillPlan:
    """Find missing, failed and stale tracks per analysis and cut them into bounded runs.

    Works on arrays over the registered tracks (in partition order): a track's needs are one
    bit per analysis, and the runs are the stretches of equal, non-zero needs, cut at
    ``batch_size``. O(registered) numpy work plus O(materialized + failed) lookups; only the
    ``max_runs`` runs requested are turned back into track IDs. (With sets per analysis and
    per track this took 80 s at 1M tracks and 11 analyses.)

    Parameters
    ----------
    planned : mapping
        Every analysis' plan (for its current output version).
    selected : sequence of str
        Analyses the backfill covers, in topological order.
    tick : str
        Identifies this schedule tick (its scheduled time): a tick evaluated again after a
        crash, before its runs were submitted, scans again instead of trusting what it stored.
    policy : RetryPolicy, optional
        When transient failures are requested again (default: :class:`RetryPolicy`'s).
    graph : mapping, optional
        Analysis name to the names it depends on: a track held for an analysis is held for
        its descendants too.
    """
    plan = BackfillPlan()
    tracks = _Registered(ordered_keys(instance))
    busy = {name: tracks.mask(ids) for name, ids in in_flight_tracks(instance).items()}
    previous = catalog.get_state(STATE_KEY)
    # Per track, one bit per analysis it needs (Python ints beyond 62 analyses).
    needs = np.zeros(tracks.n, dtype=np.int64 if len(selected) < 63 else object)
    stale_by: dict[str, np.ndarray] = {}
    held = held_failures(
        catalog, planned, selected, None, policy or RetryPolicy(), inputs=graph or None
    )
    for bit, name in enumerate(selected):
        scan = previous.get(name, {})
        if scan.get("version") != planned[name].version or scan.get("tick") == tick:
            plan.scanned_for_stale.append(name)
        wanted, stale_by[name] = _analysis_needs(
            plan,
            tracks,
            instance,
            catalog,
            storage,
            planned[name],
            in_flight=busy.get(name, tracks.none()),
            scan=name in plan.scanned_for_stale,
            held=tracks.mask(held[name]),
        )
        needs[wanted] += 1 << bit
    requested = _cut_runs(plan, tracks, needs, selected, batch_size=batch_size, max_runs=max_runs)
    plan.state = dict(previous)
    for name in selected:
        # Record the version as done only when every stale track is requested (or running).
        pending = stale_by[name] & ~requested[name] & ~busy.get(name, tracks.none())
        if not pending.any():
            plan.state[name] = {"version": planned[name].version, "tick": tick}
    return plan


class _Registered:
    """The registered tracks in partition order, and boolean masks over them."""

    def __init__(self, ordered: list[str]):
        self.ordered = ordered
        self.position = {key: i for i, key in enumerate(ordered)}
        self.n = len(ordered)

    def none(self) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def mask(self, track_ids: Iterable[str]) -> np.ndarray:
        mask = self.none()
        found = [i for i in map(self.position.get, track_ids) if i is not None]
        mask[np.asarray(found, dtype=np.int64)] = True
        return mask


def _analysis_needs(
    plan: BackfillPlan,
    tracks: _Registered,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    storage: Storage,
    planned: PlannedAnalysis,
    *,
    in_flight: np.ndarray,
    scan: bool,
    held: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks that need ``planned`` now (not in flight), and its stale tracks; counts the
    reasons into ``plan``. Outputs are listed only when ``scan`` (the version changed)."""
    materialized_ids = materialized_tracks(instance, planned.name)
    materialized = tracks.mask(materialized_ids)
    failed = tracks.mask(catalog.failures(planned.name))
    stale = tracks.none()
    if scan and materialized.any():
        on_record = sorted(t for t in materialized_ids if t in tracks.position)
        done = tracks.mask(existing_outputs(storage, planned, on_record))
        stale = materialized & ~done
    wanted = (~materialized | failed | stale) & ~held
    plan.reasons[planned.name] = {
        "missing": int(np.count_nonzero(~materialized & ~failed)),
        "failed": int(np.count_nonzero(failed)),
        "stale": int(np.count_nonzero(stale & ~failed)),
        "in_flight": int(np.count_nonzero(wanted & in_flight)),
        "failed_earlier": int(np.count_nonzero(held & ~materialized | held & failed)),
    }
    return wanted & ~in_flight, stale


def _cut_runs(
    plan: BackfillPlan,
    tracks: _Registered,
    needs: np.ndarray,
    selected: Sequence[str],
    *,
    batch_size: int,
    max_runs: int,
) -> dict[str, np.ndarray]:
    """Cut the stretches of equal needs into runs (at most ``max_runs`` into ``plan``); per
    analysis, the tracks requested.

    Tracks needing the same analyses go in the same runs, the largest such group first (then
    by analysis names), each group in partition order.
    """
    groups: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    sizes: dict[Any, int] = defaultdict(int)
    for start, end in _stretches(needs):
        key = needs[start].item() if hasattr(needs[start], "item") else needs[start]
        groups[key].append((start, end))
        sizes[key] += end - start

    def names_of(key: int) -> list[str]:
        return [name for bit, name in enumerate(selected) if key >> bit & 1]

    total_runs = 0
    requested = {name: tracks.none() for name in selected}
    for key in sorted(groups, key=lambda k: (-sizes[k], sorted(names_of(k)))):
        names = names_of(key)
        for start, end in groups[key]:
            for first in range(start, end, batch_size):
                last = min(first + batch_size, end)
                total_runs += 1
                if len(plan.runs) < max_runs:
                    plan.runs.append(BackfillRun(names, tracks.ordered[first:last]))
                    for name in names:
                        requested[name][first:last] = True
    plan.deferred_runs = total_runs - len(plan.runs)
    return requested


def _stretches(needs: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of every stretch of equal, non-zero needs."""
    n = len(needs)
    if not n:
        return []
    change = np.flatnonzero(needs[1:] != needs[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    keep = needs[starts] != 0
    return list(zip(starts[keep].tolist(), ends[keep].tolist(), strict=True))


def backfill_run_requests(
    plan: BackfillPlan, *, tick: str, force: bool = False
) -> list[dg.RunRequest]:
    """The plan's ``RunRequest``s; run keys name the tick and the range."""
    out = []
    for run in plan.runs:
        out.extend(
            run_requests(
                [run.track_ids],
                selected=run.selected,
                trigger="backfill",
                key_prefix=f"backfill-{tick}",
                force=force,
            )
        )
    return out
