"""Running the same batch again: everything is skipped, so it should cost next to nothing.

On the same real tracks as ``throughput.py`` (200 by default, see ``corpus.py``) plus
``--broken`` broken files (3 by default: a text file named ``.wav``, a truncated FLAC, a WAV
whose header announces more than the duration limit), in a fresh home: ``klio-assets run
downsampled_audio`` once (the first run; the broken files fail and are remembered), then the
same command again ``--repeats`` times (everything already materialized or failed earlier:
nothing may be launched), each timed from process start. For
comparison it also times the rerun with ``--check-dagster`` (the full check against Dagster's
records, what happens when the catalog's ledger cannot answer) and ``python -c "import
dagster"`` alone.

The package is byte-compiled first (``compileall``), as ``pip install`` does: a checkout run
with ``PYTHONDONTWRITEBYTECODE=1`` (set on the development machine) would otherwise compile
every ``klio_assets`` module from source on each start, ~0.2 CPU-s of a ~0.5 s rerun. A
rerun is mostly Python imports: one more rerun with ``-X importtime`` gives the breakdown
(``rerun_imports_s``: the packages that dominate, cumulative, and everything imported).

Usage (from the repo root)::

    python benchmarks/rerun.py [--corpus dev-corpus] [--tracks 200] [--repeats 3]

Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import struct
import subprocess
import tempfile

import numpy as np
import soundfile as sf
from corpus import DEFAULT_CORPUS, bench_files, warm
from harness import CLI, PYTHON, REPO, final_json, klio_home, klio_run, timed

TARGET = 0.01

#: Packages whose cumulative import time the breakdown reports (first import of each).
IMPORT_GROUPS = (
    "klio_assets.worker.analysis",
    "numpy",
    "pydantic",
    "klio_assets.settings",
    "pydantic_settings",
    "klio_assets.catalog.sqlite_reader",
    "klio_assets.catalog.database",
    "sqlalchemy",
    "rich",
    "click",
    "soundfile",
    "klio_assets.analyses",
)


def import_profile(env: dict[str, str]) -> dict[str, float]:
    """Seconds of imports in one all-done rerun (``-X importtime``): per group and in all."""
    done = subprocess.run(
        [*CLI, "run", "downsampled_audio", "--json"],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
    )
    groups: dict[str, float] = {}
    total = 0.0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        depth = len(line.rsplit("|", 1)[-1]) - len(line.rsplit("|", 1)[-1].lstrip())
        if depth == 1:  # a top-level import: its cumulative time is part of the total
            total += int(cumulative) / 1e6
        if name in IMPORT_GROUPS and name not in groups:
            groups[name] = round(int(cumulative) / 1e6, 3)
    return {"all_imports": round(total, 3), **groups}


def broken_files(folder: str, n: int) -> list[str]:
    """Up to three kinds of broken file, repeated to ``n``: not audio, truncated, over the limit."""
    os.makedirs(folder, exist_ok=True)
    rate = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * 10) / rate)).astype(np.float32)
    full = os.path.join(folder, "full.flac")
    sf.write(full, tone, rate)
    with open(full, "rb") as fh:
        flac = fh.read()
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            path = os.path.join(folder, f"notes{i}.wav")
            with open(path, "w") as fh:
                fh.write("not audio, just notes\n" * 50)
        elif kind == 1:
            path = os.path.join(folder, f"cut{i}.flac")
            with open(path, "wb") as fh:
                fh.write(flac[: len(flac) // 3])
        else:  # a header announcing ~74 hours of 8 kHz 8-bit mono: over the 24 h limit
            path = os.path.join(folder, f"huge{i}.wav")
            data = 0x7FFFFFF0
            header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
            header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)
            with open(path, "wb") as fh:
                fh.write(header + b"data" + struct.pack("<I", data) + bytes(8000))
        out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--broken", type=int, default=3, help="broken files among the tracks")
    args = parser.parse_args()

    files = bench_files(args.corpus, args.tracks)
    warm(files)
    compileall.compile_dir(os.path.join(REPO, "klio_assets"), quiet=1)
    work = tempfile.mkdtemp(prefix="klio-bench-")
    try:
        bad = broken_files(os.path.join(work, "broken"), args.broken)
        env = klio_home(
            os.path.join(work, "home"),
            [(f"t{i:05d}", path) for i, path in enumerate(files)]
            + [(f"broken{i}", path) for i, path in enumerate(bad)],
        )
        wall_first, cpu_first, first = klio_run(["downsampled_audio"], env)
        reruns = [klio_run(["downsampled_audio"], env) for _ in range(args.repeats)]
        checked = [
            klio_run(["downsampled_audio", "--check-dagster"], env) for _ in range(args.repeats)
        ]
        floor = [timed([PYTHON, "-c", "import dagster"], env)[0] for _ in range(args.repeats)]
        start = [timed([PYTHON, "-c", "pass"], env)[0] for _ in range(args.repeats)]
        imports = import_profile(env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rerun_wall = statistics.median(w for w, _, _ in reruns)
    checked_wall = statistics.median(w for w, _, _ in checked)
    last = reruns[-1][2]
    figures = {
        "tracks": len(files),
        "broken": args.broken,
        "first_failed": len(first["failed"]),
        "first_wall_s": round(wall_first, 2),
        "first_cpu_s": round(cpu_first, 2),
        "first_counts": first["assets"]["downsampled_audio"],
        "rerun_wall_s": round(rerun_wall, 3),
        "rerun_walls_s": [round(w, 3) for w, _, _ in reruns],
        "rerun_cpu_s": round(statistics.median(c for _, c, _ in reruns), 3),
        "rerun_counts": last["assets"]["downsampled_audio"],
        "rerun_failed_earlier": len(last.get("failed_earlier", {})),
        "rerun_failed": len(last["failed"]),
        "rerun_runs_launched": sum(len(out["runs"]) for _, _, out in reruns),
        "rerun_over_first": round(rerun_wall / wall_first, 4),
        "check_dagster_rerun_wall_s": round(checked_wall, 3),
        "check_dagster_rerun_over_first": round(checked_wall / wall_first, 4),
        "import_dagster_s": round(statistics.median(floor), 3),
        "python_start_s": round(statistics.median(start), 3),
        "rerun_imports_s": imports,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    figures["targets"] = {"rerun_over_first<=0.01": figures["rerun_over_first"] <= TARGET}
    figures["against_targets"] = {
        "rerun_over_first": {
            "measured": figures["rerun_over_first"],
            "target": f"<= {TARGET}",
            "met": figures["rerun_over_first"] <= TARGET,
        }
    }
    print(
        f"{len(files)} real tracks and {args.broken} broken files "
        f"(load average {figures['load_average_1m']})"
    )
    print(
        f"first run: {wall_first:.1f} s wall, {cpu_first:.1f} CPU-s, {first['assets']['downsampled_audio']}"
    )
    print(
        f"rerun:     {rerun_wall:.2f} s wall (median of {args.repeats}) = {rerun_wall / wall_first:.4f} x first "
        f"(target <= {TARGET}); {figures['rerun_runs_launched']} runs launched; {last['assets']['downsampled_audio']}"
    )
    print(
        f"rerun --check-dagster (full check against Dagster): {checked_wall:.2f} s = "
        f"{checked_wall / wall_first:.4f} x first; python -c 'import dagster' alone: {figures['import_dagster_s']:.2f} s; "
        f"python -c pass: {figures['python_start_s']:.3f} s"
    )
    print(
        f"rerun imports (-X importtime, cumulative s): {imports['all_imports']:.3f} in all; "
        + ", ".join(f"{k} {v:.3f}" for k, v in imports.items() if k != "all_imports")
        + " (modules loaded with importlib.import_module, such as each command's and each "
        "analysis' module, are not in -X importtime)"
    )
    final_json("rerun", figures)


if __name__ == "__main__":
    main()
