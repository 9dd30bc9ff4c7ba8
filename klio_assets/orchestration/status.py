"""Where things stand: what ``klio-assets status`` and ``klio-assets show`` collect.

Dagster's ``tracks`` partitions hold only a window of the catalog (recent and working
tracks), so ``status`` answers from the catalog alone: its exact counts (kept by triggers,
read in O(1)), its ledger and its failures, without importing Dagster. ``show`` reads
Dagster's latest materialization of the track, and the catalog's ledger and features for a
track outside the window. The CLI only renders them; their ``to_json`` forms are the
``--json`` contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from klio_assets.catalog.database import TrackCatalog, get_catalog
from klio_assets.catalog.trackids import validate_track_id
from klio_assets.errors import ParameterError
from klio_assets.orchestration.run_report import TrackFailure, group_failures
from klio_assets.orchestration.selection import catalog_tables, planned_analyses
from klio_assets.settings import Settings
from klio_assets.worker.plan import Layout, PlannedAnalysis
from klio_assets.worker.storage import Storage

#: ``show``'s note on an answer from the catalog.
OUTSIDE_WINDOW_NOTE = (
    "the track is outside Dagster's window (no materialization there): "
    "this answer comes from the catalog's ledger; the run that computed it may be gone "
    "from Dagster too (the window's retention deletes runs whose tracks all left)"
)


@dataclass(frozen=True)
class AssetStatus:
    """One analysis over the registered tracks.

    Attributes
    ----------
    materialized : int
        Tracks with a materialization (and no later failure).
    missing : int
        Tracks neither materialized nor failed.
    failed : dict
        Track ID to the reason of its last failure.
    """

    materialized: int
    missing: int
    failed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"materialized": N, "missing": N, "failed": {track: reason}}``."""
        return {"materialized": self.materialized, "missing": self.missing, "failed": self.failed}


@dataclass(frozen=True)
class StatusReport:
    """Every analysis over the registered tracks (``klio-assets status``).

    Attributes
    ----------
    tracks : int
        Registered tracks.
    assets : dict
        Analysis name to its :class:`AssetStatus`, in topological order.
    """

    tracks: int
    assets: dict[str, AssetStatus]

    def to_json(self) -> dict[str, Any]:
        """``{"tracks": N, "assets": {name: {"materialized", "missing", "failed"}}}``."""
        return {"tracks": self.tracks, "assets": {n: a.to_json() for n, a in self.assets.items()}}

    def failed_tracks(self) -> list[TrackFailure]:
        """One entry per failed track, its failed analyses grouped under its reason."""
        return group_failures({name: a.failed for name, a in self.assets.items()})

    def failed_json(self) -> dict[str, Any]:
        """The ``klio-assets status --failed --json`` object: ``{"tracks": N, "failed":
        [{"track_id", "reason", "analyses", "failed_earlier"}, ...]}``, every failed track."""
        return {"tracks": self.tracks, "failed": [f.to_json() for f in self.failed_tracks()]}


def collect_status(settings: Settings) -> StatusReport:
    """Per analysis: how many registered tracks are materialized, missing, failed.

    Parameters
    ----------
    settings : Settings
        The deployment (its catalog and analyses; Dagster's instance is ``DAGSTER_HOME``'s).

    Returns
    -------
    StatusReport

    Notes
    -----
    From the catalog alone, in O(analyses + failures) whatever the number of tracks: the
    registered tracks and each analysis's ledger rows are counted by triggers
    (:meth:`~klio_assets.catalog.database.TrackCatalog.counts`). A track is materialized when
    the ledger has an output of it, at any version, and no later failure.
    """
    catalog = get_catalog(settings.catalog_url)
    tracks, ledger = catalog.counts()
    assets: dict[str, AssetStatus] = {}
    for name in planned_analyses(settings):
        failed = catalog.failures(name, registered_only=True)
        materialized = ledger.get(name, 0) - len(catalog.failed_with_ledger(name))
        assets[name] = AssetStatus(
            materialized=materialized,
            missing=tracks - materialized - len(failed),
            failed=failed,
        )
    return StatusReport(tracks=tracks, assets=assets)


