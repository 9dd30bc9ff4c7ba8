"""One Dagster run = one Beam job over a range of tracks: resolve, launch, collect, report.

This is the body of the ``audio_analyses`` multi-asset (:func:`run_batch`), in four steps:

1. **resolve** (:mod:`.resolve`): the run's tracks, their source audio, the plan;
2. **launch** (:class:`~klio_assets.orchestration.launcher.BeamPipesClient`): one Beam job for
   every selected analysis, cancelled if the Dagster run is interrupted;
3. **collect**: the client streams per-track results back while the job runs;
4. **report** (:mod:`.report`): each batch of tracks as it arrives (computed and skipped
   tracks materialized with per-track metadata, every outcome in the catalog), then the run
   (summary, tags, and ``dg.Failure`` when some track failed, after everything else is saved).

Failed tracks are not materialized (the next backfill retries them); their reasons go to the
catalog (``klio-assets status``), the run's log and the failure's metadata.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

import dagster as dg

from klio_assets.orchestration import reporting
from klio_assets.orchestration.launcher import BeamPipesClient, read_results
from klio_assets.orchestration.run.config import OP_NAME, AnalysisRunConfig, analysis_run_config
from klio_assets.orchestration.run.observe import INVOCATION_TAG, context_watch, watching
from klio_assets.orchestration.run.report import TrackReporter
from klio_assets.orchestration.run.resolve import RunScope, resolve, run_track_ids, scope_of
from klio_assets.resources.beam import BeamRunnerResource
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.storage import Storage

__all__ = [
    "INVOCATION_TAG",
    "OP_NAME",
    "AnalysisRunConfig",
    "RunScope",
    "TrackReporter",
    "analysis_run_config",
    "read_results",
    "run_batch",
    "run_scope",
    "run_track_ids",
    "scope_of",
    "watching",
]


def run_batch(
    context: dg.AssetExecutionContext,
    *,
    config: AnalysisRunConfig,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Analysis],
    beam: BeamRunnerResource,
    storage: StorageResource,
    catalog: CatalogResource,
    embed_image_bytes: int = reporting.DEFAULT_EMBED_IMAGE_BYTES,
) -> Iterator[dg.AssetMaterialization]:
    """Run the selected analyses over the run's tracks in one Beam job, and report.

    Image outputs up to ``embed_image_bytes`` are embedded in their track's metadata (the
    Dagster UI shows them); larger ones, or all with 0, are linked by URI only.

    Yields
    ------
    dg.AssetMaterialization
        Only if Dagster's batched event path is unavailable (see
        :mod:`klio_assets.orchestration.reporting`).

    Raises
    ------
    dg.Failure
        After reporting everything else, when some track failed or the Beam job did.
    """
    started = time.perf_counter()
    store: Storage = storage.get_storage()
    track_catalog = catalog.get_catalog()
    scope = resolve(
        context,
        config=config,
        planned=planned,
        graph=graph,
        beam=beam,
        store=store,
        catalog=track_catalog,
    )
    reporter = TrackReporter(
        context,
        scope,
        planned=planned,
        graph=graph,
        store=store,
        catalog=track_catalog,
        watch=context_watch(context),
        embed_image_bytes=embed_image_bytes,
    )
    yield from run_scope(context, scope, reporter, beam, store, started=started, force=config.force)


def run_scope(
    context: dg.AssetExecutionContext,
    scope: RunScope,
    reporter: TrackReporter,
    beam: BeamRunnerResource,
    store: Storage,
    *,
    started: float,
    force: bool,
    fail_on_tracks: bool = True,
) -> Iterator[dg.AssetMaterialization]:
    """Launch ``scope``'s Beam job, hand its results to ``reporter`` as they arrive, finish.

    Yields what the reporter leaves to the caller (see :func:`run_batch`).
    """
    client = BeamPipesClient(beam, store)
    # Closing the stream (an interrupt, or an error while reporting) cancels the Beam job.
    with contextlib.closing(client.run(context, scope.plan, scope.tracks)) as stream:
        for results in stream:
            yield from reporter.add(results)
    yield from reporter.finish(client, started=started, force=force, fail_on_tracks=fail_on_tracks)
