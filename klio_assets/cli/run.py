"""``klio-assets run``: materialize analyses for the tracks that need it, through Dagster.

This module imports no Dagster at import time, on purpose: when the catalog's ledger and the
storage show every wanted track done, the command answers without it (a test traces the
imports). The Dagster side is imported inside :func:`run`, once, past that answer; so is
SQLAlchemy, where the catalog is a SQLite file (the answer reads it with ``sqlite3``,
:mod:`klio_assets.catalog.sqlite_reader`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import click

from klio_assets.catalog.sqlite_reader import open_sqlite_reader
from klio_assets.cli import render
from klio_assets.cli.common import fail, load_settings
from klio_assets.errors import KlioAssetsError
from klio_assets.orchestration.invocation import Invocation
from klio_assets.orchestration.run_report import RunReport
from klio_assets.orchestration.selection import (
    RunSelection,
    done_without_dagster,
    select_assets,
    tables_up_to_date,
)
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

if TYPE_CHECKING:  # rich is imported when something is printed to the console (not by --json)
    from rich.console import Console

    from klio_assets.catalog.database import TrackCatalog


@click.command()
@click.argument("assets", nargs=-1)
@click.option(
    "--tracks", "tracks", multiple=True, help="Track ID (repeatable); default: every track."
)
@click.option("--force", is_flag=True, help="Recompute even where outputs exist.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Report what the run would compute, skip, or leave as failed earlier; change nothing "
    "(no Dagster run is recorded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option(
    "--upstream/--no-upstream",
    default=True,
    show_default=True,
    help="Also compute the upstream analyses that are missing for these tracks (bottom-up).",
)
@click.option(
    "--check-dagster",
    is_flag=True,
    help="Always ask Dagster which tracks are materialized, even when the catalog's ledger "
    "says all are (after wiping materializations in Dagster).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Try again the tracks that failed earlier (a broken file, or a transient failure "
    "past KLIO_ASSETS_MAX_TRANSIENT_RETRIES); otherwise they are retried only when their file "
    "or the analysis' version changes.",
)
@click.option(
    "--stale",
    is_flag=True,
    help="Recompute exactly the analyses and tracks Dagster calls unsynced (stale: code "
    "version, parameters or an input changed since), nothing else.",
)
def run(
    assets: Sequence[str],
    tracks: Sequence[str],
    force: bool,
    dry_run: bool,
    as_json: bool,
    upstream: bool = True,
    check_dagster: bool = False,
    retry_failed: bool = False,
    stale: bool = False,
) -> None:
    """Materialize ASSETS (default: all) for the tracks that need it, through Dagster.

    Bottom-up: upstream analyses missing for some of the tracks are computed first, in the
    same run (never sibling analyses). Tracks already materialized for the current code
    version are skipped without a run; the rest go in contiguous ranges of at most
    KLIO_ASSETS_BATCH_SIZE tracks, one Dagster run and one Beam job each. When the catalog's
    ledger and the storage show every wanted track done, the command says so without
    starting Dagster at all. A track that failed on a broken file is not retried (reported
    "failed earlier") until the file or the analysis' version changes, or --retry-failed;
    transient failures are retried a bounded number of times. Exits 1 if any track failed in
    this invocation (not for those that failed earlier).
    """
    started = time.perf_counter()
    settings = load_settings()
    try:
        selection = select_assets(settings, assets)
    except KlioAssetsError as exc:
        fail(str(exc))
    storage = Storage(settings.storage)
    try:
        storage.check_reachable()  # an unreachable gs:// root: one line now, not minutes later
    except KlioAssetsError as exc:
        fail(str(exc))
    if stale:
        catalog = _catalog(settings)
        invocation = _run_stale(settings, catalog, storage, selection, assets, tracks, dry_run)
        invocation.wall_seconds = round(time.perf_counter() - started, 3)
        _report(invocation, dry_run=dry_run, as_json=as_json, console=None)
    prehash: list[str] = []
    if not (force or retry_failed or check_dagster):
        # A SQLite catalog is read with sqlite3 here (SQLAlchemy's import is ~0.1 s of a
        # rerun's ~0.4 s); None: not a SQLite file, or one SQLAlchemy has to complete first.
        reader = open_sqlite_reader(settings.catalog_url)
        ledger = reader if reader is not None else _catalog(settings)
        pending: list[str] = []
        try:
            answer = done_without_dagster(
                settings,
                ledger,
                storage,
                selection,
                tracks,
                with_upstream=upstream and selection.named,
                pending=pending,
            )
            # The catalog tables too, when asked for: up to date if nothing new was written.
            tables = tables_up_to_date(storage, ledger, selection.tables) if answer else {}
            if answer is None and _local_worker(settings, dry_run=dry_run):
                # the first run's likely work, for the waiting worker to hash meanwhile
                first = pending[: settings.batch_size]
                found = ledger.resolve(first)
                prehash = [found[t] for t in first if t in found]
        finally:
            if reader is not None:
                reader.close()
        if answer is not None and tables is not None:  # answered without importing Dagster
            invocation = Invocation(
                selected=selection.selected,
                already_done=answer.done,
                failed_earlier=answer.failed_earlier,
                catalog=tables,
            )
            invocation.wall_seconds = round(time.perf_counter() - started, 3)
            console = None if as_json else render.stderr_console()
            if console is not None:
                console.print(
                    render.all_done_line(
                        answer.tracks,
                        selection.selected,
                        failed_earlier=len({t for h in answer.failed_earlier.values() for t in h}),
                    )
                )
            _report(invocation, dry_run=dry_run, as_json=as_json, console=console)
    if _local_worker(settings, dry_run=dry_run):
        _start_worker_ahead(prehash)
    console = render.stderr_console()
    invocation = _materialize(
        settings,
        _catalog(settings),
        storage,
        selection,
        tracks,
        force=force,
        dry_run=dry_run,
        upstream=upstream,
        retry_failed=retry_failed,
        as_json=as_json,
        console=console,
    )
    invocation.wall_seconds = round(time.perf_counter() - started, 3)
    _report(invocation, dry_run=dry_run, as_json=as_json, console=console)


def _materialize(
    settings: Settings,
    catalog: TrackCatalog,
    storage: Storage,
    selection: RunSelection,
    tracks: Sequence[str],
    *,
    force: bool,
    dry_run: bool,
    upstream: bool,
    retry_failed: bool,
    as_json: bool,
    console: Console,
) -> Invocation:
    """Plan the runs with Dagster, say what will run, launch them under a progress bar."""
    # Imports Dagster (~1.2 s): only here, past the all-done answer of `run`, which must not.
    from klio_assets.orchestration.materialize import execute_plan, plan_run  # noqa: PLC0415

    try:
        plan = plan_run(
            settings,
            catalog,
            storage,
            selection,
            tracks,
            force=force,
            dry_run=dry_run,
            upstream=upstream,
            retry_failed=retry_failed,
        )
    except KlioAssetsError as exc:
        fail(str(exc))
    if not as_json:
        console.print(
            render.plan_line(
                plan.selected,
                wanted=len(plan.wanted),
                todo=len(plan.todo),
                runs=len(plan.batches),
                batch_size=settings.batch_size,
                upstream_added=plan.upstream_added,
                failed_earlier=len({t for h in plan.failed_earlier.values() for t in h}),
                dry_run=dry_run,
            )
        )
    with render.run_progress(console, disable=as_json or dry_run or not plan.todo) as progress:
        bar = progress.add_task("tracks", total=len(plan.todo))
        return execute_plan(
            plan,
            storage,
            force=force,
            dry_run=dry_run,
            # called by the run's results poller as tracks finish (rich's Progress is thread-safe)
            on_progress=lambda done: progress.update(bar, completed=done),
        )


def _run_stale(
    settings: Settings,
    catalog: TrackCatalog,
    storage: Storage,
    selection: RunSelection,
    assets: Sequence[str],
    tracks: Sequence[str],
    dry_run: bool,
) -> Invocation:
    """``run --stale``: the unsynced analyses and tracks, as Dagster's resolver says."""
    from klio_assets.orchestration.staleness import run_stale  # noqa: PLC0415 - imports Dagster

    try:
        return run_stale(
            settings,
            catalog,
            storage,
            selection.selected if assets else [],
            tracks,
            dry_run=dry_run,
        )
    except KlioAssetsError as exc:
        fail(str(exc))


