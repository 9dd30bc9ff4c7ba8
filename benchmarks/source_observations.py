"""Observing ``source_files``: what a changed file on disk costs to notice, per 1,000 tracks.

A fresh SQLite home with N tiny clips registered (catalog rows and partitions; registration
observes nothing), then :func:`klio_assets.orchestration.source_files.observe_sources` over all
of them, timed: before any run (nothing to compare with: nothing written), after their
``source_audio`` is recorded computed from the files as they are (stats and two queries per
1,000 tracks, nothing written), after touching every file (N observations written in
batches), and once more (compared with those observations, nothing written). Also the public
one-event-per-call path (``report_runless_asset_event``) for the first 200, for comparison,
and one sweep of ``source_changes_sensor`` over the unchanged catalog (ms per tick of
``KLIO_ASSETS_SOURCE_CHECKS_PER_TICK`` tracks, every analysis allowed).

    .venv/bin/python benchmarks/source_observations.py [--tracks 5000]

Prints ms per 1,000 tracks, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path[:0] = [
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    os.path.dirname(__file__),
]

import dagster as dg
from common import fresh_home, write_clips
from harness import final_json

from klio_assets.catalog.database import get_catalog
from klio_assets.orchestration.partitions import add_track_partitions
from klio_assets.orchestration.source_files import SOURCE_FILES, observe_sources
from klio_assets.worker.plan import SOURCE_ASSET
from klio_assets.worker.storage import source_stat


def sweep_cost(settings, instance, catalog, n: int) -> dict[str, float]:
    """One sweep of ``source_changes_sensor`` over the unchanged catalog, a tick per
    ``KLIO_ASSETS_SOURCE_CHECKS_PER_TICK`` tracks (every analysis allowed): ms per tick."""
    from klio_assets.analyses import load_analyses
    from klio_assets.automation.service import Automation

    automation = Automation.build(settings, load_analyses(settings.analysis_modules))
    cursor, ticks, requests = None, 0, 0
    started = time.perf_counter()
    while True:
        tick = automation.source_changes(instance, catalog, cursor=cursor)
        ticks += 1
        requests += len(tick.groups)
        cursor = tick.cursor
        if len(tick.checked) < settings.source_checks_per_tick:
            break
    elapsed = time.perf_counter() - started
    return {
        "sweep_ticks": ticks,
        "sweep_ms_per_tick": round(1000 * elapsed / ticks, 1),
        "sweep_ms_per_1000": round(1000 * elapsed / n * 1000, 1),
        "sweep_requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=5000)
    args = parser.parse_args()
    n = args.tracks
    with tempfile.TemporaryDirectory() as work:
        settings = fresh_home("sqlite", work)
        os.environ["DAGSTER_HOME"] = os.environ["KLIO_ASSETS_HOME"]
        instance = dg.DagsterInstance.get()
        catalog = get_catalog(settings.catalog_url)
        paths = write_clips(os.path.join(work, "clips"), n)
        ids = [f"clip-{i:06d}" for i in range(n)]
        catalog.register(list(zip(ids, paths, strict=True)))
        add_track_partitions(instance, ids)
        figures: dict[str, float] = {}
        for label in ("never_computed", "unchanged", "all_touched", "observed_unchanged"):
            if label == "unchanged":  # as a run records source_audio computed from the files
                catalog.record_outcomes(
                    SOURCE_ASSET,
                    version="v1",
                    run_id="benchmark",
                    failed={},
                    succeeded=ids,
                    source_stats={t: source_stat(p) for t, p in zip(ids, paths, strict=True)},
                )
            if label == "all_touched":
                figures.update(sweep_cost(settings, instance, catalog, n))
                for path in paths:
                    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
            started = time.perf_counter()
            written = observe_sources(instance, catalog, ids)
            elapsed = time.perf_counter() - started
            figures[f"{label}_ms_per_1000"] = round(1000 * elapsed / n * 1000, 1)
            figures[f"{label}_written"] = len(written)
        started = time.perf_counter()
        for track_id in ids[:200]:
            instance.report_runless_asset_event(
                dg.AssetObservation(SOURCE_FILES, partition=track_id, tags={"x": "1"})
            )
        figures["public_per_event_ms_per_1000"] = round(
            1000 * (time.perf_counter() - started) / 200 * 1000, 1
        )
    for key, value in figures.items():
        print(f"{key}: {value}")
    final_json("source_observations", {"tracks": n, **figures})


if __name__ == "__main__":
    main()
