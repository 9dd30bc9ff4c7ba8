"""How the commands print: tables, progress bars, JSON (``klio-assets profile``'s report is in
:mod:`klio_assets.cli.render_profile`).

The human output and the ``--json`` objects are a contract; nothing here computes anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from klio_assets.cli.common import self_command
from klio_assets.cli.text import shown
from klio_assets.orchestration.run_report import NAMES_SHOWN, RunReport, TrackFailure

if TYPE_CHECKING:
    # rich is imported where it prints (a `run --json` that finds everything done prints
    # no table and no bar); the status module imports Dagster, which that `run` must not.
    from rich.console import Console
    from rich.progress import Progress

    from klio_assets.orchestration.status import StatusReport


def print_json(data: Any) -> None:
    """Print ``data`` as one JSON line on stdout (sorted keys; ``str`` for other values)."""
    click.echo(json.dumps(data, sort_keys=True, default=str))


def stderr_console(*, quiet: bool = False) -> Console:
    """The console for messages and progress: stderr, so that ``--json`` keeps stdout clean."""
    from rich.console import Console  # noqa: PLC0415 - see the imports

    return Console(stderr=True, quiet=quiet)


def run_progress(console: Console, *, disable: bool) -> Progress:
    """The ``klio-assets run`` progress bar (tracks done over all runs)."""
    from rich.progress import (  # noqa: PLC0415 - see the imports
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def plan_line(
    selected: Sequence[str],
    *,
    wanted: int,
    todo: int,
    runs: int,
    batch_size: int,
    upstream_added: Sequence[str],
    failed_earlier: int = 0,
    dry_run: bool = False,
) -> str:
    """The line ``klio-assets run`` prints before launching its runs (a dry run: its plan).

    Parameters
    ----------
    selected : sequence of str
        The analyses the runs materialize (upstreams added included).
    wanted, todo, runs : int
        Tracks asked for, tracks going in a run, and runs.
    batch_size : int
        The most tracks in one run.
    upstream_added : sequence of str
        Upstream analyses added bottom-up.
    failed_earlier : int
        Tracks left out because a remembered failure holds them.
    dry_run : bool
        Say that nothing is launched.

    Returns
    -------
    str
    """
    skipped = wanted - todo - failed_earlier
    return (
        f"{wanted} tracks, analyses {', '.join(selected)}: {todo} to run in "
        f"{runs} run(s) of at most {batch_size}"
        + (f", {skipped} already materialized" if skipped > 0 else "")
        + (f", {failed_earlier} failed earlier (--retry-failed)" if failed_earlier else "")
        + (
            f" (upstream missing, computed first: {', '.join(upstream_added)})"
            if upstream_added
            else ""
        )
        + (" [dry run: nothing launched]" if dry_run else "")
    )


def all_done_line(tracks: int, selected: Sequence[str], *, failed_earlier: int = 0) -> str:
    """The line of a ``klio-assets run`` that found nothing to do without Dagster."""
    if not failed_earlier:
        return (
            f"{tracks} tracks, analyses {', '.join(selected)}: "
            "all already materialized for the current versions, nothing to run"
        )
    return (
        f"{tracks} tracks, analyses {', '.join(selected)}: {tracks - failed_earlier} already "
        f"materialized, {failed_earlier} failed earlier (not retried until their file or the "
        "analysis changes, or --retry-failed), nothing to run"
    )


#: Failed tracks listed by ``run`` and ``status`` before the rest are counted.
FAILED_TRACKS_SHOWN = 20


def print_failed_tracks(
    failures: Sequence[TrackFailure], *, console: Console, limit: int = FAILED_TRACKS_SHOWN
) -> None:
    """One line per failed track, its analyses grouped; the tracks past ``limit`` counted,
    with the command that lists them all."""
    for failure in failures[:limit]:
        label = "failed earlier" if failure.earlier else "failed"
        console.print(
            f"[red]{label}[/red] {shown(failure.track_id, markup=True)}  "
            f"{shown(failure.reason, markup=True)} ({failure.names()})",
            highlight=False,
        )
    hidden = len(failures) - limit
    if hidden > 0:
        console.print(
            f"... {hidden} more failed track{'s' if hidden > 1 else ''} not shown: "
            f"{self_command()} status --failed lists them all",
            highlight=False,
        )


def _plan_lines(report: RunReport, *, console: Console, limit: int = FAILED_TRACKS_SHOWN) -> None:
    """A dry run's tracks to compute, one short line each (readable at 80 columns)."""
    per_track: dict[str, list[str]] = {}
    for name, todo in report.invocation.would_compute.items():
        for track_id in todo:
            per_track.setdefault(track_id, []).append(name)
    for track_id, names in list(per_track.items())[:limit]:
        more = len(names) - NAMES_SHOWN
        console.print(
            f"would compute {shown(track_id, markup=True)}  "
            + ", ".join(names[:NAMES_SHOWN])
            + (f", +{more}" if more > 0 else ""),
            highlight=False,
        )
    hidden = len(per_track) - limit
    if hidden > 0:
        console.print(f"... and {hidden} more tracks to compute (--json lists them)")


def _run_tables(report: RunReport, *, dry_run: bool, console: Console) -> None:
    """The per analysis counts, and in a dry run the tracks it would compute."""
    from rich.table import Table  # noqa: PLC0415 - see the imports

    statuses = report.statuses
    table = Table(title="dry run: nothing computed" if dry_run else "klio-assets run")
    table.add_column("analysis")
    for status in statuses:
        table.add_column(status.replace("_", " "), justify="right")
    for name, counts in report.rows.items():
        table.add_row(name, *(str(counts[s]) for s in statuses))
    console.print(table)
    if dry_run:
        _plan_lines(report, console=console)


