"""What a ``klio-assets run`` asks for, and the answer when all of it is already done.

Imports no Dagster (a test traces it): when the catalog's ledger and the storage show every
wanted track done, ``klio-assets run`` answers from here in a fraction of a second, without
the ~1.2 s of ``import dagster`` and without reading Dagster's partitions. Everything else
goes through :mod:`klio_assets.orchestration.materialize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from klio_assets.analyses import load_analyses
from klio_assets.catalog.database import DUPLICATE_GROUPS, TRACK_FEATURES, TrackCatalog
from klio_assets.catalog.ledger import all_done
from klio_assets.errors import ParameterError
from klio_assets.orchestration.lineage import ancestors, inputs
from klio_assets.settings import Settings
from klio_assets.worker.plan import PlannedAnalysis, plan_analyses
from klio_assets.worker.storage import Storage


def planned_analyses(settings: Settings) -> dict[str, PlannedAnalysis]:
    """The deployment's analyses with their parameters and versions, in topological order.

    Parameters
    ----------
    settings : Settings
        Names the deployment's analysis modules and parameters.

    Returns
    -------
    dict
        Analysis name to its :class:`~klio_assets.worker.plan.PlannedAnalysis`.
    """
    return plan_analyses(load_analyses(settings.analysis_modules), settings.params)


def engine_inputs(settings: Settings) -> dict[str, list[str]]:
    """Analysis name to the analyses it reads (lineage without the ``source_audio`` asset).

    Parameters
    ----------
    settings : Settings
        Names the deployment's analysis modules.

    Returns
    -------
    dict
        What the engine needs to exist before it computes each analysis.
    """
    return inputs(load_analyses(settings.analysis_modules))


def catalog_tables(analyses: Sequence[str]) -> list[str]:
    """The catalog-level assets for these analyses, in dependency order.

    Parameters
    ----------
    analyses : sequence of str
        The per-track analyses of the deployment.

    Returns
    -------
    list of str
        ``duplicate_groups`` (when ``fingerprint`` is among ``analyses``) and ``track_features``.
    """
    return [*([DUPLICATE_GROUPS] if "fingerprint" in analyses else []), TRACK_FEATURES]


@dataclass(frozen=True)
class RunSelection:
    """The assets a ``klio-assets run`` materializes.

    Attributes
    ----------
    planned : dict
        Every analysis of the deployment (name to plan), in topological order.
    selected : list of str
        The per-track analyses asked for (all when no asset was named), in ``planned`` order.
    tables : list of str
        The catalog-level tables asked for (all when no asset was named).
    named : bool
        Whether assets were named (only then are missing upstreams added, bottom-up).
    """

    planned: dict[str, PlannedAnalysis]
    selected: list[str]
    tables: list[str]
    named: bool


def select_assets(settings: Settings, assets: Sequence[str]) -> RunSelection:
    """Resolve the asset names given to ``klio-assets run`` (none: every asset).

    Parameters
    ----------
    settings : Settings
        The deployment's settings.
    assets : sequence of str
        Per-track analyses and catalog-level tables, by name.

    Returns
    -------
    RunSelection

    Raises
    ------
    ParameterError
        A name is neither an analysis nor a catalog table; the message lists the known ones.
    """
    planned = planned_analyses(settings)
    names = list(planned)
    tables = catalog_tables(names)
    unknown = [a for a in assets if a not in names and a not in tables]
    if unknown:
        raise ParameterError(f"unknown assets {unknown}; known: {', '.join(names + tables)}")
    return RunSelection(
        planned=planned,
        selected=[n for n in names if not assets or n in assets],
        tables=[n for n in tables if not assets or n in assets],
        named=bool(assets),
    )


def done_without_dagster(
    settings: Settings,
    catalog: TrackCatalog,
    storage: Storage,
    selection: RunSelection,
    tracks: Sequence[str],
    *,
    with_upstream: bool,
) -> dict[str, list[str]] | None:
    """The catalog's ledger and the storage's answer when every wanted track is done, else None.

    Bottom-up runs also need the selected analyses' upstreams present (a ``run beats`` whose
    ``downsampled_audio`` was deleted recomputes it).

    Parameters
    ----------
    tracks : sequence of str
        The wanted track IDs; empty for every registered track.
    with_upstream : bool
        Also require the selected analyses' upstreams done.

    Returns
    -------
    dict or None
        Per selected analysis, the tracks found done; None when anything may need work
        (then ask Dagster: :func:`klio_assets.orchestration.materialize.plan_run`).
    """
    check = list(selection.selected)
    if with_upstream:
        ups = ancestors(engine_inputs(settings), selection.selected)
        check = [n for n in selection.planned if n in ups or n in selection.selected]
    done = all_done(catalog, storage, selection.planned, check, list(tracks) or None)
    return None if done is None else {n: done[n] for n in selection.selected}


def done_everywhere(done: Mapping[str, Sequence[str]]) -> int:
    """How many tracks an all-done answer covers (the same for every analysis).

    Parameters
    ----------
    done : mapping
        :func:`done_without_dagster`'s answer.

    Returns
    -------
    int
    """
    return len(next(iter(done.values())))
