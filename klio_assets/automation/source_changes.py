"""Source files changed on disk, found by a sweep of the catalog, and the runs that redo them.

A track's outputs are made from its source file; when the file is overwritten, Dagster knows
only once the file is observed (the external ``source_files`` asset,
:mod:`klio_assets.orchestration.source_files`). ``klio-assets run --stale`` observes the files
it is asked about; this mode does it continuously: each tick stats the next page of registered
tracks (``KLIO_ASSETS_SOURCE_CHECKS_PER_TICK``, in registration order; after the last page it
starts again from the first), observes the files whose stat changed (the UI then shows their
``source_audio`` stale), and requests, for the tracks whose file changed since one of their
outputs was computed, exactly what ``run --stale`` would recompute (forced, the same analyses
per group of tracks).

The requests are derived from the state, not from the observations this tick wrote: a tick
evaluated again after a crash finds the same changed files and asks for the same runs under the
same run keys (a key names the tracks and their files' current stat: a file changed again gets
a new run). A file whose new content fails keeps its key: it is not requested again until it
changes again. One stat per track and page, no read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.automation.runs import run_requests
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.ledger import changed_sources
from klio_assets.orchestration.ranges import partition_ranges
from klio_assets.orchestration.source_files import observe_sources, stat_version
from klio_assets.orchestration.staleness import stale_groups
from klio_assets.orchestration.window import admit
from klio_assets.settings import Settings
from klio_assets.worker.storage import source_stats

#: ``klio/trigger`` of the runs this mode requests.
TRIGGER = "source_change"


@dataclass
class SourceChangesTick:
    """What one tick found and asks for.

    Attributes
    ----------
    checked : list of str
        The tracks whose file was stat'ed this tick (one page).
    observed : list of str
        Those whose file was observed with a new stat (what the UI shows stale from now on).
    groups : dict
        The analyses to recompute (topological order) to the changed tracks that need exactly
        those: what ``klio-assets run --stale`` would run for them.
    versions : dict
        Each changed track's file, as stat'ed now (``size:mtime``): part of the run keys.
    cursor : str
        The next tick's cursor (JSON: the registration sequence to continue after, and how
        many sweeps of the catalog were completed).
    """

    checked: list[str]
    observed: list[str]
    groups: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cursor: str = ""


def _read_cursor(cursor: str | None) -> tuple[int, int]:
    """``(after_seq, sweeps)`` from a cursor (a fresh start for none or an unreadable one)."""
    try:
        state = json.loads(cursor) if cursor else {}
        return int(state.get("after_seq", 0)), int(state.get("sweeps", 0))
    except (ValueError, TypeError, AttributeError):
        return 0, 0


def source_changes_tick(
    settings: Settings,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    cursor: str | None,
    allowed: Sequence[str],
    per_tick: int,
    dry_run: bool = False,
) -> SourceChangesTick:
    """One tick: stat a page of tracks, observe changed files, plan their recomputation.

    Parameters
    ----------
    allowed : sequence of str
        The analyses the automation may run (the groups are limited to them).
    per_tick : int
        Tracks stat'ed per tick.
    dry_run : bool
        Observe nothing (``observed`` lists what would be observed: the changed files).
    """
    after_seq, sweeps = _read_cursor(cursor)
    page = catalog.tracks_page(after_seq=after_seq, limit=per_tick)
    ids = [track_id for _, track_id, _, _ in page]
    if len(page) < per_tick:  # the end of the catalog: the next tick starts again
        next_cursor = {"after_seq": 0, "sweeps": sweeps + 1}
    else:
        next_cursor = {"after_seq": page[-1][0], "sweeps": sweeps}
    tick = SourceChangesTick(checked=ids, observed=[], cursor=json.dumps(next_cursor))
    if not ids:
        return tick
    # one stat per track (object stores: several at once), compared with the latest
    # observation and with the stat each analysis' output was computed from
    stats = source_stats({track_id: uri for _, track_id, uri, _ in page})
    if not dry_run:
        tick.observed = observe_sources(instance, catalog, ids, stats)
    per_analysis = changed_sources(catalog, {name: ids for name in allowed}, stats)
    changed = sorted({t for tracks in per_analysis.values() for t in tracks})
    if dry_run:
        tick.observed = changed
    if not changed:
        return tick
    tick.versions = {t: stat_version(stat) for t in changed if (stat := stats.get(t))}
    if not dry_run:  # a track out of Dagster's window enters it again, to be run per track
        admit(instance, changed, cap=None)
    groups = stale_groups(settings, instance, catalog, list(allowed), changed, observe=not dry_run)
    tick.groups = {names: tracks for names, tracks in groups.items() if names and tracks}
    return tick


def source_change_run_requests(
    tick: SourceChangesTick, instance: dg.DagsterInstance, *, batch_size: int
) -> list[dg.RunRequest]:
    """The tick's ``RunRequest``s: per group, forced runs over contiguous ranges, keyed by the
    group's analyses, tracks and their files' current stat."""
    out: list[dg.RunRequest] = []
    for names, tracks in tick.groups.items():
        for track_range in partition_ranges(instance, tracks, batch_size):
            what = json.dumps(
                [list(names), [(t, tick.versions.get(t, "")) for t in track_range]]
            ).encode()
            digest = hashlib.sha256(what).hexdigest()[:16]
            out.extend(
                run_requests(
                    [track_range],
                    selected=names,
                    trigger=TRIGGER,
                    key_prefix=f"changed-{digest}",
                    force=True,
                )
            )
    return out


__all__ = ["TRIGGER", "SourceChangesTick", "source_change_run_requests", "source_changes_tick"]
