"""The profile tables of ``klio-assets profile``: cProfile's top functions and line_profiler's lines."""

from __future__ import annotations

import linecache
import pstats
from collections.abc import Callable
from typing import Any


def top_functions(
    stats: pstats.Stats, fn: Callable[..., Any], *, top: int, tracks: int
) -> dict[str, Any]:
    code = fn.__code__
    rows = []
    function_s = 0.0
    for (filename, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "<method 'disable' of '_lsprof.Profiler' objects>":
            continue  # the profiler switching itself off
        if filename == code.co_filename and line == code.co_firstlineno and name == code.co_name:
            function_s = ct
        rows.append(
            {
                "function": name,
                "file": filename,
                "line": line,
                "calls": nc,
                "primitive_calls": cc,
                "own_s": round(tt, 6),
                "cumulative_s": round(ct, 6),
            }
        )
    rows.sort(key=lambda r: (-r["cumulative_s"], -r["own_s"]))
    return {
        "profiler": "cProfile",
        "clock": "wall",
        "sort": "cumulative",
        "tracks": tracks,
        "function": f"{fn.__module__}.{fn.__qualname__}",
        "function_s": round(function_s, 6),
        "functions": rows[:top],
    }


def line_table(stats: Any, *, tracks: int) -> dict[str, Any]:
    functions = []
    for (filename, first_line, name), timings in stats.timings.items():
        if not timings:
            continue
        total = sum(t for _, _, t in timings) * stats.unit
        lines = [
            {
                "line": lineno,
                "hits": hits,
                "time_s": round(t * stats.unit, 6),
                "percent": round(100.0 * t * stats.unit / total, 1) if total > 0 else 0.0,
                "code": linecache.getline(filename, lineno).rstrip(),
            }
            for lineno, hits, t in sorted(timings)
        ]
        functions.append(
            {
                "function": name,
                "file": filename,
                "line": first_line,
                "total_s": round(total, 6),
                "lines": lines,
            }
        )
    functions.sort(key=lambda f: -f["total_s"])
    return {"profiler": "line_profiler", "clock": "wall", "tracks": tracks, "functions": functions}
