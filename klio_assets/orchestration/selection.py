"""What a ``klio-assets run`` asks for, and the answer when all of it is already done.

Imports no Dagster (a test traces it): when the catalog's ledger and the storage show every
wanted track done, or failed earlier and not to be retried yet (the catalog's remembered
failures, :mod:`klio_assets.catalog.failures`), ``klio-assets run`` answers from here in a
fraction of a second, without the ~1.2 s of ``import dagster`` and without reading Dagster's
partitions. Everything else goes through :mod:`klio_assets.orchestration.materialize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klio_assets.analyses import load_analyses
from klio_assets.catalog.failures import RetryPolicy, held_failures
from klio_assets.catalog.ledger import all_done
from klio_assets.catalog.names import DUPLICATE_GROUPS, TRACK_FEATURES
from klio_assets.errors import KlioAssetsError, ParameterError
from klio_assets.orchestration.lineage import ancestors, inputs
from klio_assets.settings import Settings
from klio_assets.worker.plan import PlannedAnalysis, plan_analyses
from klio_assets.worker.storage import Storage

if TYPE_CHECKING:  # on SQLite the all-done answer reads the catalog without SQLAlchemy
    from klio_assets.catalog.database import TrackCatalog
    from klio_assets.catalog.sqlite_reader import SqliteCatalogReader


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


def retry_policy(settings: Settings, *, backoff: bool = True) -> RetryPolicy:
    """When the deployment retries a transient failure (``KLIO_ASSETS_MAX_TRANSIENT_RETRIES``,
    ``KLIO_ASSETS_TRANSIENT_RETRY_BACKOFF_S``).

    Parameters
    ----------
    settings : Settings
    backoff : bool
        Wait out the backoff (the sensors and the schedule, which come back on their own);
        ``klio-assets run`` does not: a person asked now, after fixing what failed.
    """
    return RetryPolicy(
        max_transient_retries=settings.max_transient_retries,
        backoff_s=settings.transient_retry_backoff_s if backoff else 0.0,
    )


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


@dataclass(frozen=True)
class FastAnswer:
    """A ``klio-assets run`` answered without Dagster: nothing to do.

    Attributes
    ----------
    done : dict
        Per selected analysis, the wanted tracks done.
    failed_earlier : dict
        Per selected analysis, the wanted tracks held by a remembered failure (track ID to
        its ``failed earlier: <reason>`` line).
    """

    done: dict[str, list[str]]
    failed_earlier: dict[str, dict[str, str]]

    @property
    def tracks(self) -> int:
        """How many wanted tracks the answer covers."""
        ids: set[str] = set()
        for name, done in self.done.items():
            ids.update(done)
            ids.update(self.failed_earlier.get(name, {}))
        return len(ids)


#: Where a catalog-level table keeps the feature ``seq`` it reached (its Parquet schema's
#: metadata; written by :mod:`klio_assets.orchestration.catalog_assets`).
_TABLE_SEQ_KEY = b"klio_features_seq"


def tables_up_to_date(
    storage: Storage, catalog: TrackCatalog | SqliteCatalogReader, tables: Sequence[str]
) -> dict[str, dict[str, Any]] | None:
    """The catalog-level tables' answer without Dagster when none has anything new to take.

    A table is up to date when it exists and has taken every feature row written since
    (its recorded ``seq`` is the catalog's latest: of the fingerprints for
    ``duplicate_groups``, of every analysis for ``track_features``). Then a run whose tracks
    are all done or failed earlier launches no catalog-tables run either.

    Returns
    -------
    dict or None
        Table name to ``{"status": "materialized", "uri", "features_seq", "unchanged": True}``;
        None when some table may have something to take (then it is materialized as usual).
    """
    if not tables:
        return {}
    import pyarrow.parquet as pq  # noqa: PLC0415 - only when tables are asked for (~45 ms)

    out: dict[str, dict[str, Any]] = {}
    for name in tables:
        uri = storage.join(name, f"{name}.parquet")
        try:
            if not storage.exists(uri):
                return None
            with storage.local_copy(uri) as path:
                metadata = pq.read_schema(path).metadata or {}
            seq = int(metadata.get(_TABLE_SEQ_KEY, b"0"))
        except (KlioAssetsError, OSError, ValueError):  # unreadable: let its asset say why
            return None
        latest = catalog.latest_feature_seq(["fingerprint"] if name == DUPLICATE_GROUPS else None)
        if seq < latest:
            return None
        out[name] = {"status": "materialized", "uri": uri, "features_seq": seq, "unchanged": True}
    return out


def done_without_dagster(
    settings: Settings,
    catalog: TrackCatalog | SqliteCatalogReader,
    storage: Storage,
    selection: RunSelection,
    tracks: Sequence[str],
    *,
    with_upstream: bool,
    pending: list[str] | None = None,
) -> FastAnswer | None:
    """The catalog's answer when every wanted track is done or failed earlier, else None.

    Bottom-up runs also need the selected analyses' upstreams present (a ``run beats`` whose
    ``downsampled_audio`` was deleted recomputes it).

    Parameters
    ----------
    tracks : sequence of str
        The wanted track IDs; empty for every registered track.
    with_upstream : bool
        Also require the selected analyses' upstreams done (or failed earlier).
    pending : list of str, optional
        Filled with tracks the ledger shows work for, when there is any (see
        :func:`~klio_assets.catalog.ledger.all_done`).

    Returns
    -------
    FastAnswer or None
        None when anything may need work (then ask Dagster:
        :func:`klio_assets.orchestration.materialize.plan_run`).
    """
    check = list(selection.selected)
    if with_upstream:
        ups = ancestors(engine_inputs(settings), selection.selected)
        check = [n for n in selection.planned if n in ups or n in selection.selected]
    wanted = list(tracks) or None
    held = held_failures(
        catalog,
        selection.planned,
        check,
        wanted,
        retry_policy(settings, backoff=False),
        inputs=engine_inputs(settings),
    )
    done = all_done(catalog, storage, selection.planned, check, wanted, held=held, pending=pending)
    if done is None:
        return None
    return FastAnswer(
        done={n: done[n] for n in selection.selected},
        failed_earlier={n: held[n] for n in selection.selected if held[n]},
    )
