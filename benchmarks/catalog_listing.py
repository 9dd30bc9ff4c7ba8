"""``klio-assets tracks`` on a large catalog: the CLI's listing, end to end.

Registers N tracks in a fresh SQLite catalog (catalog rows only, in one batch), then runs
``klio-assets tracks`` (all of it, to /dev/null), ``tracks --limit 100 --after <the last
but 100>`` (the last page) and ``tracks --failed`` (10 failures recorded), each in its own
process, and prints their wall time and peak RSS, then one JSON line.

    .venv/bin/python benchmarks/catalog_listing.py [--tracks 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from klio_assets.catalog.database import TrackCatalog


def _cli(home: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``klio-assets tracks ARGS`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env["KLIO_ASSETS_HOME"] = home
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "klio_assets.cli", "tracks", *args],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the maximum so far
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"klio-assets tracks {' '.join(args)} failed")
    return wall, usage.ru_maxrss / 1024.0


def populate(home: str, n: int) -> None:
    """Register ``n`` tracks and 10 failures (run in a process of its own: a child forked
    from a big parent would count the parent's memory in its peak RSS)."""
    catalog = TrackCatalog(f"sqlite:///{home}/catalog.db")
    ids = [f"t{i:07d}" for i in range(n)]
    catalog.register([(t, f"/music/{t}.flac") for t in ids])
    catalog.record_outcomes(
        "source_audio",
        version="1",
        run_id="bench",
        failed={t: "not audio" for t in ids[:: max(1, n // 10)][:10]},
        succeeded=[],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--populate", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(args.populate, args.tracks)
        return
    with tempfile.TemporaryDirectory(prefix="klio-listing-") as home:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--populate", home, "--tracks", str(args.tracks)],
            check=True,
        )
        register_s = time.perf_counter() - started
        figures: dict[str, object] = {"tracks": args.tracks, "register_s": round(register_s, 2)}
        last_but_100 = f"t{max(0, args.tracks - 101):07d}"
        for name, cli_args in (
            ("all", ()),
            ("last_page", ("--limit", "100", "--after", last_but_100)),
            ("failed", ("--failed",)),
            ("all_json", ("--json",)),
        ):
            wall, rss = _cli(home, *cli_args)
            figures[f"{name}_s"] = round(wall, 2)
            figures[f"{name}_peak_rss_mb"] = round(rss, 1)
            print(f"tracks {' '.join(cli_args) or '(all)'}: {wall:.2f} s, peak RSS {rss:.0f} MB")
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
