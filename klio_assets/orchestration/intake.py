"""``klio-assets add``: find tracks in files, folders or a manifest, and register them.

Discovery (:func:`klio_assets.catalog.discovery.discover`) treats paths and manifests as
untrusted; registration goes to the catalog, then to Dagster's ``tracks`` partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from klio_assets.catalog.database import Registration, get_catalog
from klio_assets.catalog.discovery import discover
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings


@dataclass(frozen=True)
class Intake:
    """What ``klio-assets add`` did.

    Attributes
    ----------
    registration : Registration
        Tracks added, already known, and in conflict (same ID, another file).
    refused : list of tuple
        ``(what, reason)`` for every path, manifest row or track refused.
    """

    registration: Registration
    refused: list[tuple[str, str]]


def add_tracks(
    settings: Settings,
    paths: Sequence[str],
    *,
    manifest: str | None,
    allowed_roots: Sequence[str],
    follow_symlinks: bool,
) -> Intake:
    """Register the tracks found in ``paths`` (files, folders searched recursively) and ``manifest``.

    Parameters
    ----------
    settings : Settings
        The deployment (its catalog; Dagster's instance is ``DAGSTER_HOME``'s).
    paths : sequence of str
        Audio files and folders.
    manifest : str or None
        A CSV with ``track_id,path`` columns.
    allowed_roots : sequence of str
        Folders manifest paths may point into, besides the manifest's own.
    follow_symlinks : bool
        Accept symlinks that lead out of added folders.

    Returns
    -------
    Intake

    Raises
    ------
    KlioAssetsError
        The manifest or a track ID cannot be used at all (refusals of single paths are
        reported in :attr:`Intake.refused` instead).
    """
    found = discover(
        paths, manifest=manifest, allowed_roots=allowed_roots, follow_symlinks=follow_symlinks
    )
    registration = register_tracks(
        dg.DagsterInstance.get(),
        get_catalog(settings.catalog_url),
        found.tracks,
        alternates=found.alternates,
        window=settings.window_max_tracks,
    )
    refused = [*found.rejected, *registration.conflicts.items()]
    return Intake(registration=registration, refused=refused)
