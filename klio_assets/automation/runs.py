"""Runs requested by the automation, and the tracks of a run: shared by every mode.

The landing sensor, the propagation sensor and the backfill schedule all request runs of the
analyses job over contiguous ranges of tracks (:func:`run_requests`); propagation and the
backfill read which tracks a finished or queued run covers back from its tags
(:func:`run_track_ids`). Nothing here imports another automation module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from klio_assets.orchestration.partitions import TRACKS, keys_in_range
from klio_assets.orchestration.ranges import range_tags
from klio_assets.orchestration.run.config import OP_NAME, analysis_run_config

#: Tag naming what requested a run (``landing``, ``propagation``, ``backfill``).
TRIGGER_TAG = "klio/trigger"
#: The op whose config says ``force`` and ``dry_run``.


def run_flags(run: dg.DagsterRun) -> tuple[bool, bool]:
    """``(force, dry_run)`` of a run of the analyses job, from its run config."""
    run_config: Any = run.run_config or {}
    config = run_config.get("ops", {}).get(OP_NAME, {}).get("config", {})
    return bool(config.get("force", False)), bool(config.get("dry_run", False))


def run_requests(
    ranges: Sequence[Sequence[str]],
    *,
    selected: Sequence[str],
    trigger: str,
    key_prefix: str,
    force: bool = False,
    extra_tags: dict[str, str] | None = None,
) -> list[dg.RunRequest]:
    """One ``RunRequest`` per contiguous range, every analysis in ``selected`` in the same run.

    The run key names the range (and the trigger): the daemon launches at most one run per key
    and sensor, so re-evaluating a tick after a crash requests nothing twice.
    """
    requests = []
    for track_ids in ranges:
        tags = {**range_tags(track_ids), TRIGGER_TAG: trigger, **(extra_tags or {})}
        requests.append(
            dg.RunRequest(
                run_key=f"{key_prefix}:{track_ids[0]}..{track_ids[-1]}:{len(track_ids)}",
                asset_selection=[dg.AssetKey(name) for name in selected],
                tags=tags,
                run_config=analysis_run_config(force=force),
            )
        )
    return requests


def run_track_ids(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The tracks a run covers, from its partition (range) tags, in registration order.

    Parameters
    ----------
    instance : dg.DagsterInstance
    run : dg.DagsterRun
        A run of the analyses job (other runs have no partition tags: no tracks).
    """
    tags = run.tags
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        if start == end:
            return [start]
        keys = keys_in_range(instance, start, end)
        if keys is None:
            ordered = list(instance.get_dynamic_partitions(TRACKS))
            keys = (
                ordered[ordered.index(start) : ordered.index(end) + 1]
                if start in ordered and end in ordered
                else []
            )
        return keys
    single = tags.get("dagster/partition")
    return [single] if single else []


__all__ = ["TRIGGER_TAG", "run_flags", "run_requests", "run_track_ids"]