def collect_show(settings: Settings, asset: str, track_id: str | None) -> dict[str, Any]:
    """The latest metadata of ``asset`` for ``track_id`` (or of a catalog-level table).

    Parameters
    ----------
    settings : Settings
        The deployment.
    asset : str
        An analysis or a catalog-level table.
    track_id : str or None
        The track, for an analysis; None for a table (or an analysis's latest run).

    Returns
    -------
    dict
        ``asset``, ``track_id`` (when given), the materialization's metadata (``uri``,
        ``status``, ``code_version``, ...), ``run_id``, ``materialized_at`` and ``source``
        (``dagster``); ``status`` is ``failed`` (with ``reason``) after a failure, ``missing``
        without a materialization. For a track that Dagster has no materialization of but
        the catalog's ledger has (outside Dagster's window), the answer comes from the
        catalog (:func:`_catalog_answer`, ``source`` ``catalog``, with a ``note``). The keys
        come from the asset's metadata, so this stays a dict.

    Raises
    ------
    ParameterError
        Unknown asset, a track for a catalog table, or an invalid track ID.
    """
    planned = planned_analyses(settings)
    tables = catalog_tables(list(planned))
    if asset not in planned and asset not in tables:
        raise ParameterError(f"unknown asset {asset!r}; known: {', '.join([*planned, *tables])}")
    if asset in tables and track_id is not None:
        raise ParameterError(f"{asset} is a catalog-level table: it has no per-track value")
    import dagster as dg  # noqa: PLC0415 - ~1.2 s that `klio-assets status` does without

    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    if track_id is not None:
        validate_track_id(track_id)
        if not catalog.resolve([track_id]):
            raise ParameterError(
                f"track {track_id!r} is not registered (`klio-assets tracks` lists them)"
            )
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[track_id] if track_id else None
        ),
        limit=1,
    ).records
    out: dict[str, Any] = {"asset": asset}
    failure = None
    if track_id is not None:
        out["track_id"] = track_id
        failure = catalog.failures(asset, [track_id]).get(track_id)
        if not records:
            out.update(_catalog_answer(settings, catalog, planned[asset], track_id))
    if records:
        record = records[0]
        if track_id is None and record.partition_key is not None:
            # ASSET alone: the latest materialization of any track; say which one.
            out["track_id"] = record.partition_key
            out["note"] = "latest of any track; give a TRACK_ID for another one"
        materialization = record.asset_materialization
        if materialization is not None:
            out.update({k: v.value for k, v in materialization.metadata.items()})
        out["run_id"] = record.run_id
        out["materialized_at"] = record.timestamp
        out["source"] = "dagster"
    if failure is not None:
        out["status"] = "failed"
        out["reason"] = failure
    elif not records and "status" not in out:
        out["status"] = "missing"
        if track_id is None and asset not in tables:
            out["note"] = "no track has it yet; give a TRACK_ID to see one track"
    return out


def _catalog_answer(
    settings: Settings, catalog: TrackCatalog, planned: PlannedAnalysis, track_id: str
) -> dict[str, Any]:
    """What the catalog knows of ``planned``'s output for ``track_id``; empty without a
    ledger row.

    Returns
    -------
    dict
        The features row's scalar fields (for an analysis that keeps some), then ``status``
        (``materialized``), ``code_version`` (the ledger's version), ``uri`` (the features
        row's, else where the storage keeps that version's output), ``run_id``,
        ``materialized_at``, ``source`` (``catalog``) and a ``note``.
    """
    entry = catalog.ledger_entry(planned.name, track_id)
    if entry is None:
        return {}
    features = catalog.feature_row(planned.name, track_id)
    if features is not None and features.version != entry.version:
        features = None  # of another version than the ledger's output
    uri = features.uri if features is not None else ""
    if not uri:
        at_version = replace(planned, version=entry.version)
        uri = Layout(Storage(settings.storage)).output_uri(at_version, track_id)
    return {
        **(features.fields if features is not None else {}),
        "status": "materialized",
        "code_version": entry.version,
        "uri": uri,
        "run_id": entry.run_id,
        "materialized_at": entry.materialized_at,
        "source": "catalog",
        "note": OUTSIDE_WINDOW_NOTE,
    }
