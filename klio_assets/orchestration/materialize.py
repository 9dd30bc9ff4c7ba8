"""A ``klio-assets run`` that needs Dagster: which tracks, in which runs, then the runs.

:func:`plan_run` asks Dagster (and the storage) what is left to do: the wanted tracks,
bottom-up the upstream analyses missing for some of them, the tracks already done (entered in
the catalog's ledger so that the next run can answer without Dagster), and contiguous
ranges of at most ``batch_size`` tracks, one Dagster run and one Beam job each.
:func:`execute_plan` launches those runs in this process, then the catalog-level tables.
Tracks held by a remembered failure (:mod:`klio_assets.catalog.failures`) stay out of the
runs and are reported "failed earlier". A dry run is this plan and nothing else: no Dagster
run is recorded, and its counts are those the real run would have.
The CLI, tests and benchmarks share both; the all-done answer without Dagster is
:func:`klio_assets.orchestration.selection.done_without_dagster`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import forget_failures, held_failures
from klio_assets.catalog.ledger import changed_sources, enter_in_ledger
from klio_assets.orchestration import launch
from klio_assets.orchestration.invocation import Invocation
from klio_assets.orchestration.lineage import ancestors
from klio_assets.orchestration.selection import RunSelection, engine_inputs, retry_policy
from klio_assets.orchestration.window import admit
from klio_assets.settings import Settings
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage


@dataclass
class RunPlan:
    """What :func:`execute_plan` will launch.

    Attributes
    ----------
    instance : dagster.DagsterInstance
        The instance the runs go to.
    selection : RunSelection
        The assets asked for.
    selected : list of str
        The per-track analyses to materialize: the selection plus, bottom-up, the missing
        upstreams (``upstream_added``).
    upstream_added : list of str
        Upstream analyses added because some wanted tracks lack them.
    wanted : list of str
        The wanted tracks, in partition order.
    todo : list of str
        The wanted tracks that need a run.
    batches : list of list of str
        ``todo`` cut into contiguous ranges of at most ``batch_size`` tracks: one run each.
    already_done : dict
        Per analysis, the wanted tracks already materialized for the current version.
    failed_earlier : dict
        Per analysis, the wanted tracks held by a remembered failure (track ID to its
        ``failed earlier: <reason>`` line): not in ``todo`` on their account.
    entering : list of str
        Tracks of ``todo`` out of Dagster's window, which enter it again for these runs.
    window_sync : list of str
        Analyses not selected that the catalog has done (ledger and output) for every track
        of ``entering``: materialized again, all skipped, before the runs, so that the UI
        shows those tracks complete (Dagster forgot them when they left the window).
    window_sync_batches : list of list of str
        ``entering`` in contiguous ranges: one run of ``window_sync`` each.
    """

    instance: dg.DagsterInstance
    selection: RunSelection
    selected: list[str]
    upstream_added: list[str]
    wanted: list[str]
    todo: list[str]
    batches: list[list[str]]
    already_done: dict[str, list[str]] = field(default_factory=dict)
    failed_earlier: dict[str, dict[str, str]] = field(default_factory=dict)
    entering: list[str] = field(default_factory=list)
    window_sync: list[str] = field(default_factory=list)
    window_sync_batches: list[list[str]] = field(default_factory=list)

    @property
    def would_compute(self) -> dict[str, list[str]]:
        """Per analysis, the tracks of ``todo`` that the runs would compute (not done, not
        held): what a dry run reports."""
        out = {}
        for name in self.selected:
            skip = set(self.already_done.get(name, ())) | set(self.failed_earlier.get(name, {}))
            out[name] = [t for t in self.todo if t not in skip]
        return out


def plan_run(
    settings: Settings,
    catalog: TrackCatalog,
    storage: Storage,
    selection: RunSelection,
    tracks: Sequence[str],
    *,
    force: bool,
    dry_run: bool,
    upstream: bool,
    retry_failed: bool = False,
) -> RunPlan:
    """Decide which tracks go in which runs, asking Dagster what is materialized.

    Parameters
    ----------
    tracks : sequence of str
        The wanted track IDs; empty for every registered track.
    force : bool
        Every wanted track goes in a run (recomputed), failed earlier or not.
    dry_run : bool
        Plan only: change nothing (the ledger is not refilled, no failure is forgotten).
    retry_failed : bool
        Try the tracks held by a remembered failure again (their failures are forgotten).
    upstream : bool
        Bottom-up: add the upstream analyses missing for some wanted tracks (only when
        assets were named).

    Returns
    -------
    RunPlan

    Raises
    ------
    ParameterError
        A wanted track ID is invalid or not registered.
    """
    instance = dg.DagsterInstance.get()
    ordered, wanted = launch.resolve_tracks(instance, tracks, catalog)
    outside = _outside_window(ordered, wanted)
    planned = selection.planned
    selected: list[str] = list(selection.selected)
    upstream_added: list[str] = []
    if upstream and selection.named and selected:
        graph = engine_inputs(settings)
        selected, upstream_added = launch.with_missing_upstreams(
            instance, storage, planned, graph, selected, wanted
        )
        selected, upstream_added = _with_changed_upstreams(
            catalog, planned, graph, selected, upstream_added, wanted
        )
    already_done: dict[str, list[str]] = {}
    held: dict[str, dict[str, str]] = {}
    if retry_failed and not dry_run and selected:
        forget_failures(catalog, selected, wanted)
    if not selected:  # only catalog tables asked for
        todo: list[str] = []
    elif force:
        todo = wanted
    else:
        if not retry_failed:
            held = held_failures(
                catalog,
                planned,
                selected,
                wanted,
                retry_policy(settings, backoff=False),
                inputs=engine_inputs(settings),
            )
        todo, already_done = launch.tracks_to_run(
            instance,
            storage,
            planned,
            selected,
            wanted,
            materialized=launch.recorded_materializations(
                instance, catalog, planned, selected, outside
            ),
        )
        todo, already_done = _without_changed_sources(catalog, wanted, todo, already_done)
        todo = _without_held(todo, selected, already_done, held)
        if not dry_run:
            enter_in_ledger(catalog, planned, already_done)
    # Tracks out of Dagster's window that need a run enter it again (this one is asked for):
    # at its end, in the order wanted, so the ranges below are contiguous there too.
    entering = [t for t in todo if t in outside]
    sync: list[str] = []
    if entering and not dry_run:
        admit(instance, entering, cap=None)
        others = [n for n in planned if n not in selected]
        _, done = launch.tracks_to_run(
            instance,
            storage,
            planned,
            others,
            entering,
            materialized=launch.recorded_materializations(
                instance, catalog, planned, others, entering
            ),
        )
        sync = [n for n in others if len(done[n]) == len(entering)]
    ordered = [*ordered, *entering]
    return RunPlan(
        instance=instance,
        selection=selection,
        selected=selected,
        upstream_added=upstream_added,
        wanted=wanted,
        todo=todo,
        batches=launch.contiguous_ranges(ordered, todo, settings.batch_size),
        already_done=already_done,
        failed_earlier={name: tracks for name, tracks in held.items() if tracks},
        entering=entering,
        window_sync=sync,
        window_sync_batches=(
            launch.contiguous_ranges(ordered, entering, settings.batch_size) if sync else []
        ),
    )


def _outside_window(ordered: Sequence[str], wanted: Sequence[str]) -> set[str]:
    """The wanted tracks that are not ``tracks`` partitions (registered, out of the window)."""
    inside = set(ordered)
    return {t for t in wanted if t not in inside}


def _without_held(
    todo: Sequence[str],
    selected: Sequence[str],
    done: Mapping[str, Sequence[str]],
    held: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """The tracks of ``todo`` that some selected analysis still needs, neither done nor held
    by a remembered failure. (A track that also needs another analysis goes in a run, and the
    engine tries its failed one again too.)"""
    if not any(held.values()):
        return list(todo)
    finished = {name: set(done.get(name, ())) | set(held.get(name, {})) for name in selected}
    return [t for t in todo if any(t not in finished[name] for name in selected)]


def _with_changed_upstreams(
    catalog: TrackCatalog,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Sequence[str]],
    selected: Sequence[str],
    added: Sequence[str],
    wanted: Sequence[str],
) -> tuple[list[str], list[str]]:
    """Bottom-up: also add the upstreams whose outputs come from a source that changed since.

    Their outputs exist, so :func:`klio_assets.orchestration.launch.with_missing_upstreams`
    keeps them out; without them, the selected analyses would be recomputed from upstream
    outputs that describe the old file.

    Returns
    -------
    selection : list of str
        In ``planned``'s (topological) order.
    added : list of str
        The upstreams added, both missing and changed.
    """
    candidates = [n for n in planned if n in ancestors(graph, selected) and n not in selected]
    changed = changed_sources(catalog, {n: wanted for n in candidates}) if wanted else {}
    more = {n for n in candidates if changed.get(n)}
    if not more:
        return list(selected), list(added)
    return (
        [n for n in planned if n in selected or n in more],
        [n for n in planned if n in added or n in more],
    )


def _without_changed_sources(
    catalog: TrackCatalog,
    wanted: Sequence[str],
    todo: Sequence[str],
    done: Mapping[str, Sequence[str]],
) -> tuple[list[str], dict[str, list[str]]]:
    """Move the tracks whose source changed since their outputs were made from done to todo.

    Dagster's records and the storage cannot tell (the output is there, for the current
    version); the ledger's source stats can, at one stat per track
    (:func:`klio_assets.catalog.ledger.changed_sources`). The engine then sees the same
    change in its own records and recomputes them.

    Returns
    -------
    todo : list of str
        In ``wanted``'s order.
    done : dict of str to list of str
    """
    changed = changed_sources(catalog, done)
    if not any(changed.values()):
        return list(todo), {name: list(ids) for name, ids in done.items()}
    again = set(todo).union(*changed.values())
    return [t for t in wanted if t in again], {
        name: [t for t in ids if t not in changed[name]] for name, ids in done.items()
    }


def execute_plan(
    plan: RunPlan,
    storage: Storage,
    *,
    force: bool,
    dry_run: bool,
    on_progress: Callable[[int], None] | None = None,
) -> Invocation:
    """Launch the plan's runs one after the other, then the catalog-level tables.

    Parameters
    ----------
    force : bool
        Passed to every run.
    dry_run : bool
        Launch nothing: report the plan's ``would_compute``.
    on_progress : callable, optional
        Called (from a watcher thread, and after each run) with the number of tracks done
        so far over all runs.

    Returns
    -------
    Invocation
        The runs launched, what was found done, the catalog tables' outcome;
        ``wall_seconds`` is left to the caller.
    """
    invocation = Invocation(
        selected=plan.selected,
        already_done=plan.already_done,
        failed_earlier=plan.failed_earlier,
    )
    if dry_run:  # a plan, not a run: Dagster records nothing
        invocation.would_compute = plan.would_compute
        return invocation
    invocation.back_in_window = plan.entering
    invocation.window_sync_analyses = plan.window_sync
    for batch in plan.window_sync_batches:  # all skipped: the outputs are there
        invocation.window_sync.append(
            launch.execute_range(
                plan.instance, selected=plan.window_sync, track_ids=batch, storage=storage
            )
        )
    base = 0
    for batch in plan.batches:

        def progress(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        invocation.runs.append(
            launch.execute_range(
                plan.instance,
                selected=plan.selected,
                track_ids=batch,
                force=force,
                dry_run=dry_run,
                storage=storage,
                on_progress=progress,
            )
        )
        base += len(batch)
        if on_progress is not None:
            on_progress(base)
    if plan.selection.tables and not dry_run:
        invocation.catalog = launch.execute_catalog_tables(plan.instance, plan.selection.tables)
    return invocation
