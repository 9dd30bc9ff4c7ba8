"""Launching runs from outside the UI (CLI, tests, benchmarks), through the same Dagster job.

The CLI does what a careful user does in the UI: pick the tracks that still need work
(Dagster has no materialization for them, or their output for the current version is gone),
cut them into contiguous ranges of at most ``batch_size`` partitions (one run = one range =
one Beam job), and materialize each range with ``execute_job``, the code path of a run
launched from the UI.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.trackids import validate_track_id
from klio_assets.errors import ParameterError
from klio_assets.orchestration.home import (  # noqa: F401 - re-exported
    DEFAULT_DAGSTER_YAML,
    FAST_BOOKKEEPING_ENV,
    prepare_environment,
)
from klio_assets.orchestration.invocation import RunOutcome
from klio_assets.orchestration.lineage import ancestors
from klio_assets.orchestration.partitions import ordered_keys
from klio_assets.orchestration.ranges import contiguous_ranges
from klio_assets.orchestration.run import INVOCATION_TAG, analysis_run_config, watching
from klio_assets.worker.done import done_tracks, existing_outputs, tracks_with_work
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage

__all__ = [
    "INVOCATION_TAG",
    "contiguous_ranges",
    "execute_catalog_tables",
    "execute_range",
    "existing_outputs",
    "recorded_materializations",
    "resolve_tracks",
    "tracks_to_run",
    "with_missing_upstreams",
]


def resolve_tracks(
    instance: dg.DagsterInstance,
    requested: Sequence[str] | None,
    catalog: TrackCatalog | None = None,
) -> tuple[list[str], list[str]]:
    """The window's partition keys in order, and the requested tracks (all when empty).

    With ``catalog``, tracks registered but outside Dagster's window
    (:mod:`klio_assets.orchestration.window`) are wanted too: the requested ones, or with
    none requested every registered track (window first, then the others in registration
    order); they are not in the first list.

    Raises
    ------
    ParameterError
        A requested ID is invalid or not registered.
    """
    ordered = ordered_keys(instance)
    if not requested:
        if catalog is None:
            return ordered, ordered
        inside = set(ordered)
        return ordered, [*ordered, *(t for t in catalog.track_ids() if t not in inside)]
    for track_id in requested:
        validate_track_id(track_id)
    known = set(ordered)
    unknown = [t for t in requested if t not in known]
    if unknown and catalog is not None:
        registered = catalog.resolve(unknown)
        unknown = [t for t in unknown if t not in registered]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise ParameterError(f"tracks not registered: {shown} (klio-assets add)")
    return ordered, list(dict.fromkeys(requested))


def execute_range(
    instance: dg.DagsterInstance,
    *,
    selected: Sequence[str],
    track_ids: Sequence[str],
    force: bool = False,
    dry_run: bool = False,
    storage: Storage,
    on_progress: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Materialize ``selected`` for one contiguous range of partitions (one run, one Beam job).

    Runs in this process and thread (Dagster's interrupt handling needs the main thread; the
    analyses job's executor is in-process). The run itself reports to this call (see
    :mod:`klio_assets.orchestration.run.observe`): ``on_progress`` is called, from this
    thread, with the number of tracks done as the run's results poller finds them, and the
    outcome's summary is the one the run reported.

    Parameters
    ----------
    storage : Storage
        Unused: the run reads and writes the storage of the code location's resources.
        Kept for the callers.
    """
    del storage  # the run's own resources name the storage root
    invocation = uuid.uuid4().hex
    tags = {
        "dagster/asset_partition_range_start": track_ids[0],
        "dagster/asset_partition_range_end": track_ids[-1],
        INVOCATION_TAG: invocation,
    }
    job = dg.build_reconstructable_job("klio_assets.definitions", "get_analyses_job")
    with watching(invocation, on_progress) as watch:
        result = dg.execute_job(
            job,
            instance=instance,
            run_config=analysis_run_config(
                force=force, dry_run=dry_run, log_level="CRITICAL"
            ).to_config_dict(),
            tags=tags,
            asset_selection=[dg.AssetKey(name) for name in selected],
        )
    outcome = RunOutcome(run_id=result.run_id, success=result.success, track_ids=list(track_ids))
    outcome.summary = watch.summary
    if outcome.summary is not None and outcome.summary.get("error"):
        outcome.error = outcome.summary["error"]  # the Beam job's own failure, one line
    elif not result.success and outcome.summary is None:
        errors = [e.step_failure_data.error for e in result.get_step_failure_events()]
        outcome.error = "; ".join(e.message.strip() for e in errors if e) or "the run failed"
    return outcome


