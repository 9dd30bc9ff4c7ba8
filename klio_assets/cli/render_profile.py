"""The human form of ``klio-assets profile``: the figures per track, the cProfile and
line_profiler tables (the ``--json`` form is :meth:`klio_assets.profiling.ProfileReport.to_json`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

_TRACK_COLUMNS = (
    "track",
    "audio s",
    "wall s",
    "CPU s",
    "x RT",
    "peak MB",
    "fn s",
    "fn CPU",
    "up s",
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short_path(path: str) -> str:
    """A source path relative to the working folder, or to its site-packages."""
    marker = f"site-packages{os.sep}"
    if marker in path:
        return path.split(marker, 1)[1]
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def print_profile(data: Mapping[str, Any]) -> None:
    """Print a profile report on stdout.

    Parameters
    ----------
    data : mapping
        :meth:`klio_assets.profiling.ProfileReport.to_json`'s object.
    """
    out = Console()
    _print_heading(out, data)
    _print_tracks(out, data)
    if data["profile"]:
        _print_functions(out, data["profile"])
    if data["output"]:
        out.print(
            f"pstats written to {data['output']} (snakeviz {data['output']})", highlight=False
        )
    if data["lines"]:
        for function in data["lines"]["functions"]:
            _print_lines(out, function, tracks=data["lines"]["tracks"])


def _print_heading(out: Console, data: Mapping[str, Any]) -> None:
    """What was profiled, the upstreams computed first, the warm-up."""
    where = f"kept in {data['storage_root']}" if data["kept"] else "deleted"
    out.print(
        f"[bold]{data['asset']}[/bold] v{data['version']} on {len(data['tracks'])} track(s), "
        f"in this process (temporary outputs {where})",
        highlight=False,
    )
    if data["upstream"]:
        out.print(
            f"upstream computed first, per track (column 'up s'): {', '.join(data['upstream'])}",
            highlight=False,
        )
    warm = data["warmup"]
    if not warm:
        out.print("no warm-up: the first track includes first-use costs (imports, numba)")
        return
    failed = f" [red]failed[/red]: {escape(warm['reason'])}" if warm["status"] != "computed" else ""
    out.print(
        f"warm-up (imports, numba; not in the figures below): {warm['wall_s']:.2f} s, "
        f"{warm['cpu_s']:.2f} CPU-s" + failed,
        highlight=False,
    )


def _track_row(track_id: str, r: Mapping[str, Any]) -> list[str]:
    upstream = _seconds(sum(u["wall_s"] for u in r["upstream"].values())) if r["upstream"] else "-"
    if r["status"] != "computed":
        return [track_id, "[red]failed[/red]", *([""] * 6), upstream]
    return [
        track_id,
        f"{r['audio_s']:.1f}" if r["audio_s"] is not None else "-",
        _seconds(r["wall_s"]),
        _seconds(r["cpu_s"]),
        f"{r['x_realtime']:.0f}" if r["x_realtime"] else "-",
        f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "-",
        _seconds(r["function_wall_s"]),
        _seconds(r["function_cpu_s"]),
        upstream,
    ]


def _print_tracks(out: Console, data: Mapping[str, Any]) -> None:
    """The figures per track, the totals, the failures."""
    runs = f"median of {data['repeat']} runs, " if data["repeat"] > 1 else ""
    table = Table(
        title=f"per track ({runs}peak memory: {data['memory_method']})", box=box.SIMPLE_HEAD
    )
    for column in _TRACK_COLUMNS:
        table.add_column(column, justify="left" if column == "track" else "right")
    for track_id, r in data["tracks"].items():
        table.add_row(*_track_row(track_id, r))
    totals = data["totals"]
    out.print(table)
    out.print(
        "fn: inside the analysis function (decoding and IO excluded); the rest is the framework's",
        style="dim",
    )
    if totals["computed"]:
        out.print(
            f"{totals['computed']} computed: {totals['audio_s']:.1f} s of audio in "
            f"{totals['wall_s']:.2f} s ({totals['x_realtime']}x realtime), "
            f"{totals['cpu_s']:.2f} CPU-s ({totals['x_realtime_cpu']}x per CPU)",
            highlight=False,
        )
    for track_id, r in data["tracks"].items():
        if r["status"] != "computed":
            out.print(f"[red]failed[/red] {track_id}: {escape(r['reason'])}", highlight=False)


def _print_functions(out: Console, p: Mapping[str, Any]) -> None:
    """The cProfile table: the top functions by cumulative time."""
    table = Table(
        title=f"{p['function']}: {p['function_s']:.3f} s over {p['tracks']} track(s); "
        f"top {len(p['functions'])} by cumulative time (cProfile, wall)",
        box=box.SIMPLE_HEAD,
    )
    for column in ("calls", "own s", "cum s", "%"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("function", overflow="fold")
    for f in p["functions"]:
        share = 100.0 * f["cumulative_s"] / p["function_s"] if p["function_s"] else 0.0
        calls = (
            str(f["calls"])
            if f["calls"] == f["primitive_calls"]
            else f"{f['calls']}/{f['primitive_calls']}"
        )
        place = (
            f["function"]
            if f["file"] == "~"
            else f"{f['function']} {os.path.basename(f['file'])}:{f['line']}"
        )
        table.add_row(
            calls, f"{f['own_s']:.4f}", f"{f['cumulative_s']:.4f}", f"{share:.0f}", Text(place)
        )
    out.print(table)


def _print_lines(out: Console, f: Mapping[str, Any], *, tracks: int) -> None:
    """The line_profiler table of one function."""
    table = Table(
        title=f"{f['function']} ({escape(_short_path(f['file']))}:{f['line']}): "
        f"{f['total_s']:.4f} s (line_profiler, {tracks} track(s))",
        box=box.SIMPLE_HEAD,
    )
    for column in ("line", "hits", "time s", "%"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("code", no_wrap=True, overflow="ellipsis", max_width=max(20, out.width - 36))
    for line in f["lines"]:
        table.add_row(
            str(line["line"]),
            str(line["hits"]),
            f"{line['time_s']:.4f}",
            f"{line['percent']:.1f}",
            Text(line["code"]),
        )
    out.print(table)
