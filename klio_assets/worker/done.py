"""Whether a track's analysis is already done: the one place that decides it.

An analysis is done for a track when its output for the analysis' *current* version (the
version is part of the path: :meth:`~klio_assets.worker.plan.Layout.output_uri`) is committed
in the storage, and, where someone keeps records of what was materialized, when those records
have it too. Three callers ask, with the records they have:

* the engine on a Beam worker (:meth:`klio_assets.worker.execution.Engine.check`) keeps no
  records: the storage alone decides, one track at a time (:func:`done_analyses`);
* the CLI's fast path (:func:`klio_assets.catalog.ledger.all_done`) asks with the catalog's
  ledger, without Dagster;
* run planning (:func:`klio_assets.orchestration.launch.tracks_to_run`) asks with Dagster's
  materializations.

A code-version bump or a deleted output therefore brings a track back everywhere at once.
This module imports nothing from Dagster or the catalog.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from klio_assets.worker.plan import Layout, PlannedAnalysis
from klio_assets.worker.storage import Storage, shard_of

#: From this many tracks on, outputs are found by listing the wanted shard folders (at most
#: 256 listings) rather than one ``exists`` per track.
LISTING_MIN_TRACKS = 256


def existing_outputs(
    storage: Storage, planned: PlannedAnalysis, track_ids: Collection[str]
) -> set[str]:
    """The tracks among ``track_ids`` whose output of ``planned`` (current version) exists.

    Parameters
    ----------
    storage : Storage
        The storage root the outputs are under.
    planned : PlannedAnalysis
        The analysis and its current version.
    track_ids : collection of str
        The tracks to look for.

    Returns
    -------
    set of str
        A subset of ``track_ids``.
    """
    layout = Layout(storage)
    if len(track_ids) < LISTING_MIN_TRACKS:
        return {t for t in track_ids if storage.exists(layout.output_uri(planned, t))}
    folder = layout.output_folder(planned)
    suffix = f".{planned.extension}"
    found: set[str] = set()
    for shard in sorted({shard_of(t) for t in track_ids}):
        for name in storage.list_names(f"{folder}/{shard}"):
            if name.endswith(suffix):
                found.add(name[: -len(suffix)])
    return found & set(track_ids)


def done_analyses(
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    selected: Iterable[str],
    track_id: str,
) -> list[str]:
    """The analyses among ``selected`` already done for one track (the engine's question).

    Parameters
    ----------
    storage : Storage
    planned : mapping of str to PlannedAnalysis
        Every analysis of the run, by name.
    selected : iterable of str
        The analyses to ask about.
    track_id : str

    Returns
    -------
    list of str
        In ``selected``'s order.
    """
    return [n for n in selected if existing_outputs(storage, planned[n], (track_id,))]


def done_tracks(
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    recorded: Mapping[str, Collection[str]],
) -> dict[str, set[str]]:
    """Per analysis, the recorded tracks whose output exists: those that are done.

    Parameters
    ----------
    storage : Storage
    planned : mapping of str to PlannedAnalysis
        Every analysis, by name (current versions).
    recorded : mapping of str to collection of str
        Analysis name to the tracks the records (Dagster's materializations, the catalog's
        ledger) have as materialized for its current version, among those wanted.

    Returns
    -------
    dict of str to set of str
        The same keys as ``recorded``.
    """
    return {
        name: existing_outputs(storage, planned[name], ids) if ids else set()
        for name, ids in recorded.items()
    }


def tracks_with_work(
    track_ids: Iterable[str], selected: Sequence[str], done: Mapping[str, Collection[str]]
) -> list[str]:
    """The tracks, in order, that some selected analysis is not done for.

    Parameters
    ----------
    track_ids : iterable of str
    selected : sequence of str
    done : mapping of str to collection of str
        Per analysis the tracks done (:func:`done_tracks`).
    """
    return [t for t in track_ids if any(t not in done[n] for n in selected)]