def _report(
    invocation: Invocation,
    *,
    dry_run: bool,
    as_json: bool,
    console: Console | None,
) -> NoReturn:
    """Print the outcome and exit: 1 if any track or catalog table failed in this invocation
    (tracks that failed earlier and were not tried do not count)."""
    report = RunReport.from_invocation(invocation, invocation.selected)
    render.print_run(report, dry_run=dry_run, as_json=as_json, console=console)
    sys.exit(1 if report.failures else 0)


def _start_worker_ahead(prehash: Sequence[str]) -> None:
    """Start the local worker process now, before this one imports SQLAlchemy and Dagster
    and plans the run (~1 s on one core): it imports Beam meanwhile, then hashes the likely
    work's sources and reads their headers (:mod:`klio_assets.worker.prehash`)."""
    from klio_assets.worker import spare  # noqa: PLC0415

    spare.prestart()
    spare.prehash(prehash)


def _catalog(settings: Settings) -> TrackCatalog:
    """The deployment's catalog through SQLAlchemy (imported here: see the module's docstring)."""
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415

    return get_catalog(settings.catalog_url)


def _local_worker(settings: Settings, *, dry_run: bool) -> bool:
    """Whether this run's job runs in a local worker process (which can be started ahead)."""
    return not dry_run and not settings.dataflow and _option_runner(settings) == "FnApiRunner"


def _option_runner(settings: Settings) -> str:
    """The Beam runner ``settings.beam_options`` name (the local FnApiRunner by default)."""
    runners = [o.split("=", 1)[1] for o in settings.beam_options if o.startswith("--runner=")]
    return runners[-1] if runners else "FnApiRunner"
