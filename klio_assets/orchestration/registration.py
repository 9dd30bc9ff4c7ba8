"""Registering and removing tracks: the catalog first, then Dagster's ``tracks`` partitions.

Adding partitions one at a time costs 11-22 ms each, in batches 14-99 microseconds (about
10-25 on PostgreSQL with the bulk insert of
:func:`klio_assets.orchestration.partitions.add_track_partitions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.catalog.database import Registration, TrackCatalog, registered_uri
from klio_assets.catalog.trackids import validate_track_id
from klio_assets.orchestration.home import home_lock
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.orchestration.window import admit
from klio_assets.worker.plan import Layout, PlannedAnalysis
from klio_assets.worker.storage import Storage


def register_tracks(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    tracks: Sequence[tuple[str, str]],
    *,
    alternates: Mapping[str, tuple[str, str]] | None = None,
    window: int | None = None,
) -> Registration:
    """Add tracks to the catalog and as ``tracks`` partitions, in batches and in order.

    Partitions are added for every track registered here (new or already known), so that a
    registration interrupted between the catalog and Dagster is completed by adding again,
    while Dagster's window has room (:func:`klio_assets.orchestration.window.admit`): the
    others are in the catalog only, and the catalog ranges run them.

    Parameters
    ----------
    alternates : mapping, optional
        Source to the IDs its file name allows, preferred first
        (:attr:`klio_assets.catalog.discovery.Discovery.alternates`): a file keeps the one it
        is registered under, a new one takes the first free (``hello.flac`` added after
        ``hello.wav`` and ``hello.opus`` becomes ``hello-flac``).
    window : int, optional
        Most tracks in Dagster's window (``KLIO_ASSETS_WINDOW_MAX_TRACKS``); None: no cap.
    """
    for track_id, _ in tracks:
        validate_track_id(track_id)
    # Several registrations at once (two `klio-assets add`, the landing sensor) would insert
    # the same rows into SQLite concurrently: one at a time per instance home.
    with home_lock(instance.root_directory, "register"):
        if alternates:
            tracks = _settle_names(catalog, tracks, alternates)
        outcome = catalog.register(tracks)
        keys = [t for t, _ in tracks if t not in outcome.conflicts]
        admit(instance, keys, cap=window)
    return outcome


def _settle_names(
    catalog: TrackCatalog,
    tracks: Sequence[tuple[str, str]],
    alternates: Mapping[str, tuple[str, str]],
) -> list[tuple[str, str]]:
    """``tracks`` with each name-derived ID settled against the catalog (one batched lookup):
    a file keeps the ID it is registered under; a new file takes the first of its IDs that
    no other file has, here or in the catalog; a file whose IDs are all taken keeps its own,
    to be refused as a conflict."""
    wanted = {t for t, _ in tracks} | {c for pair in alternates.values() for c in pair}
    registered = catalog.resolve(sorted(wanted))
    claimed = {t: u for t, u in tracks if u not in alternates}
    settled: list[tuple[str, str]] = []
    for track_id, uri in tracks:
        choices = alternates.get(uri)
        if choices is None:
            settled.append((track_id, uri))
            continue
        source = registered_uri(uri)
        known = [c for c in choices if registered.get(c) == source]
        free = [c for c in choices if c not in registered and claimed.get(c, uri) == uri]
        choice = (known or free or [track_id])[0]
        claimed[choice] = uri
        settled.append((choice, uri))
    return settled


@dataclass
class Removal:
    """What :func:`remove_tracks` did.

    Attributes
    ----------
    removed : list of str
        Tracks that were registered and are no longer.
    unknown : list of str
        IDs that were not registered.
    outputs : dict of str to int
        Track to the number of stored files deleted (with ``outputs`` only).
    """

    removed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)


def remove_tracks(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    track_ids: Sequence[str],
    *,
    storage: Storage | None = None,
    analyses: Mapping[str, PlannedAnalysis] | None = None,
) -> Removal:
    """Forget tracks: the catalog's rows, the ``tracks`` partitions and, given ``storage``
    and ``analyses``, their stored outputs of the analyses' current versions.

    Outputs are deleted first, then the catalog rows, then the partitions: a removal
    interrupted midway leaves a track that is still registered (remove it again), never
    outputs that no catalog row names.

    Parameters
    ----------
    track_ids : sequence of str
        Validated here (an ID from outside never reaches a storage path unchecked).
    storage : Storage, optional
        The output root; every path deleted is built by
        :class:`~klio_assets.worker.plan.Layout` from checked components and stays under it.
    analyses : mapping, optional
        The deployment's planned analyses (whose outputs are deleted).
    """
    ids = [validate_track_id(t) for t in dict.fromkeys(track_ids)]
    outcome = Removal()
    with home_lock(instance.root_directory, "register"):
        known = set(catalog.resolve(ids)) | (set(ids) & _partition_keys(instance, ids))
        outcome.unknown = [t for t in ids if t not in known]
        targets = [t for t in ids if t in known]
        if storage is not None and analyses:
            layout = Layout(storage)
            for track_id in targets:
                outcome.outputs[track_id] = _delete_outputs(layout, analyses, track_id)
        catalog.remove(targets)
        for track_id in targets:
            instance.delete_dynamic_partition(TRACKS, track_id)
        outcome.removed = targets
    return outcome


def _partition_keys(instance: dg.DagsterInstance, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that are ``tracks`` partitions (a registration half done: the
    partition without the catalog row)."""
    return {t for t in ids if instance.has_dynamic_partition(TRACKS, t)}


def _delete_outputs(layout: Layout, analyses: Mapping[str, PlannedAnalysis], track_id: str) -> int:
    storage = layout.storage
    deleted = 0
    for planned in analyses.values():
        uri = layout.output_uri(planned, track_id)
        folder, manifest = uri.rsplit("/", 1)
        targets = [uri, layout.source_record_uri(planned, track_id)]
        if manifest.endswith(".parts.json") and storage.exists(uri):
            # A multi-file output (stems): its manifest names the part files beside it. Stored
            # data is not trusted with a path: only plain names of this track's files count.
            parts = storage.read_json(uri).get("parts", {})
            files = [p.get("file") for p in parts.values() if isinstance(p, dict)]
            targets[:0] = [
                storage.join(*folder[len(storage.root) + 1 :].split("/"), name)
                for name in files
                if isinstance(name, str) and name.startswith(f"{track_id}.") and "/" not in name
            ]
        for target in targets:
            deleted += storage.delete(target)
    return deleted
