"""Work outside Dagster's window, found in the catalog: back into the window, or by range.

Each tick looks at the next ``range_size x max_runs`` registration sequence numbers after a
cursor (which starts again from the first track when a version changes) and reads, from the
catalog in SQL, the tracks among them that have work to do for the analyses the automation
runs (no ledger row of the current version, no failure at it:
:func:`klio_assets.catalog.work.pending_page`). Tracks in the window are left to the per-track
runs (landing, propagation, the backfill schedule). For the others:

* when they are fewer than a range and fit in the window's room, they **enter the window
  again** and get per-track runs: a new analysis version on a few tracks is seen per track in
  the UI;
* otherwise (a version bump over millions, a registration beyond the window), they are cut
  into **catalog ranges** of ``KLIO_ASSETS_RANGE_SIZE`` tracks needing work, each one run and
  one materialization of the ``catalog_ranges`` asset
  (:mod:`klio_assets.orchestration.catalog_ranges`).

Once the cursor reaches the last registered track it stays there: later ticks look only at
tracks registered since, until a version changes.

Tracks outside the window with a transient failure whose retry is due
(:class:`~klio_assets.catalog.failures.RetryPolicy`) enter the window again too, with per-track
runs. A tick costs the page it reads and the failures: O(work found), never
O(catalog); planning a 10M-track version bump starts launching ranges on its first tick.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.automation.runs import TRIGGER_TAG, run_requests
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import RetryPolicy, remembered
from klio_assets.catalog.work import last_seq, pending_page
from klio_assets.orchestration.catalog_ranges import CATALOG_RANGES, range_key
from klio_assets.orchestration.ranges import partition_ranges
from klio_assets.orchestration.window import admit, in_window, window_size
from klio_assets.worker.plan import PlannedAnalysis

#: ``klio/trigger`` of the runs this mode requests.
TRIGGER = "catalog"


@dataclass
class CatalogRangesTick:
    """What one tick found and asks for.

    Attributes
    ----------
    versions : dict
        The analyses the automation runs, to their current versions.
    found : int
        Tracks with work to do read this tick (in the window or not).
    ranges : list of (int, int, int)
        Catalog ranges to run: first and last sequence number, tracks needing work.
    entering : list of str
        Tracks entering the window again, with per-track runs (few, or failures to retry).
    runs : list of list of str
        The per-track runs of ``entering`` (contiguous partition ranges).
    at_end : bool
        The cursor reached the last registered track (later ticks look at new ones only).
    cursor : str
        The next tick's cursor (JSON: versions and the sequence number to continue after).
    """

    versions: dict[str, str]
    found: int = 0
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    entering: list[str] = field(default_factory=list)
    runs: list[list[str]] = field(default_factory=list)
    at_end: bool = False
    cursor: str = ""


def _read_cursor(cursor: str | None, versions: Mapping[str, str]) -> int:
    """The sequence number to continue after (0 when a version changed or no cursor)."""
    try:
        state = json.loads(cursor) if cursor else {}
        return int(state.get("after_seq", 0)) if state.get("versions") == dict(versions) else 0
    except (ValueError, TypeError, AttributeError):
        return 0


def catalog_ranges_tick(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    cursor: str | None,
    range_size: int,
    max_runs: int,
    window: int,
    batch_size: int,
    policy: RetryPolicy,
    dry_run: bool = False,
) -> CatalogRangesTick:
    """One tick: find work outside the window; plan ranges, or bring it back into the window.

    Parameters
    ----------
    planned : mapping
        Every analysis at its current version (topological order).
    selected : sequence of str
        The analyses the automation runs.
    range_size : int
        Tracks needing work per catalog range.
    max_runs : int
        Most catalog ranges per tick.
    window : int
        ``KLIO_ASSETS_WINDOW_MAX_TRACKS``.
    batch_size : int
        Most tracks per per-track run.
    dry_run : bool
        Change nothing (no track enters the window); the tick says what it would do.
    """
    versions = {n: planned[n].version for n in planned if n in selected}
    after = _read_cursor(cursor, versions)
    span = range_size * max_runs  # sequence numbers looked at: the tick's cost, bounded
    last = last_seq(catalog)
    end = min(after + span, last)
    page = pending_page(catalog, versions, after_seq=after, limit=span, last_seq=end)
    tick = CatalogRangesTick(versions=versions, found=len(page), at_end=end >= last)
    inside = in_window(instance, [t for _, t in page])
    outside = [(seq, t) for seq, t in page if t not in inside]
    room = window - window_size(instance)
    retry = _retries(instance, catalog, planned, selected, policy)
    if outside and len(outside) < range_size and len(outside) + len(retry) <= room:
        tick.entering = [t for _, t in outside]
    else:
        for start in range(0, len(outside), range_size):
            chunk = outside[start : start + range_size]
            tick.ranges.append((chunk[0][0], chunk[-1][0], len(chunk)))
    tick.entering.extend(t for t in retry[: max(room - len(tick.entering), 0)])
    if tick.entering and not dry_run:
        admit(instance, tick.entering, cap=None)  # counted against the room above
        tick.runs = partition_ranges(instance, tick.entering, batch_size)
    tick.cursor = json.dumps({"versions": versions, "after_seq": max(end, after)})
    return tick


def _retries(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    policy: RetryPolicy,
    now: float | None = None,
) -> list[str]:
    """Tracks outside the window with a transient failure at the current version whose retry
    is due (O(remembered failures), no file stat: a permanent failure is tried again when its
    file changes, which the source changes sensor sees, or when the version does, which
    :func:`~klio_assets.catalog.work.pending_page` sees)."""
    now = time.time() if now is None else now
    due: dict[str, None] = {}
    for name in selected:
        for track_id, failure in remembered(catalog, name).items():
            at = failure.retry_at(policy)
            if failure.version == planned[name].version and at is not None and at <= now:
                due[track_id] = None
    inside = in_window(instance, list(due))
    return [t for t in due if t not in inside]


def catalog_ranges_requests(
    tick: CatalogRangesTick, *, selected: Sequence[str]
) -> tuple[list[dg.RunRequest], list[str]]:
    """The tick's run requests and the ``catalog_ranges`` partitions to add first.

    A range's run key names the span and the versions: a tick evaluated again asks for
    nothing twice, and the next version bump gets new runs over the same spans.
    """
    digest = hashlib.sha256(json.dumps(tick.versions, sort_keys=True).encode()).hexdigest()[:12]
    keys = [range_key(first, last) for first, last, _ in tick.ranges]
    requests = [
        dg.RunRequest(
            run_key=f"range-{digest}:{key}",
            partition_key=key,
            asset_selection=[dg.AssetKey(CATALOG_RANGES)],
            tags={TRIGGER_TAG: TRIGGER, "klio/range_tracks": str(n)},
        )
        for key, (_, _, n) in zip(keys, tick.ranges, strict=True)
    ]
    # A track entering the window is out of the next tick's reach: one key per tick is enough
    # (a retried failure enters again, later, under a new key).
    requests.extend(
        run_requests(
            tick.runs,
            selected=selected,
            trigger="window",
            key_prefix=f"window-{digest}-{int(time.time())}",
        )
    )
    return requests, keys


__all__ = ["TRIGGER", "CatalogRangesTick", "catalog_ranges_requests", "catalog_ranges_tick"]
