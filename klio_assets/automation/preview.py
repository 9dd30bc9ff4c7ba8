"""What each automation mode would do now, without doing it (``klio-assets automation MODE --dry-run``).

For the landing sensor: the files and messages its next tick would take (from its stored
cursor), which of them are new, known or refused, and the runs it would request; for the
propagation sensor: the runs it would request for the runs finished since its cursor; for the
source changes sensor: the files of its next page that changed and the runs it would request
(no observation is written); for the backfill schedule: its plan for a tick now; for the window
retention sensor: the tracks that would leave Dagster's window and the runs that would be
deleted; for the catalog ranges sensor: the ranges it would run and the tracks that would enter
the window again. For every run, per analysis, how many tracks would
be computed and how many skipped (Dagster has a materialization and the output for the
current version exists; ``--force`` computes all). Nothing is registered, acknowledged,
launched or stored: Pub/Sub messages pulled to look at them are released for redelivery at once.

The modes are the sensors' own services (:class:`klio_assets.automation.service.Automation`);
storage comes through :class:`klio_assets.resources.StorageResource`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from klio_assets.automation.service import MODES, Automation
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import held_failures
from klio_assets.errors import ParameterError
from klio_assets.orchestration.catalog_ranges import range_key
from klio_assets.orchestration.dagster_internals.instigators import stored_cursor
from klio_assets.orchestration.launch import recorded_materializations, tracks_to_run
from klio_assets.orchestration.ranges import partition_ranges
from klio_assets.orchestration.selection import retry_policy
from klio_assets.orchestration.window import window_size
from klio_assets.resources.storage import StorageResource
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

#: The analyses job (its runs are the ones the retention deletes).
ANALYSES_JOB = "audio_analyses_job"


def automation_selection(settings: Settings, analyses: Sequence[Any]) -> list[str]:
    """The analyses the automation runs: ``KLIO_ASSETS_AUTO_ANALYSES`` and their ancestors
    (all when unset), in topological order.

    Raises
    ------
    ParameterError
        ``KLIO_ASSETS_AUTO_ANALYSES`` names an unknown analysis.
    """
    return Automation.build(settings, analyses).selected


@dataclass
class _Preview:
    """One mode's dry run: where it reads and what it writes into the report."""

    automation: Automation
    instance: dg.DagsterInstance
    catalog: TrackCatalog
    storage: Storage
    force: bool
    report: dict[str, Any]
    materialized: dict[str, set[str]]

    def request(
        self, selected: Sequence[str], track_ids: Sequence[str], *, force: bool = False
    ) -> dict[str, Any]:
        """One run's ``--json`` entry: per analysis, tracks it would compute, skip, and leave
        as failed earlier (a remembered failure the run's engine would try again, the
        automation does not request on its own)."""
        held: dict[str, dict[str, str]] = {name: {} for name in selected}
        if self.force or force:
            done: dict[str, list[str]] = {name: [] for name in selected}
        else:
            _, done = tracks_to_run(
                self.instance,
                self.storage,
                self.automation.planned,
                selected,
                track_ids,
                materialized=self.materialized,
            )
            held = held_failures(
                self.catalog,
                self.automation.planned,
                selected,
                track_ids,
                retry_policy(self.automation.settings),
            )
        entry = _entry(selected, track_ids, {n: len(done[n]) for n in selected})
        entry["failed_earlier"] = {n: len(set(held[n]) - set(done[n])) for n in selected}
        return entry


