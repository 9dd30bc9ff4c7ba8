"""``klio-assets run --stale``: recompute exactly what the Dagster UI calls unsynced.

Dagster's stale-status resolver (the one behind the UI's "Unsynced" and "Materialize
unsynced") is asked, per analysis and track, which partitions are stale: a code version or
parameters changed since (the analysis and, because versions chain, its descendants), or an
input was materialized again with new data. Dagster 1.13 flags only the direct children of new
data (its resolver has no transitive cause); a source file changed on disk is seen through
the external ``source_files`` asset, observed first (:mod:`klio_assets.orchestration.source_files`:
its track's ``source_audio`` is then stale). So a track's stale analyses are completed with
their descendants, and the tracks whose source changed since their outputs were made (the
catalog's recorded stat, one stat per track) count as stale for every analysis. Tracks stale
for the same analyses go in one plan, forced (an output may exist for the current version and
still be stale by its inputs), without adding upstreams: nothing else is recomputed. Missing
partitions are not stale: ``klio-assets run`` computes those.

The resolver is the UI's, built for one asset page at a time: a few queries per partition and
analysis, 8-15 ms each here (SQLite, loaded 2-core machine), so about 15-25 minutes for 10,000
tracks of the 11 built-in analyses. So it is asked only about candidates, found in bulk
(:func:`candidate_statuses`, one indexed query per analysis and batch of 1,000 tracks): a
per-track materialization's data version is Dagster's logical version of its code version and
its inputs' data versions (:mod:`klio_assets.orchestration.provenance`), so a partition whose
latest data version equals the logical version of the asset's current code version and its
inputs' latest data versions has nothing the resolver could call stale (a new code version, or
an input with another data version since); ``source_audio``, whose data version is its
content's hash, is a candidate when the ledger has no output of its current version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import dagster as dg

from klio_assets.analyses import load_analyses
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.ledger import changed_sources
from klio_assets.orchestration import launch
from klio_assets.orchestration.assets import GROUP_NAME, build_analysis_assets
from klio_assets.orchestration.dagster_internals.latest_versions import (
    LatestVersion,
    latest_versions,
)
from klio_assets.orchestration.dagster_internals.stale_status import stale_statuses
from klio_assets.orchestration.invocation import Invocation
from klio_assets.orchestration.lineage import descendants, parents
from klio_assets.orchestration.materialize import execute_plan, plan_run
from klio_assets.orchestration.provenance import NULL_DATA_VERSION, logical_version
from klio_assets.orchestration.selection import select_assets
from klio_assets.orchestration.source_files import (
    SOURCE_FILES,
    observe_sources,
    source_files_spec,
)
from klio_assets.settings import Settings
from klio_assets.worker.plan import SOURCE_ASSET
from klio_assets.worker.storage import Storage


def stale_groups(
    settings: Settings,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    assets: Sequence[str],
    tracks: Sequence[str],
    *,
    observe: bool = True,
) -> dict[tuple[str, ...], list[str]]:
    """The stale analyses (in topological order) to the tracks stale for exactly those.

    Parameters
    ----------
    assets : sequence of str
        Analyses to consider (empty: every analysis).
    tracks : sequence of str
        Tracks to consider (empty: every registered track).
    observe : bool
        Observe the changed source files first (False: a preview that writes nothing; a
        changed file still counts, through the catalog's recorded stat).

    Raises
    ------
    ParameterError
        A track ID is invalid or not registered.
    """
    analyses = load_analyses(settings.analysis_modules)
    graph: list[dg.AssetsDefinition | dg.AssetSpec] = [
        source_files_spec(GROUP_NAME),
        build_analysis_assets(analyses, batch_size=settings.batch_size, params=settings.params),
    ]
    names = [a.name for a in analyses if not assets or a.name in assets]
    _, wanted = launch.resolve_tracks(instance, tracks, catalog)
    if observe:
        observe_sources(instance, catalog, wanted)  # files changed on disk: a new data version
    lineage = parents(analyses)
    statuses = candidate_statuses(instance, catalog, graph, lineage, names, wanted)
    changed = changed_sources(catalog, {name: wanted for name in names})
    per_track: dict[str, set[str]] = {}
    for name in names:
        stale = {t for t, status in statuses[name].items() if status == "STALE"}
        for track_id in stale | changed.get(name, set()):
            per_track.setdefault(track_id, set()).add(name)
    order = select_assets(settings, names).selected  # topological
    groups: dict[tuple[str, ...], list[str]] = {}
    for track_id in wanted:
        if track_id in per_track:
            # the materialized descendants: stale once their inputs are recomputed
            found = per_track[track_id] | {
                n
                for n in descendants(lineage, per_track[track_id])
                if statuses.get(n, {}).get(track_id, "MISSING") != "MISSING"
            }
            groups.setdefault(tuple(n for n in order if n in found), []).append(track_id)
    return groups


def candidate_statuses(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    graph: Sequence[dg.AssetsDefinition | dg.AssetSpec],
    lineage: Mapping[str, Sequence[str]],
    names: Sequence[str],
    tracks: Sequence[str],
) -> dict[str, dict[str, str]]:
    """Dagster's stale status (``FRESH``, ``STALE``, ``MISSING``) of ``names`` for ``tracks``,
    the resolver asked only about the candidates found in bulk (see the module docstring).

    Parameters
    ----------
    graph : sequence of dg.AssetsDefinition
        The analyses' assets (their code versions).
    lineage : mapping
        Analysis name to the assets it depends on.
    """
    code_versions = {
        key.to_user_string(): version
        for assets_def in graph
        if isinstance(assets_def, dg.AssetsDefinition)
        for key, version in assets_def.code_versions_by_key.items()
    }
    read: dict[str, dict[str, LatestVersion]] = {}

    def latest(name: str) -> dict[str, LatestVersion]:
        if name not in read:
            read[name] = latest_versions(instance, name, tracks)
        return read[name]

    statuses: dict[str, dict[str, str]] = {}
    candidates: dict[str, list[str]] = {}
    for name in names:
        mine = latest(name)
        statuses[name] = {t: "FRESH" if t in mine else "MISSING" for t in tracks}
        code_version = code_versions.get(name)
        deps = lineage.get(name, ())
        if code_version is None:  # no versions to compare: the resolver decides
            candidates[name] = list(mine)
        elif name == SOURCE_ASSET or not deps:
            # its data version is the content's: the ledger knows the code version, and the
            # source file observed after it was computed may have changed
            outdated = set(catalog.not_materialized(name, code_version, list(mine)))
            observed = latest_versions(instance, SOURCE_FILES, list(mine), observations=True)
            candidates[name] = [
                t
                for t, v in mine.items()
                if v.data_version is None
                or t in outdated
                or (t in observed and observed[t].storage_id > v.storage_id)
            ]
        else:
            inputs = {dep: latest(dep) for dep in deps}
            candidates[name] = [
                t
                for t, version in mine.items()
                if version.data_version
                != logical_version(code_version, {d: _input(inputs[d].get(t)) for d in deps})
            ]
    for name, per in stale_statuses(instance, graph, candidates).items():
        statuses[name].update(per)
    return statuses


def _input(latest: LatestVersion | None) -> str:
    """An input's data version as a materialization's provenance records it."""
    return NULL_DATA_VERSION if latest is None else latest.data_version or "INITIAL"


def run_stale(
    settings: Settings,
    catalog: TrackCatalog,
    storage: Storage,
    assets: Sequence[str],
    tracks: Sequence[str],
    *,
    dry_run: bool,
    on_plan: Callable[[dict[tuple[str, ...], list[str]]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Invocation:
    """Recompute the stale partitions of ``assets`` among ``tracks``, and only those.

    Parameters
    ----------
    on_plan : callable, optional
        Told the groups before anything runs (the CLI prints them).
    on_progress : callable, optional
        Called with the number of tracks done so far.

    Returns
    -------
    Invocation
        The runs of every group; nothing when nothing is stale.
    """
    instance = dg.DagsterInstance.get()
    groups = stale_groups(settings, instance, catalog, assets, tracks)
    if on_plan is not None:
        on_plan(groups)
    order = list(select_assets(settings, []).selected)
    selected = [n for n in order if any(n in names for names in groups)]
    invocation = Invocation(selected=selected)
    base = 0
    for names, group_tracks in groups.items():
        plan = plan_run(
            settings,
            catalog,
            storage,
            select_assets(settings, names),
            group_tracks,
            force=True,
            dry_run=dry_run,
            upstream=False,
        )

        def progress(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        done = execute_plan(plan, storage, force=True, dry_run=dry_run, on_progress=progress)
        invocation.runs.extend(done.runs)
        for name, todo in done.would_compute.items():  # a dry run's plan, group by group
            invocation.would_compute.setdefault(name, []).extend(todo)
        base += len(group_tracks)
    return invocation