def print_run(
    report: RunReport, *, dry_run: bool, as_json: bool, console: Console | None = None
) -> None:
    """The outcome of ``klio-assets run``: JSON on stdout, or tables and lines on ``console``.

    Parameters
    ----------
    report : RunReport
        What the command did.
    dry_run : bool
        Title the table as a dry run and add the per track table (first 200 tracks).
    as_json : bool
        Print :meth:`RunReport.to_json` instead.
    console : rich.console.Console, optional
        Where the human form goes (default: a new :func:`stderr_console`).
    """
    if as_json:
        print_json(report.to_json())
        return
    console = console or stderr_console()
    _run_tables(report, dry_run=dry_run, console=console)
    invocation = report.invocation
    rate = (
        f", {report.computed_hours * 3600 / report.beam_seconds:.0f}x realtime"
        if report.beam_seconds and report.computed_hours
        else ""
    )
    console.print(
        f"{report.audio_hours:.3f} h of audio in {len(invocation.runs)} run(s), "
        f"{report.computed_hours:.3f} h computed{rate}; {invocation.wall_seconds:.1f} s in all"
    )
    back = report.back_in_window_json()
    if back:
        synced = (
            f"; {', '.join(back['analyses'])} (done per the catalog) recorded again, skipped"
            if back["analyses"]
            else ""
        )
        console.print(f"{len(back['tracks'])} track(s) back in Dagster's window{synced}")
    print_failed_tracks(report.failed_tracks, console=console)
    for error in report.errors:
        console.print(f"[red]error[/red] {shown(error, markup=True)}", highlight=False)
    for name, table in invocation.catalog.items():
        if table["status"] == "materialized":
            unchanged = " (up to date: nothing new to take)" if table.get("unchanged") else ""
            console.print(
                f"{name}: {shown(table.get('uri'), markup=True)}{unchanged}", highlight=False
            )
        else:
            console.print(
                f"[red]failed[/red] {name}: {shown(table.get('reason'), markup=True)}",
                highlight=False,
            )
    if invocation.runs:
        console.print(
            "runs: "
            + ", ".join(r.run_id for r in invocation.runs)
            + f" (see them in {self_command()} dev)"
        )


def print_status(state: StatusReport, *, failed_only: bool = False) -> None:
    """``klio-assets status``: one row per analysis, then one line per failed track (the
    first :data:`FAILED_TRACKS_SHOWN`; all of them with ``failed_only``, without the table)."""
    from rich.console import Console  # noqa: PLC0415 - see the imports
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    failures = state.failed_tracks()
    if failed_only:
        console.print(f"{len(failures)} failed tracks of {state.tracks}")
        print_failed_tracks(failures, console=console, limit=len(failures))
        return
    table = Table(title=f"{state.tracks} tracks")
    for column in ("analysis", "materialized", "missing", "failed"):
        table.add_column(column, justify="left" if column == "analysis" else "right")
    for name, counts in state.assets.items():
        table.add_row(name, str(counts.materialized), str(counts.missing), str(len(counts.failed)))
    console.print(table)
    print_failed_tracks(failures, console=console)


def print_show(info: Mapping[str, Any]) -> None:
    """``klio-assets show``: one ``key: value`` line per metadata entry."""
    for key, value in info.items():
        click.echo(f"{key}: {shown(value)}")


def _retention_line(window: Mapping[str, Any], *, dry_run: bool) -> str:
    """One retention tick in words (``klio-assets automation retention``)."""
    leave, runs = len(window["leave"]), len(window["runs_deleted"])
    verb = "would leave" if dry_run else "left"
    return (
        f"window {window['size']} of at most {window['max_tracks']} tracks; "
        f"{window['checked']} checked: {leave} {verb} it ({window['leave_failed']} failed for "
        f"good), kept {window['working']} with work to do, {window['young']} too recent, "
        f"{window['in_flight']} in runs; {runs} old run{'' if runs == 1 else 's'} "
        f"{'would be ' if dry_run else ''}deleted"
    )


def print_automation(mode: str, plan: Mapping[str, Any], *, dry_run: bool) -> None:
    """``klio-assets automation MODE``: what the mode registers, requests and launched.

    Parameters
    ----------
    mode : str
        The mode shown.
    plan : mapping
        :func:`klio_assets.automation.on_demand.automation_now`'s object.
    dry_run : bool
        Say that nothing changed.
    """
    click.echo(f"{mode}{' (dry run: nothing changed)' if dry_run else ''}")
    if "window" in plan:  # the retention requests no runs: what it takes out, in words
        click.echo("  " + _retention_line(plan["window"], dry_run=dry_run))
        return
    for key in ("registers", "reasons", "checks", "ranges", "entering"):
        if key in plan:
            click.echo(f"  {key}: {json.dumps(plan[key], default=str)[:2000]}")
    for request in plan["requests"]:
        click.echo(
            f"  run {request['start']}..{request['end']} ({request['tracks']} tracks): "
            + ", ".join(
                f"{n} compute {request['would_compute'][n]} skip {request['would_skip'][n]}"
                for n in request["selected"]
            )
        )
    for run in plan.get("runs", []):
        click.echo(
            f"  launched {run['run_id']}: {'ok' if run['success'] else 'failed'} "
            f"{run['assets'] or run['error']}"
        )
    if not plan["requests"]:
        click.echo("  nothing to request")
