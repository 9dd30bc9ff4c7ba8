"""First step of a run: its tracks, their source audio, and the plan the workers execute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.orchestration.launcher import TrackRef
from klio_assets.orchestration.partitions import keys_in_range
from klio_assets.orchestration.run.config import AnalysisRunConfig
from klio_assets.resources.beam import BeamRunnerResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import PlannedAnalysis, RunPlan, planned_for
from klio_assets.worker.storage import Storage


def run_track_ids(context: dg.AssetExecutionContext) -> list[str]:
    """The run's track IDs, in partition order, without listing every registered track."""
    try:
        key_range = context.partition_key_range
    except dg.DagsterInvariantViolationError:
        return list(context.partition_keys)
    if key_range.start == key_range.end:
        return [key_range.start]
    keys = keys_in_range(context.instance, key_range.start, key_range.end)
    return keys if keys is not None else list(context.partition_keys)


@dataclass
class RunScope:
    """What one run covers.

    Attributes
    ----------
    track_ids : list of str
        Every track of the run, in partition order.
    selected : list of str
        The analyses to run, in topological order.
    plan : RunPlan
        What every worker executes.
    tracks : list of TrackRef
        The registered tracks, with their source audio (what the Beam job is given).
    unregistered : set of str
        Tracks of the run the catalog does not know (reported failed).
    """

    track_ids: list[str]
    selected: list[str]
    plan: RunPlan
    tracks: list[TrackRef]
    unregistered: set[str]

    @property
    def uris(self) -> dict[str, str]:
        """Track ID to its source audio."""
        return {t.track_id: t.uri for t in self.tracks}


def resolve(
    context: dg.AssetExecutionContext,
    *,
    config: AnalysisRunConfig,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Analysis],
    beam: BeamRunnerResource,
    store: Storage,
    catalog: TrackCatalog,
) -> RunScope:
    """The run's tracks resolved to their source audio, and its plan."""
    track_ids = run_track_ids(context)
    selected = [name for name in planned if dg.AssetKey(name) in context.selected_asset_keys]
    mode = " (dry run)" if config.dry_run else " (force)" if config.force else ""
    context.log.info(
        f"{len(track_ids)} tracks, analyses {', '.join(selected)}{mode}: one Beam job on {beam.runner}"
    )
    return scope_of(
        context,
        track_ids=track_ids,
        selected=selected,
        planned=planned,
        graph=graph,
        beam=beam,
        store=store,
        catalog=catalog,
        force=config.force,
        dry_run=config.dry_run,
    )


def scope_of(
    context: dg.AssetExecutionContext,
    *,
    track_ids: list[str],
    selected: list[str],
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Analysis],
    beam: BeamRunnerResource,
    store: Storage,
    catalog: TrackCatalog,
    force: bool,
    dry_run: bool,
) -> RunScope:
    """``track_ids`` resolved to their source audio, and the plan running ``selected`` on them
    (a run of the analyses job, or a catalog range)."""
    plan = RunPlan(
        run_id=context.run_id,
        storage_root=store.root,
        storage_options=store.options,
        analyses=planned_for(selected, planned, graph),
        selected=selected,
        force=force,
        dry_run=dry_run,
        lanes=beam.lanes(),
    )
    uris = catalog.resolve(track_ids)
    return RunScope(
        track_ids=track_ids,
        selected=selected,
        plan=plan,
        tracks=[TrackRef(t, uris[t]) for t in track_ids if t in uris],
        unregistered={t for t in track_ids if t not in uris},
    )