def _entry(
    selected: Sequence[str], track_ids: Sequence[str], skipped: dict[str, int]
) -> dict[str, Any]:
    return {
        "selected": list(selected),
        "start": track_ids[0],
        "end": track_ids[-1],
        "tracks": len(track_ids),
        "would_compute": {name: len(track_ids) - skipped[name] for name in selected},
        "would_skip": {name: skipped[name] for name in selected},
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

    Returns
    -------
    dict
        The ``--json`` report: ``mode``, ``dry_run``, ``force``, ``requests`` (per run:
        ``selected``, ``start``, ``end``, ``tracks``, ``would_compute``, ``would_skip``), and
        per mode ``registers``/``backlog``, ``after_run`` per request, or
        ``reasons``/``deferred_runs``.

    Raises
    ------
    ParameterError
        Unknown mode, or ``KLIO_ASSETS_AUTO_ANALYSES`` names an unknown analysis.
    """
    if mode not in MODES:
        raise ParameterError(f"unknown automation mode {mode!r}; one of {', '.join(MODES)}")
    dry = _Preview(
        automation=Automation.build(settings, analyses),
        instance=instance,
        catalog=catalog,
        storage=StorageResource(root=settings.storage).get_storage(),
        force=force,
        report={"mode": mode, "dry_run": True, "force": force, "requests": []},
        materialized={},  # read once per analysis, not once per run
    )
    if mode == "landing":
        _landing(dry, subscriber)
    elif mode == "propagation":
        _propagation(dry)
    elif mode == "source_changes":
        _source_changes(dry)
    elif mode == "retention":
        dry.report["window"] = retention_report(dry.automation, dry.instance, dry.catalog)
    elif mode == "catalog_ranges":
        _catalog_ranges(dry)
    else:
        _backfill(dry)
    return dry.report


def _landing(dry: _Preview, subscriber: Any) -> None:
    automation = dry.automation
    tick = automation.landing(
        dry.instance,
        dry.catalog,
        cursor=stored_cursor(dry.instance, "landing_sensor"),
        subscriber=subscriber,
        dry_run=True,
    )
    dry.report["registers"] = {
        "new": tick.new,
        "known": tick.known,
        "refused": [list(r) for r in tick.refused],
    }
    dry.report["backlog"] = tick.backlog
    batch_size = automation.settings.batch_size
    # New tracks have no partition yet: they would be one contiguous range after the
    # registration, computed in full; known ones are checked like any range.
    for track_range in partition_ranges(dry.instance, tick.known, batch_size):
        dry.report["requests"].append(dry.request(automation.selected, track_range))
    # Only as many as the window has room for become partitions and runs now; the others
    # are registered in the catalog only, for the catalog ranges sensor.
    room = max(automation.settings.window_max_tracks - window_size(dry.instance), 0)
    entering = tick.new[:room]
    dry.report["registers"]["outside_window"] = len(tick.new) - len(entering)
    for start in range(0, len(entering), batch_size):
        chunk = entering[start : start + batch_size]
        nothing = {name: 0 for name in automation.selected}
        dry.report["requests"].append(_entry(automation.selected, chunk, nothing))


def _propagation(dry: _Preview) -> None:
    cursor = stored_cursor(dry.instance, "propagation_sensor")
    tick = dry.automation.propagation(dry.instance, dry.catalog, cursor=cursor)
    for request in tick.requests:
        for track_range in request.ranges:
            entry = dry.request(request.selected, track_range, force=request.force)
            entry["after_run"] = request.upstream_run_id
            dry.report["requests"].append(entry)


def _source_changes(dry: _Preview) -> None:
    cursor = stored_cursor(dry.instance, "source_changes_sensor")
    tick = dry.automation.source_changes(dry.instance, dry.catalog, cursor=cursor, dry_run=True)
    dry.report["checks"] = {"tracks": len(tick.checked), "changed": tick.observed}
    batch_size = dry.automation.settings.batch_size
    for names, tracks in tick.groups.items():
        for track_range in partition_ranges(dry.instance, tracks, batch_size):
            dry.report["requests"].append(dry.request(names, track_range, force=True))


def _backfill(dry: _Preview) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    plan = dry.automation.backfill(dry.instance, dry.catalog, dry.storage, tick=now)
    dry.report["reasons"] = plan.reasons
    dry.report["deferred_runs"] = plan.deferred_runs
    for run in plan.runs:
        dry.report["requests"].append(dry.request(run.selected, run.track_ids))


def retention_report(
    automation: Automation,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    dry_run: bool = True,
) -> dict[str, Any]:
    """The window retention's next tick (from its stored cursor): the ``window`` object of
    ``klio-assets automation retention [--dry-run] --json``."""
    size = window_size(instance)
    tick = automation.retention(
        instance,
        catalog,
        job_name=ANALYSES_JOB,
        cursor=stored_cursor(instance, "window_retention_sensor"),
        dry_run=dry_run,
    )
    return {
        "size": size,
        "max_tracks": automation.settings.window_max_tracks,
        "checked": tick.checked,
        "leave": tick.left,
        "leave_failed": tick.left_failed,
        "working": tick.working,
        "young": tick.young,
        "in_flight": tick.in_flight,
        "runs_deleted": tick.runs_deleted,
    }


def _catalog_ranges(dry: _Preview) -> None:
    automation = dry.automation
    cursor = stored_cursor(dry.instance, "catalog_ranges_sensor")
    tick = automation.catalog_ranges(dry.instance, dry.catalog, cursor=cursor, dry_run=True)
    dry.report["ranges"] = [
        {"partition": range_key(first, last), "first_seq": first, "last_seq": last, "tracks": n}
        for first, last, n in tick.ranges
    ]
    dry.report["entering"] = tick.entering
    # Tracks entering the window have no partition yet: runs over them, in the order given,
    # what is done read from the catalog's ledger (Dagster forgot them).
    dry.materialized.update(
        recorded_materializations(
            dry.instance, dry.catalog, automation.planned, automation.selected, tick.entering
        )
    )
    batch_size = automation.settings.batch_size
    for start in range(0, len(tick.entering), batch_size):
        chunk = tick.entering[start : start + batch_size]
        dry.report["requests"].append(dry.request(automation.selected, chunk))
