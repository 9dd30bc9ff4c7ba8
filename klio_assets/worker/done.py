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

A code-version bump or a deleted output therefore brings a track back everywhere at once, and
so does a changed source: each output has a record of the source it was computed from
(:func:`source_record`), and an output whose source's stat differs now is not done
(:func:`source_changed`; the catalog keeps the same stats for the CLI and the run planning,
:func:`klio_assets.catalog.ledger.changed_sources`).
This module imports nothing from Dagster or the catalog.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from klio_assets.errors import KlioAssetsError
from klio_assets.worker.plan import Layout, PlannedAnalysis
from klio_assets.worker.records import SourceStat
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


def source_record(
    storage: Storage, planned: PlannedAnalysis, track_id: str
) -> dict[str, Any] | None:
    """What the output of ``planned`` for ``track_id`` was computed from, if recorded.

    Returns
    -------
    dict or None
        ``content_hash`` and the source's :class:`~klio_assets.worker.records.SourceStat`
        fields; None for outputs written before these records were kept (or unreadable).
    """
    uri = Layout(storage).source_record_uri(planned, track_id)
    try:
        if not storage.exists(uri):
            return None
        record = storage.read_json(uri)
    except (KlioAssetsError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def source_changed(
    storage: Storage,
    planned: PlannedAnalysis,
    track_id: str,
    current: SourceStat | None,
    *,
    unrecorded: list[str] | None = None,
) -> bool:
    """Whether the output of ``planned`` was computed from a source that has changed since.

    Outputs without a record (from before it was kept, or whose writer was killed) and
    sources that cannot be stat'ed (``current`` None) count as unchanged; the name of an
    analysis without a record is appended to ``unrecorded`` (the engine records it then).
    """
    if current is None:
        return False
    record = source_record(storage, planned, track_id)
    if record is None and unrecorded is not None:
        unrecorded.append(planned.name)
    recorded = SourceStat.from_dict(record)
    return recorded is not None and recorded != current


def done_analyses(
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    selected: Iterable[str],
    track_id: str,
    *,
    current: SourceStat | None = None,
    unrecorded: list[str] | None = None,
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
    current : SourceStat, optional
        The source's stat now: outputs computed from a source that has changed since are
        not done (:func:`source_changed`).
    unrecorded : list of str, optional
        Filled with the analyses done whose output has no record of its source.

    Returns
    -------
    list of str
        In ``selected``'s order.
    """
    return [
        n
        for n in selected
        if existing_outputs(storage, planned[n], (track_id,))
        and not source_changed(storage, planned[n], track_id, current, unrecorded=unrecorded)
    ]


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
