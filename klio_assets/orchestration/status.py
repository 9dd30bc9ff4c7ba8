"""Where things stand: what ``klio-assets status`` and ``klio-assets show`` collect.

Both read Dagster's records (materializations, registered partitions) and the catalog's
failures; the CLI only renders them. Their ``to_json`` forms are the ``--json`` contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.trackids import validate_track_id
from klio_assets.errors import ParameterError
from klio_assets.orchestration.launch import materialized_tracks
from klio_assets.orchestration.partitions import ordered_keys
from klio_assets.orchestration.run_report import TrackFailure, group_failures
from klio_assets.orchestration.selection import catalog_tables, planned_analyses
from klio_assets.settings import Settings


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
    """
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    registered = set(ordered_keys(instance))
    assets: dict[str, AssetStatus] = {}
    for name in planned_analyses(settings):
        failed = {t: r for t, r in catalog.failures(name).items() if t in registered}
        materialized = (materialized_tracks(instance, name) & registered) - set(failed)
        assets[name] = AssetStatus(
            materialized=len(materialized),
            missing=len(registered) - len(materialized) - len(failed),
            failed=failed,
        )
    return StatusReport(tracks=len(registered), assets=assets)


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
        ``status``, ``code_version``, ...), ``run_id`` and ``materialized_at``; ``status`` is
        ``failed`` (with ``reason``) after a failure, ``missing`` without a materialization.
        The keys come from the asset's metadata, so this stays a dict.

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
    instance = dg.DagsterInstance.get()
    if track_id is not None:
        validate_track_id(track_id)
        if not get_catalog(settings.catalog_url).resolve([track_id]):
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
        failure = get_catalog(settings.catalog_url).failures(asset, [track_id]).get(track_id)
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
    if failure is not None:
        out["status"] = "failed"
        out["reason"] = failure
    elif not records:
        out["status"] = "missing"
        if track_id is None and asset not in tables:
            out["note"] = "no track has it yet; give a TRACK_ID to see one track"
    return out
