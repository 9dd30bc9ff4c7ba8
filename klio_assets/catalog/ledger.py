"""What is already done, decided without Dagster: the catalog's ledger plus the storage.

Every run enters the tracks it materialized in the catalog's ledger
(:meth:`~klio_assets.catalog.database.TrackCatalog.record_outcomes`), in the same step and after the
materialization events. So when the ledger has the current version of every selected
analysis for every wanted track, and the outputs are in the storage, a ``klio-assets run``
has nothing to do and can say so in one query plus a listing, without importing Dagster or
reading its partitions. Anything else goes to the full check against Dagster
(:func:`klio_assets.orchestration.launch.tracks_to_run`), which also refills the ledger.
Both, and the engine on the Beam workers, decide with :mod:`klio_assets.worker.done`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from klio_assets.catalog.trackids import validate_track_id
from klio_assets.errors import KlioAssetsError
from klio_assets.worker.done import done_tracks, existing_outputs
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.records import SourceStat
from klio_assets.worker.storage import Storage, source_stats

if TYPE_CHECKING:  # the all-done answer reads a SQLite catalog without SQLAlchemy
    from klio_assets.catalog.database import TrackCatalog
    from klio_assets.catalog.sqlite_reader import SqliteCatalogReader

__all__ = ["all_done", "changed_sources", "enter_in_ledger", "existing_outputs"]


def all_done(
    catalog: TrackCatalog | SqliteCatalogReader,
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    track_ids: Sequence[str] | None,
    *,
    held: Mapping[str, Collection[str]] | None = None,
    pending: list[str] | None = None,
) -> dict[str, list[str]] | None:
    """Per analysis the tracks done, if *every* wanted track is done for every selected
    analysis or held (a remembered failure not to retry, :mod:`klio_assets.catalog.failures`).

    Done is decided by :func:`klio_assets.worker.done.done_tracks` with the ledger as the
    record of what was materialized.

    Parameters
    ----------
    catalog : TrackCatalog or SqliteCatalogReader
        Holds the ledger and the registered tracks.
    storage : Storage
        Where the outputs are.
    planned : mapping of str to PlannedAnalysis
        Every analysis, by name, at its current version.
    selected : sequence of str
        The analyses asked for.
    track_ids : sequence of str or None
        The wanted tracks; None for every registered track.
    held : mapping of str to collection of str, optional
        Per analysis, tracks that count as answered without being done.
    pending : list of str, optional
        Filled, when the answer is None because the ledger lacks the current version of an
        analysis for some tracks, with those tracks (of the first such analysis, in the
        catalog's order): the work most likely to come.

    Returns
    -------
    dict or None
        Per analysis the done tracks (held ones left out); None as soon as anything may
        need work (or the IDs need checking): the caller then asks Dagster.
    """
    held = held or {}
    if not selected:
        return None
    if track_ids is not None:
        try:
            for track_id in track_ids:
                validate_track_id(track_id)
        except KlioAssetsError:
            return None  # the full path reports it
        track_ids = list(dict.fromkeys(track_ids))
    for name in selected:
        skip = held.get(name, ())
        missing = catalog.not_materialized(name, planned[name].version, track_ids)
        if any(t not in skip for t in missing):
            if pending is not None:
                pending.extend(t for t in missing if t not in skip)
            return None
    ids = track_ids if track_ids is not None else catalog.track_ids()
    if not ids:
        return None
    wanted = {name: [t for t in ids if t not in held.get(name, ())] for name in selected}
    for name in selected:  # one analysis at a time: the first one missing anything ends it
        if len(done_tracks(storage, planned, {name: wanted[name]})[name]) < len(wanted[name]):
            return None
    if any(changed_sources(catalog, wanted).values()):
        return None
    return {name: sorted(wanted[name]) for name in selected}


def changed_sources(
    catalog: TrackCatalog | SqliteCatalogReader,
    done: Mapping[str, Sequence[str]],
    current: Mapping[str, SourceStat | None] | None = None,
) -> dict[str, set[str]]:
    """Per analysis, the tracks among ``done`` whose source changed since their output was made.

    One stat per track (no read, no hash), compared with the stat the ledger recorded when the
    output was computed (:class:`~klio_assets.worker.records.SourceStat`). Tracks without a
    recorded stat (outputs from before it was kept) and sources that cannot be stat'ed count
    as unchanged.

    Parameters
    ----------
    catalog : TrackCatalog
    done : mapping of str to sequence of str
        Per analysis the tracks otherwise found done.
    current : mapping of str to SourceStat, optional
        Stats already made of some sources (track ID to its stat, None: cannot be stat'ed);
        the others are stat'ed here.

    Returns
    -------
    dict of str to set of str
        The same keys as ``done``.
    """
    recorded = {name: catalog.source_stats(name, ids) for name, ids in done.items() if ids}
    known = dict(current or {})
    wanted = sorted({t for stats in recorded.values() for t in stats} - set(known))
    uris = catalog.resolve(wanted) if wanted else {}
    known.update(source_stats(uris))
    changed: dict[str, set[str]] = {name: set() for name in done}
    for name, stats in recorded.items():
        for track_id, stat in stats.items():
            now = known.get(track_id)
            if now is not None and now != stat:
                changed[name].add(track_id)
    return changed


def enter_in_ledger(
    catalog: TrackCatalog, planned: Mapping[str, PlannedAnalysis], done: Mapping[str, Sequence[str]]
) -> None:
    """Enter tracks found done by the full check (Dagster and storage) that the ledger lacks.

    Catalogs from before the ledger, or a lost ledger, fill up this way on the next run.

    Parameters
    ----------
    catalog : TrackCatalog
    planned : mapping of str to PlannedAnalysis
        Every analysis, by name, at its current version.
    done : mapping of str to sequence of str
        Per analysis the tracks done (:func:`klio_assets.orchestration.launch.tracks_to_run`).
    """
    for name, track_ids in done.items():
        missing = (
            catalog.not_materialized(name, planned[name].version, track_ids) if track_ids else []
        )
        if missing:
            catalog.mark_materialized(
                name, version=planned[name].version, run_id="", track_ids=missing
            )
