"""``run --stale``'s check: Dagster's resolver for every partition, against the bulk pre-filter.

A fresh SQLite home with N tiny clips, ``source_audio``, ``downsampled_audio`` and ``loudness``
materialized for all of them (one run), then the stale status of those three analyses for
every track, timed: (a) Dagster's resolver asked about every partition (what ``run --stale``
did before), (b) :func:`klio_assets.orchestration.staleness.candidate_statuses` (bulk
comparison, resolver only for candidates); once on the clean catalog and once after a
parameter change of ``downsampled_audio`` (every track a candidate for that analysis).

    .venv/bin/python benchmarks/stale_check.py [--tracks 200]

Prints figures (ms per track, all three analyses), then one JSON line.
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

from klio_assets.analyses import load_analyses
from klio_assets.catalog.database import get_catalog
from klio_assets.orchestration import launch, staleness
from klio_assets.orchestration.assets import GROUP_NAME, build_analysis_assets
from klio_assets.orchestration.dagster_internals.stale_status import stale_statuses
from klio_assets.orchestration.lineage import parents
from klio_assets.orchestration.registration import register_tracks
from klio_assets.orchestration.source_files import source_files_spec
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage

NAMES = ["source_audio", "downsampled_audio", "loudness"]


def _measure(settings: Settings, instance: dg.DagsterInstance, ids: list[str]) -> dict[str, float]:
    analyses = load_analyses(settings.analysis_modules)
    graph = [
        source_files_spec(GROUP_NAME),
        build_analysis_assets(analyses, batch_size=settings.batch_size, params=settings.params),
    ]
    catalog = get_catalog(settings.catalog_url)
    started = time.perf_counter()
    full = stale_statuses(instance, graph, NAMES, ids)
    resolver_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = staleness.candidate_statuses(instance, catalog, graph, parents(analyses), NAMES, ids)
    bulk_s = time.perf_counter() - started
    assert fast == full, "the pre-filter disagrees with Dagster's resolver"
    return {
        "resolver_ms_per_track": round(1000 * resolver_s / len(ids), 2),
        "prefiltered_ms_per_track": round(1000 * bulk_s / len(ids), 2),
        "stale": sum(s == "STALE" for per in full.values() for s in per.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        settings = fresh_home("sqlite", work)
        os.environ["DAGSTER_HOME"] = os.environ["KLIO_ASSETS_HOME"]
        instance = dg.DagsterInstance.get()
        paths = write_clips(os.path.join(work, "clips"), args.tracks)
        ids = [f"clip-{i:06d}" for i in range(args.tracks)]
        register_tracks(
            instance, get_catalog(settings.catalog_url), list(zip(ids, paths, strict=True))
        )
        launch.execute_range(
            instance, selected=NAMES, track_ids=ids, storage=Storage(settings.storage)
        )
        clean = _measure(settings, instance, ids)
        os.environ["KLIO_ASSETS_PARAMS"] = '{"downsampled_audio": {"sample_rate": 16000}}'
        changed = _measure(Settings.from_env(), instance, ids)
    for label, figures in (("clean", clean), ("param changed", changed)):
        print(
            f"{label}: resolver {figures['resolver_ms_per_track']} ms/track, pre-filtered "
            f"{figures['prefiltered_ms_per_track']} ms/track ({figures['stale']} stale partitions)"
        )
    final_json(
        "stale_check",
        {"tracks": args.tracks, "analyses": len(NAMES), "clean": clean, "param_changed": changed},
    )


if __name__ == "__main__":
    main()
