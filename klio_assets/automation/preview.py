"""What each automation mode would do now, without doing it (``klio-assets automation MODE --dry-run``).

For the landing sensor: the files and messages its next tick would take (from its stored
cursor), which of them are new, known or refused, and the runs it would request; for the
propagation sensor: the runs it would request for the runs finished since its cursor; for the
backfill schedule: its plan for a tick now. For every run, per analysis, how many tracks would
be computed and how many skipped (Dagster has a materialization and the output for the
current version exists; ``--force`` computes all). Nothing is registered, acknowledged,
launched or stored: Pub/Sub messages pulled to look at them are released for redelivery at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.orchestration.launch import tracks_to_run
from klio_assets.settings import Settings
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage

MODES = ("landing", "propagation", "backfill")


def automation_selection(settings: Settings, analyses: Sequence[Any]) -> list[str]:
    """The analyses the automation runs: ``KLIO_ASSETS_AUTO_ANALYSES`` and their ancestors
    (all when unset), in topological order."""
    from klio_assets.orchestration.lineage import ancestors, parents  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    graph = parents(analyses)
    names = list(plan_analyses(analyses, settings.params))
    auto = settings.auto_analyses
    wanted = (set(auto) | ancestors(graph, auto)) if auto else set(names)
    return [n for n in names if n in wanted]


def stored_cursor(instance: dg.DagsterInstance, sensor_name: str) -> str | None:
    """The cursor the daemon keeps for ``sensor_name`` (None if it never ticked)."""
    from dagster._core.definitions.run_request import InstigatorType  # noqa: PLC0415

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == sensor_name and state.instigator_data is not None:
            return getattr(state.instigator_data, "cursor", None)
    return None


def _request(
    instance: dg.DagsterInstance,
    storage: Storage,
    planned: Mapping[str, PlannedAnalysis],
    selected: Sequence[str],
    track_ids: Sequence[str],
    *,
    force: bool,
    materialized: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    if force:
        done: dict[str, list[str]] = {name: [] for name in selected}
    else:
        _, done = tracks_to_run(
            instance, storage, planned, selected, track_ids, materialized=materialized
        )
    return {
        "selected": list(selected),
        "start": track_ids[0],
        "end": track_ids[-1],
        "tracks": len(track_ids),
        "would_compute": {name: len(track_ids) - len(done[name]) for name in selected},
        "would_skip": {name: len(done[name]) for name in selected},
    }


def preview(
    mode: str,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    settings: Settings,
    analyses: Sequence[Any],
    *,
    force: bool = False,
    subscriber: Any = None,
) -> dict[str, Any]:
    """What ``mode`` would register, request and compute now; changes nothing.

    Raises
    ------
    ParameterError
        Unknown mode.
    """
    from klio_assets.errors import ParameterError  # noqa: PLC0415
    from klio_assets.orchestration.lineage import parents  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    if mode not in MODES:
        raise ParameterError(f"unknown automation mode {mode!r}; one of {', '.join(MODES)}")
    graph = parents(analyses)
    planned = plan_analyses(analyses, settings.params)
    selected = automation_selection(settings, analyses)
    storage = Storage(settings.storage)
    out: dict[str, Any] = {"mode": mode, "dry_run": True, "force": force, "requests": []}
    if mode == "landing":
        from klio_assets.automation.landing import landing_tick  # noqa: PLC0415
        from klio_assets.orchestration.ranges import partition_ranges  # noqa: PLC0415

        tick = landing_tick(
            instance,
            catalog,
            cursor=stored_cursor(instance, "landing_sensor"),
            location=settings.landing or None,
            max_tracks=settings.landing_max_tracks,
            batch_size=settings.batch_size,
            settle_s=settings.landing_settle_s,
            subscription=settings.landing_subscription or None,
            subscriber=subscriber,
            dry_run=True,
        )
        out["registers"] = {
            "new": tick.new,
            "known": tick.known,
            "refused": [list(r) for r in tick.refused],
        }
        out["backlog"] = tick.backlog
        # New tracks have no partition yet: they would be one contiguous range after the
        # registration, computed in full; known ones are checked like any range.
        for track_range in partition_ranges(instance, tick.known, settings.batch_size):
            out["requests"].append(
                _request(instance, storage, planned, selected, track_range, force=force)
            )
        for start in range(0, len(tick.new), settings.batch_size):
            chunk = tick.new[start : start + settings.batch_size]
            out["requests"].append(
                {
                    "selected": selected,
                    "start": chunk[0],
                    "end": chunk[-1],
                    "tracks": len(chunk),
                    "would_compute": {n: len(chunk) for n in selected},
                    "would_skip": {n: 0 for n in selected},
                }
            )
    elif mode == "propagation":
        from klio_assets.automation.propagation import propagation_tick  # noqa: PLC0415

        cursor = stored_cursor(instance, "propagation_sensor")
        tick = propagation_tick(
            instance,
            catalog,
            cursor=cursor,
            graph=graph,
            allowed=selected,
            batch_size=settings.batch_size,
        )
        for request in tick.requests:
            for track_range in request.ranges:
                entry = _request(
                    instance,
                    storage,
                    planned,
                    request.selected,
                    track_range,
                    force=force or request.force,
                )
                entry["after_run"] = request.upstream_run_id
                out["requests"].append(entry)
    else:
        from klio_assets.automation.backfill import plan_backfill  # noqa: PLC0415

        plan = plan_backfill(
            instance,
            catalog,
            storage,
            planned=planned,
            selected=selected,
            batch_size=settings.batch_size,
            max_runs=settings.backfill_max_runs,
            tick=datetime.datetime.now(datetime.UTC).isoformat(),
        )
        out["reasons"] = plan.reasons
        out["deferred_runs"] = plan.deferred_runs
        materialized: dict[str, set[str]] = {}  # read once per analysis, not once per run
        for run in plan.runs:
            out["requests"].append(
                _request(
                    instance,
                    storage,
                    planned,
                    run.selected,
                    run.track_ids,
                    force=force,
                    materialized=materialized,
                )
            )
    return out
