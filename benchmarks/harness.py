"""Shared pieces of the benchmarks: timing a command with its children, a clean environment,
and driving the ``klio-assets`` CLI in a fresh home."""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
CLI = [PYTHON, "-m", "klio_assets.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (the process and its children) of a command, timed from its start."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd[:6])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, cpu, done


def clean_env(home: str) -> dict[str, str]:
    """This environment without klio-assets/Dagster settings, pointed at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env["KLIO_ASSETS_HOME"] = home
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(REPO, ".cache", "numba"))
    return env


def register(files: list[str], work: str, env: dict[str, str]) -> None:
    """``klio-assets add --manifest`` the files as tracks ``t00000``, ``t00001``..."""
    manifest = os.path.join(work, "tracks.csv")
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["track_id", "path"])
        for i, path in enumerate(files):
            writer.writerow([f"t{i:05d}", path])
    add = subprocess.run([*CLI, "add", "--manifest", manifest, "--allow-root", "/"], env=env,
                         capture_output=True, text=True)
    if add.returncode:
        sys.exit(add.stderr)


def klio_run(args: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """``klio-assets run ARGS --json``: wall, CPU (with children) and its JSON."""
    wall, cpu, done = timed([*CLI, "run", *args, "--json"], env)
    return wall, cpu, json.loads(done.stdout)


def code_lines(path: str, start: str | None = None, end: str | None = None) -> int:
    """Lines of code of a Python file (or between two marker lines): no blanks, comments, docstrings."""
    import ast  # noqa: PLC0415
    import io  # noqa: PLC0415
    import tokenize  # noqa: PLC0415

    with open(path) as fh:
        text = fh.read()
    if start:
        text = text.split(start, 1)[1]
    if end:
        text = text.split(end, 1)[0]
    docstring_lines: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ) and isinstance(body[0].value.value, str):
            docstring_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER):
            continue
        code.update(range(tok.start[0], tok.end[0] + 1))
    return len(code - docstring_lines)
