"""``catalog_ranges``: catalog backfills as ranged Beam jobs, one materialization per range.

A code-version bump over millions of tracks cannot go through Dagster's per-track partitions
(the window holds ~50k; each per-track event costs ~2.6 KB and ~0.6 ms). Tracks outside the
window with work to do run instead as *ranges* of the catalog: a partition of this asset names
a span of registration sequence numbers (``0000000001-0000005000``), and its materialization

1. reads, per analysis, the tracks of the span that need it from the catalog
   (:func:`klio_assets.catalog.work.needs_in_range`; tracks in the window are left to their
   per-track runs),
2. runs them in one Beam job, every analysis needed in the same pass (the same worker,
   launcher and reporting as per-track runs),
3. records every track's outcome in the catalog (ledger, failures and their memory,
   features), and Dagster gets **one** materialization of the range: the analyses and their
   versions, the span, the counts and the failures.

``klio-assets show``, ``status`` and ``tracks`` answer for these tracks from the catalog.
A broken track is recorded failed (and retried by the window when its failure allows it): it
never fails its range; a Beam job that dies fails the run.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from klio_assets.catalog.work import needs_in_range, seq_range
from klio_assets.errors import ParameterError
from klio_assets.orchestration import reporting
from klio_assets.orchestration.run import TrackReporter, run_scope, scope_of
from klio_assets.orchestration.run.observe import context_watch
from klio_assets.orchestration.window import in_window
from klio_assets.resources.beam import BeamRunnerResource
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.records import Status

#: The asset, its partitions definition and the job running it.
CATALOG_RANGES = "catalog_ranges"
CATALOG_RANGES_JOB = "catalog_ranges_job"
ranges_partitions = dg.DynamicPartitionsDefinition(name=CATALOG_RANGES)
_KEY = re.compile(r"^(\d{10})-(\d{10})$")


def range_key(first_seq: int, last_seq: int) -> str:
    """The partition key of the span ``first_seq``..``last_seq`` (sorts in catalog order)."""
    return f"{first_seq:010d}-{last_seq:010d}"


def parse_range_key(key: str) -> tuple[int, int]:
    """``(first_seq, last_seq)`` of a range key.

    Raises
    ------
    ParameterError
        Not a range key (keys come from the UI too: nothing else is accepted).
    """
    match = _KEY.match(key)
    if not match or int(match[1]) > int(match[2]):
        raise ParameterError(
            f"{key!r} is not a catalog range (FIRST-LAST, ten digits each, FIRST <= LAST)"
        )
    return int(match[1]), int(match[2])


class CatalogRangeConfig(dg.Config):
    """Per-run switches of a ``catalog_ranges`` materialization."""

    analyses: list[str] = Field(
        default_factory=list,
        description="Analyses to bring up to date over the range (with what they read); empty: "
        "every analysis the automation runs.",
    )
    dry_run: bool = Field(
        False, description="Report what would be computed or skipped; record nothing."
    )


def build_catalog_ranges_asset(
    analyses: Sequence[Analysis],
    planned: Mapping[str, PlannedAnalysis],
    *,
    selected: Sequence[str],
) -> dg.AssetsDefinition:
    """The ``catalog_ranges`` asset over ``analyses`` (``selected``: the automation's)."""
    graph = {a.name: a for a in analyses}

    @dg.asset(
        name=CATALOG_RANGES,
        partitions_def=ranges_partitions,
        group_name="catalog",
        kinds={"beam", "audio"},
        description="Catalog backfill by range: the tracks outside Dagster's window with work "
        "to do, one span of the catalog per partition, one Beam job and one materialization "
        "each (per-track outcomes in the catalog).",
    )
    def catalog_ranges(
        context: dg.AssetExecutionContext,
        config: CatalogRangeConfig,
        beam: BeamRunnerResource,
        storage: StorageResource,
        catalog: CatalogResource,
    ) -> dg.MaterializeResult:
        return run_range(
            context,
            config=config,
            planned=planned,
            graph=graph,
            selected=selected,
            beam=beam,
            storage=storage,
            catalog=catalog,
        )

    return catalog_ranges


def run_range(
    context: dg.AssetExecutionContext,
    *,
    config: CatalogRangeConfig,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Analysis],
    selected: Sequence[str],
    beam: BeamRunnerResource,
    storage: StorageResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    """Bring one catalog range up to date; its materialization's metadata says how it went.

    Raises
    ------
    ParameterError
        A bad range key or an unknown analysis.
    dg.Failure
        The Beam job failed (every track's outcome is recorded first).
    """
    started = time.perf_counter()
    first, last = parse_range_key(context.partition_key)
    asked = config.analyses or list(selected)
    unknown = sorted(set(asked) - set(planned))
    if unknown:
        raise ParameterError(f"unknown analyses {unknown}; known: {', '.join(planned)}")
    versions = {n: planned[n].version for n in planned if n in asked}
    track_catalog = catalog.get_catalog()
    store = storage.get_storage()
    needs = needs_in_range(track_catalog, versions, first_seq=first, last_seq=last)
    needing = {t for tracks in needs.values() for t in tracks}
    window = in_window(context.instance, sorted(needing))
    order = [t for _, t in seq_range(track_catalog, first, last) if t in needing]
    track_ids = [t for t in order if t not in window]
    names = [n for n in versions if any(t not in window for t in needs[n])]
    metadata: dict[str, Any] = {
        "first_seq": first,
        "last_seq": last,
        "first_track": track_ids[0] if track_ids else "",
        "last_track": track_ids[-1] if track_ids else "",
        "versions": dg.MetadataValue.json(versions),
        "tracks": len(track_ids),
        "left_to_the_window": len(window),
        "dry_run": config.dry_run,
    }
    if not track_ids:
        context.log.info(f"range {first}-{last}: nothing to do")
        metadata.update(failed=0, counts=dg.MetadataValue.json({}))
        return dg.MaterializeResult(metadata=metadata)
    scope = scope_of(
        context,
        track_ids=track_ids,
        selected=names,
        planned=planned,
        graph=graph,
        beam=beam,
        store=store,
        catalog=track_catalog,
        force=False,
        dry_run=config.dry_run,
    )
    context.log.info(
        f"range {first}-{last}: {len(track_ids)} tracks, analyses {', '.join(names)}: "
        f"one Beam job on {beam.runner}"
    )
    reporter = TrackReporter(
        context,
        scope,
        planned=planned,
        graph=graph,
        store=store,
        catalog=track_catalog,
        watch=context_watch(context),
        embed_image_bytes=0,
        events=False,
    )
    for _ in run_scope(
        context, scope, reporter, beam, store, started=started, force=False, fail_on_tracks=False
    ):
        pass  # no per-track events: nothing to yield
    failed = {
        n: {
            t: o.reason or "failed"
            for t, r in reporter.results.items()
            if (o := r.analyses.get(n)) is not None and o.status == Status.FAILED
        }
        for n in names
    }
    metadata.update(
        counts=dg.MetadataValue.json(reporter.summary.get("assets", {})),
        failed=len({t for per in failed.values() for t in per}),
        failures=dg.MetadataValue.md(reporting.failures_markdown(failed)),
        beam_seconds=reporter.summary.get("beam_seconds", 0.0),
        audio_hours=reporter.summary.get("audio_hours", 0.0),
    )
    return dg.MaterializeResult(metadata=metadata)


__all__ = [
    "CATALOG_RANGES",
    "CATALOG_RANGES_JOB",
    "CatalogRangeConfig",
    "build_catalog_ranges_asset",
    "parse_range_key",
    "range_key",
    "ranges_partitions",
    "run_range",
]
