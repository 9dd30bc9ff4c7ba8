"""The automation on demand (``klio-assets automation MODE``): a dry run of any mode, or the
backfill schedule's tick (or a retention tick) now, in this process.

The sensors and the schedule run in the daemon; this is what a user (or a test) calls to see
what they would do, or to catch up without waiting for the schedule. The returned objects
are the ``--json`` contract of the command (the dry run's is
:func:`klio_assets.automation.preview.preview`'s).
"""

from __future__ import annotations

import datetime
from typing import Any

import dagster as dg

from klio_assets.analyses import load_analyses
from klio_assets.automation.backfill import STATE_KEY, BackfillRun
from klio_assets.automation.preview import preview, retention_report
from klio_assets.automation.service import Automation
from klio_assets.catalog.database import TrackCatalog
from klio_assets.orchestration import launch
from klio_assets.orchestration.invocation import RunOutcome
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.settings import Settings
from klio_assets.worker.analysis import Analysis


def automation_now(mode: str, settings: Settings, *, dry_run: bool, force: bool) -> dict[str, Any]:
    """What ``mode`` would do now (``dry_run``), or the backfill's tick launched now.

    Parameters
    ----------
    mode : {"landing", "propagation", "backfill", "source_changes", "retention", "catalog_ranges"}
        The sensor or schedule.
    settings : Settings
        The deployment (Dagster's instance is ``DAGSTER_HOME``'s).
    dry_run : bool
        Change nothing; without it only ``backfill`` (its runs) and ``retention`` (a tick of
        the window's retention, from its stored cursor) can run here.
    force : bool
        Recompute where outputs exist (with ``dry_run``: count them as computed).

    Returns
    -------
    dict
        ``mode``, ``dry_run``, ``force``, ``requests`` (one per run: ``selected``, ``start``,
        ``end``, ``tracks``, ``would_compute``, ``would_skip``) and per mode ``registers``,
        ``reasons``, ``deferred_runs``, ``runs`` (launched: ``run_id``, ``success``,
        ``assets``, ``error``).

    Raises
    ------
    KlioAssetsError
        Unknown mode, or the mode cannot look (an unreachable subscription...).
    """
    instance = dg.DagsterInstance.get()
    catalog = CatalogResource(url=settings.catalog_url).get_catalog()
    analyses = load_analyses(settings.analysis_modules)
    if dry_run:
        return preview(mode, instance, catalog, settings, analyses, force=force)
    if mode == "retention":
        automation = Automation.build(settings, analyses)
        window = retention_report(automation, instance, catalog, dry_run=False)
        return {"mode": mode, "dry_run": False, "force": force, "requests": [], "window": window}
    return backfill_now(settings, instance, catalog, analyses, force=force)


def backfill_now(
    settings: Settings,
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    analyses: list[Analysis],
    *,
    force: bool,
) -> dict[str, Any]:
    """The backfill schedule's plan for a tick now, launched in this process (one run per range).

    The plan is the schedule's own (:meth:`klio_assets.automation.service.Automation.backfill`);
    the runs go through :func:`klio_assets.orchestration.launch.execute_range`, like the CLI's.

    Parameters
    ----------
    force : bool
        Recompute where outputs exist.

    Returns
    -------
    dict
        As :func:`automation_now`; the schedule's state is stored as after a tick.
    """
    storage = StorageResource(root=settings.storage).get_storage()
    now = datetime.datetime.now(datetime.UTC).isoformat()
    plan = Automation.build(settings, analyses).backfill(instance, catalog, storage, tick=now)
    out: dict[str, Any] = {
        "mode": "backfill",
        "dry_run": False,
        "force": force,
        "reasons": plan.reasons,
        "deferred_runs": plan.deferred_runs,
        "requests": [],
        "runs": [],
    }
    for run in plan.runs:
        outcome = launch.execute_range(
            instance, selected=run.selected, track_ids=run.track_ids, force=force, storage=storage
        )
        request, launched = _entries(run, outcome)
        out["requests"].append(request)
        out["runs"].append(launched)
    catalog.set_state(STATE_KEY, plan.state)
    return out


def _entries(run: BackfillRun, outcome: RunOutcome) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``requests`` and ``runs`` entries of one launched backfill run."""
    counts = (outcome.summary or {}).get("assets", {})
    request = {
        "selected": run.selected,
        "start": run.track_ids[0],
        "end": run.track_ids[-1],
        "tracks": len(run.track_ids),
        "would_compute": {n: counts.get(n, {}).get("computed", 0) for n in run.selected},
        "would_skip": {n: counts.get(n, {}).get("skipped", 0) for n in run.selected},
    }
    launched = {
        "run_id": outcome.run_id,
        "success": outcome.success,
        "assets": counts or None,
        "error": outcome.error,
    }
    return request, launched
