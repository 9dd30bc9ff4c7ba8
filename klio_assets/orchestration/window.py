"""Dagster's window on the catalog: which registered tracks are ``tracks`` partitions.

The catalog (:mod:`klio_assets.catalog.database`) knows every track and, per analysis, what is
done (the ledger), what failed and why. Dagster's ``tracks`` partitions hold only a window of
them: the tracks that are new or have work to do, up to ``KLIO_ASSETS_WINDOW_MAX_TRACKS``, and
the recently done ones until ``KLIO_ASSETS_WINDOW_RETAIN_S`` has passed
(:mod:`klio_assets.automation.retention` takes them out). Dagster's UI stays usable (it slows
past ~40k partitions of one asset), and its event log holds the window's events instead of
~2.6 KB per track and analysis of the whole catalog.

Everything here costs what it is asked about, never the size of the window or the catalog:
the size is one ``count``, membership one indexed query per chunk of keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from klio_assets.orchestration.dagster_internals import dynamic_partitions
from klio_assets.orchestration.dagster_internals.events import run_partitions
from klio_assets.orchestration.partitions import TRACKS, add_track_partitions


def window_size(instance: dg.DagsterInstance) -> int:
    """How many tracks are ``tracks`` partitions now."""
    return dynamic_partitions.count_keys(instance, TRACKS)


def in_window(instance: dg.DagsterInstance, track_ids: Sequence[str]) -> set[str]:
    """Those of ``track_ids`` that are ``tracks`` partitions (O(asked))."""
    if not track_ids:
        return set()
    return set(instance.get_existing_dynamic_partitions(TRACKS, list(track_ids)))


def admit(instance: dg.DagsterInstance, track_ids: Sequence[str], *, cap: int | None) -> list[str]:
    """Make ``track_ids`` partitions, in order, while the window has room.

    Tracks already in the window stay; the others enter until the window holds ``cap``
    tracks (None: no cap). A full window checks nothing: O(tracks admitted), not O(asked),
    so registering 10M tracks into a full window costs nothing here.

    Returns
    -------
    list of str
        Those of ``track_ids`` that entered (all of them with no cap, present or not).
    """
    wanted = list(dict.fromkeys(track_ids))
    if cap is None:
        add_track_partitions(instance, wanted)
        return wanted
    entered: list[str] = []
    free = cap - window_size(instance)
    start = 0
    while free > 0 and start < len(wanted):
        chunk = wanted[start : start + max(free, 1000)]
        start += len(chunk)
        present = in_window(instance, chunk)
        entering = [t for t in chunk if t not in present][:free]
        add_track_partitions(instance, entering)
        free -= len(entering)
        entered.extend(entering)
    return entered


def leave(instance: dg.DagsterInstance, track_ids: Sequence[str]) -> None:
    """Take ``track_ids`` out of the window (their partitions; the catalog keeps them)."""
    if track_ids:
        dynamic_partitions.delete_keys(instance, TRACKS, list(track_ids))


def window_page(
    instance: dg.DagsterInstance, *, after_id: int, limit: int
) -> list[tuple[int, str, float]]:
    """One page of the window in the order tracks entered it: ``(row id, track ID, entered
    at)`` with row id above ``after_id``."""
    page = dynamic_partitions.keys_page(instance, TRACKS, after_id=after_id, limit=limit)
    if page is not None:
        return page
    # Storages that are not SQL: every key, with no entry time (never too young to leave).
    keys = list(instance.get_dynamic_partitions(TRACKS))
    return [(i + 1, key, 0.0) for i, key in enumerate(keys)][after_id : after_id + limit]


def run_tracks_in_window(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """The tracks a run has events of that are still in the window."""
    return in_window(instance, sorted(run_partitions(instance, run_id)))


__all__ = [
    "admit",
    "in_window",
    "leave",
    "run_tracks_in_window",
    "window_page",
    "window_size",
]
