"""How the commands print: tables, progress bars, JSON (``klio-assets profile``'s report is in
:mod:`klio_assets.cli.render_profile`).

The human output and the ``--json`` objects are a contract; nothing here computes anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from klio_assets.cli.common import self_command
from klio_assets.cli.text import shown
from klio_assets.orchestration.run_report import RunReport

if TYPE_CHECKING:  # the module imports Dagster, which the all-done `run` must not
    from klio_assets.orchestration.status import StatusReport


def print_json(data: Any) -> None:
    """Print ``data`` as one JSON line on stdout (sorted keys; ``str`` for other values)."""
    click.echo(json.dumps(data, sort_keys=True, default=str))


def stderr_console(*, quiet: bool = False) -> Console:
    """The console for messages and progress: stderr, so that ``--json`` keeps stdout clean."""
    return Console(stderr=True, quiet=quiet)


def run_progress(console: Console, *, disable: bool) -> Progress:
    """The ``klio-assets run`` progress bar (tracks done over all runs)."""
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
) -> str:
    """The line ``klio-assets run`` prints before launching its runs.

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

    Returns
    -------
    str
    """
    skipped = wanted - todo
    return (
        f"{wanted} tracks, analyses {', '.join(selected)}: {todo} to run in "
        f"{runs} run(s) of at most {batch_size}"
        + (f", {skipped} already materialized" if skipped else "")
        + (
            f" (upstream missing, computed first: {', '.join(upstream_added)})"
            if upstream_added
            else ""
        )
    )


def all_done_line(tracks: int, selected: Sequence[str]) -> str:
    """The line of a ``klio-assets run`` that found everything done without Dagster."""
    return (
        f"{tracks} tracks, analyses {', '.join(selected)}: "
        "all already materialized for the current versions, nothing to run"
    )


def _cell(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "-"
    text = str(record["status"])
    if record.get("shared_from"):
        text += f" (same as {record['shared_from']})"
    if record.get("reason"):
        text += f": {record['reason'][:60]}"
    return text


def _run_tables(report: RunReport, *, dry_run: bool, console: Console) -> None:
    """The per analysis counts, and in a dry run the per track detail (first 200 tracks)."""
    statuses = report.statuses
    table = Table(title="dry run: nothing computed" if dry_run else "klio-assets run")
    table.add_column("analysis")
    for status in statuses:
        table.add_column(status, justify="right")
    for name, counts in report.rows.items():
        table.add_row(name, *(str(counts[s]) for s in statuses))
    console.print(table)
    if dry_run and report.tracks_detail:
        selected = report.invocation.selected
        detail = Table(title="per track")
        detail.add_column("track")
        for name in selected:
            detail.add_column(name)
        for track_id, per in list(report.tracks_detail.items())[:200]:
            detail.add_row(track_id, *(_cell(per.get(n)) for n in selected))
        console.print(detail)


def print_run(report: RunReport, *, dry_run: bool, as_json: bool, console: Console) -> None:
    """The outcome of ``klio-assets run``: JSON on stdout, or tables and lines on ``console``.

    Parameters
    ----------
    report : RunReport
        What the command did.
    dry_run : bool
        Title the table as a dry run and add the per track table (first 200 tracks).
    as_json : bool
        Print :meth:`RunReport.to_json` instead.
    console : rich.console.Console
        Where the human form goes (stderr).
    """
    if as_json:
        print_json(report.to_json())
        return
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
    for (name, track_id), reason in list(report.failed.items())[:20]:
        console.print(
            f"[red]failed[/red] {name} {shown(track_id, markup=True)}: {shown(reason, markup=True)}",
            highlight=False,
        )
    if len(report.failed) > 20:
        console.print(f"... and {len(report.failed) - 20} more (klio-assets status)")
    for error in report.errors:
        console.print(f"[red]error[/red] {shown(error, markup=True)}", highlight=False)
    for name, table in invocation.catalog.items():
        if table["status"] == "materialized":
            console.print(f"{name}: {shown(table.get('uri'), markup=True)}", highlight=False)
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


def print_status(state: StatusReport) -> None:
    """``klio-assets status``: one row per analysis, then the failures (20 per analysis)."""
    console = Console()
    table = Table(title=f"{state.tracks} tracks")
    for column in ("analysis", "materialized", "missing", "failed"):
        table.add_column(column, justify="left" if column == "analysis" else "right")
    for name, counts in state.assets.items():
        table.add_row(name, str(counts.materialized), str(counts.missing), str(len(counts.failed)))
    console.print(table)
    for name, counts in state.assets.items():
        for track_id, reason in list(counts.failed.items())[:20]:
            console.print(
                f"[red]failed[/red] {name} {shown(track_id, markup=True)}: "
                f"{shown(reason, markup=True)}",
                highlight=False,
            )


def print_show(info: Mapping[str, Any]) -> None:
    """``klio-assets show``: one ``key: value`` line per metadata entry."""
    for key, value in info.items():
        click.echo(f"{key}: {shown(value)}")


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
    for key in ("registers", "reasons"):
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