def materialized_tracks(instance: dg.DagsterInstance, name: str) -> set[str]:
    """Partitions of asset ``name`` that Dagster has a materialization for."""
    return set(instance.get_materialized_partitions(dg.AssetKey(name)))


def recorded_materializations(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    outside: Collection[str],
) -> dict[str, set[str]]:
    """Per analysis, the partitions Dagster has a materialization for plus, among ``outside``
    (tracks out of Dagster's window: it forgot them), those the catalog's ledger has at the
    current version: the ``materialized`` argument of :func:`tracks_to_run`."""
    out: dict[str, set[str]] = {}
    wanted = sorted(outside)
    for name in selected:
        out[name] = materialized_tracks(instance, name)
        if wanted:
            missing = set(catalog.not_materialized(name, planned[name].version, wanted))
            out[name] |= set(wanted) - missing
    return out


def tracks_to_run(
    instance: dg.DagsterInstance,
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    track_ids: Sequence[str],
    *,
    materialized: dict[str, set[str]] | None = None,
) -> tuple[list[str], dict[str, list[str]]]:
    """Tracks needing a run, and per analysis those already done.

    Done means Dagster has a materialization *and* the output for the current version
    exists (:func:`klio_assets.worker.done.done_tracks`, with Dagster's materializations as
    the record): a code-version bump or a deleted output brings a track back.

    Parameters
    ----------
    instance : dg.DagsterInstance
    storage : Storage
    planned : mapping of str to PlannedAnalysis
        Every analysis, by name, at its current version.
    selected : sequence of str
        The analyses asked for.
    track_ids : sequence of str
        The wanted tracks, in run order.
    materialized : dict, optional
        Analysis name to the partitions Dagster has a materialization for, filled in as
        needed: pass the same dict to several calls to read each analysis once (reading one
        is O(its materializations)).

    Returns
    -------
    todo : list of str
        The tracks some selected analysis is not done for, in ``track_ids``' order.
    done : dict of str to list of str
        Per selected analysis, the tracks done (sorted).
    """
    materialized = {} if materialized is None else materialized
    wanted = set(track_ids)
    for name in selected:
        if name not in materialized:
            materialized[name] = materialized_tracks(instance, name)
    done = done_tracks(storage, planned, {n: sorted(materialized[n] & wanted) for n in selected})
    return tracks_with_work(track_ids, selected, done), {n: sorted(done[n]) for n in selected}


def execute_catalog_tables(
    instance: dg.DagsterInstance, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Materialize the catalog-level assets ``names`` (one run); their metadata, or errors.

    Returns
    -------
    dict
        Asset name to ``{"status": "materialized", ...metadata}`` or
        ``{"status": "failed", "reason": ...}``.
    """
    job = dg.build_reconstructable_job("klio_assets.definitions", "get_catalog_job")
    result = dg.execute_job(
        job,
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        asset_selection=[dg.AssetKey(name) for name in names],
    )
    out: dict[str, dict[str, Any]] = {
        name: {"status": "failed", "reason": "not materialized", "run_id": result.run_id}
        for name in names
    }
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            "status": "materialized",
            "run_id": result.run_id,
            **{k: v.value for k, v in materialization.metadata.items() if k != "preview"},
        }
    for failure in result.get_step_failure_events():
        error = failure.step_failure_data.error
        step = failure.step_key or ""
        for name in names:
            if name in step and out[name]["status"] == "failed":
                out[name]["reason"] = error.message.strip() if error else "the step failed"
    return out


def with_missing_upstreams(
    instance: dg.DagsterInstance,
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Sequence[str]],
    selected: Sequence[str],
    track_ids: Sequence[str],
) -> tuple[list[str], list[str]]:
    """Bottom-up: ``selected`` plus every upstream (transitively) not done for some of ``track_ids``.

    Only ancestors are added, never siblings: ``run beats`` may bring ``downsampled_audio``
    (what it reads), not ``loudness``. Within the run the engine computes upstreams first
    and skips, per track, the outputs that already exist.

    Parameters
    ----------
    graph : mapping
        Analysis name to the analyses it reads (:func:`klio_assets.orchestration.lineage.inputs`; the
        lineage-only ``source_audio`` is not needed by the engine and is not added).

    Returns
    -------
    selection : list of str
        In ``planned``'s (topological) order.
    added : list of str
        The upstreams added.
    """
    candidates = [n for n in planned if n in ancestors(graph, selected) and n not in selected]
    added = []
    if candidates and track_ids:
        # Every ancestor is a candidate, so an added upstream's own missing upstreams are too.
        _, done = tracks_to_run(instance, storage, planned, candidates, track_ids)
        added = [n for n in candidates if len(done[n]) < len(set(track_ids))]
    selection = [n for n in planned if n in selected or n in added]
    return selection, added
