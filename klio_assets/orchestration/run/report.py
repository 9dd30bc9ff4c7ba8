"""Reporting a run: each batch of tracks as its results arrive, then the run as a whole.

Per batch (:meth:`TrackReporter.add`): computed and skipped tracks are materialized with
per-track metadata and Dagster's provenance (:mod:`klio_assets.orchestration.provenance`),
asset by asset in topological order, through Dagster's batched event path
(:func:`klio_assets.orchestration.reporting.log_materializations`); failed tracks become failed
partitions with their reason (:mod:`klio_assets.orchestration.failures`); right after their
events the catalog records every track's outcome (the ledger of done outputs, failure
reasons, scalar features). So partitions turn green while the Beam job runs, and a run that
dies mid-job has already recorded what finished. A batch is reported when
:data:`FLUSH_TRACKS` tracks wait or :data:`FLUSH_INTERVAL_S` seconds have passed: per-track
bookkeeping stays batched.

At the end (:meth:`TrackReporter.finish`): tracks without a result are reported failed, the
summary goes to the run's tags and log, to ``_runs/<run_id>/summary.json`` and to an
in-process caller (:mod:`~klio_assets.orchestration.run.observe`), and the run fails with
``dg.Failure`` when some track or the Beam job failed, after everything else is saved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import remember_failures
from klio_assets.errors import BeamJobError, StorageError, one_line
from klio_assets.orchestration import failures, provenance, reporting
from klio_assets.orchestration.launcher import BeamPipesClient
from klio_assets.orchestration.lineage import parents
from klio_assets.orchestration.run.observe import RunWatch
from klio_assets.orchestration.run.resolve import RunScope
from klio_assets.orchestration.run_report import group_failures
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import Layout, PlannedAnalysis
from klio_assets.worker.records import AnalysisOutcome, Status, TrackResult
from klio_assets.worker.storage import Storage

#: Tracks waiting that make a report due at the next poll of the job (1 s by default). A
#: report costs ~13 ms of the launcher's CPU whatever its size (its Dagster transactions, the
#: inputs' latest materializations, the catalog's writes), ~0.13 ms a track at this size; a
#: fast job (hundreds of tracks a second) is still reported at every poll, so only the last
#: poll's tracks are left for after the job (one report per poll instead of one per track took
#: a 1000-track run's bookkeeping on pooled PostgreSQL connections from 0.72-0.78 to 0.28-0.34
#: ms/track, ``benchmarks/bookkeeping.py`` at 200k registered). At most
#: :data:`reporting.EVENT_BATCH_SIZE` tracks go in one Dagster event batch.
FLUSH_TRACKS = 100
#: Seconds a track's result may wait before its batch is reported: a slow job (a few tracks a
#: second) is reported every third poll, so partitions still turn green while it runs, and at
#: most 3 s of results are left for after it. Reported at every poll (0.5 s), a 1,000-track
#: ``downsampled_audio`` run's launcher used 2.91-2.95 CPU-s, at 3 s 2.01-2.09 (100 reports
#: against 33), CPU taken from the decoding lanes on a laptop.
FLUSH_INTERVAL_S = 3.0
#: Seconds between progress lines in the run's log.
PROGRESS_LOG_INTERVAL_S = 15.0
#: Outcome fields kept per track in the summary (``tracks_detail``).
_DETAIL_FIELDS = ("status", "reason", "shared_from", "uri")


class TrackReporter:
    """Reports one run's per-track results to Dagster and the catalog, batch by batch.

    Parameters
    ----------
    context : dg.AssetExecutionContext
    scope : RunScope
    planned, graph : mapping
        The planned analyses and their definitions, by name.
    store : Storage
    catalog : TrackCatalog
    watch : RunWatch
        Told the progress and, at the end, the summary.
    embed_image_bytes : int
        Largest image output embedded in a track's metadata (0: none).
    events : bool
        Log per-track Dagster events (materializations, failed partitions); False for a
        catalog range (:mod:`klio_assets.orchestration.catalog_ranges`), whose tracks are
        recorded in the catalog only.
    """

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        scope: RunScope,
        *,
        planned: Mapping[str, PlannedAnalysis],
        graph: Mapping[str, Analysis],
        store: Storage,
        catalog: TrackCatalog,
        watch: RunWatch,
        embed_image_bytes: int,
        events: bool = True,
    ):
        self.context = context
        self.scope = scope
        self.planned = planned
        self.graph = graph
        self.store = store
        self.catalog = catalog
        self.watch = watch
        self.embed_image_bytes = embed_image_bytes
        self.events = events
        self.summary: dict[str, Any] = {}
        self.results: dict[str, TrackResult] = {}
        self._pending: list[TrackResult] = []
        self._order = {t: i for i, t in enumerate(scope.track_ids)}
        self._last_flush = self._last_log = time.monotonic()
        self._parents = parents(list(graph.values()))

    @property
    def dry_run(self) -> bool:
        """Whether this run only reports what it would do."""
        return self.scope.plan.dry_run

    def add(self, results: Sequence[TrackResult]) -> list[dg.AssetMaterialization]:
        """Take the results of one poll (possibly none); report a batch when one is due.

        Returns
        -------
        list of dg.AssetMaterialization
            Those the caller must yield (only without Dagster's batched event path).
        """
        for result in results:
            self.results[result.track_id] = result
        self._pending.extend(results)
        if results:
            self.watch.progress(len(self.results))
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_log = now
            self.context.log.info(f"progress: {len(self.results)}/{len(self.scope.tracks)} tracks")
        if len(self._pending) >= FLUSH_TRACKS or now - self._last_flush >= FLUSH_INTERVAL_S:
            return self.flush()
        return []

    def flush(self) -> list[dg.AssetMaterialization]:
        """Report the waiting tracks: their materializations, then their catalog records."""
        # In partition order: the last track of a batch is each asset's latest materialization.
        batch = sorted(self._pending, key=lambda r: self._order.get(r.track_id, -1))
        self._pending = []
        self._last_flush = time.monotonic()
        if not batch or self.dry_run:
            return []
        left = self._log_events(batch) if self.events else []
        self._record_in_catalog(batch)
        return left

    def _log_events(self, batch: Sequence[TrackResult]) -> list[dg.AssetMaterialization]:
        """Log the batch's materializations asset by asset, in topological order (each one's
        provenance reads its inputs' materializations of this batch back), then its failures.

        Returns
        -------
        list of dg.AssetMaterialization
            Those the caller must yield (only without Dagster's batched event path).
        """
        inputs = provenance.InputVersions(
            self.context.instance, self._parents, [r.track_id for r in batch]
        )
        left: list[dg.AssetMaterialization] = []
        for name in self.scope.selected:
            mats = self._materializations(name, batch, inputs)
            if mats:
                left.extend(reporting.log_materializations(self.context, mats))
        failures.log_failed_tracks(self.context, self.scope.selected, batch)
        return left

    def _materializations(
        self, name: str, batch: Sequence[TrackResult], inputs: provenance.InputVersions
    ) -> list[dg.AssetMaterialization]:
        mats = []
        images = self.graph[name].output.kind == "image" and self.embed_image_bytes > 0
        version = self.planned[name].version
        for result in batch:
            outcome = result.analyses.get(name)
            if outcome is None or not outcome.status.done:
                continue
            metadata = reporting.track_metadata(outcome)
            description = None
            if images and outcome.uri:
                metadata.update(
                    reporting.embedded_image(
                        self.store, outcome.uri, result.track_id, self.embed_image_bytes
                    )
                )
                description = reporting.plot_description(metadata)
            mats.append(
                dg.AssetMaterialization(
                    asset_key=name,
                    partition=result.track_id,
                    description=description,
                    metadata=metadata,
                    tags=provenance.provenance_tags(
                        name,
                        code_version=version,
                        outcome=outcome,
                        result=result,
                        inputs=inputs.of(name, result.track_id),
                    ),
                )
            )
        return mats

    def _record_in_catalog(self, batch: Sequence[TrackResult]) -> None:
        for name in self.scope.selected:
            version = self.planned[name].version
            failed = _failed_reasons(batch, name)
            self.catalog.record_outcomes(
                name,
                version=version,
                run_id=self.context.run_id,
                failed=failed,
                succeeded=[r.track_id for r in batch if r.track_id not in failed],
                source_stats={r.track_id: r.source_stat for r in batch if r.source_stat},
            )
            # Remembered, so that later runs, sensors and backfills do not retry a broken
            # file (transient failures: a bounded number of times).
            remember_failures(
                self.catalog,
                name,
                version=version,
                run_id=self.context.run_id,
                results=[r for r in batch if r.track_id not in self.scope.unregistered],
            )
            if self.graph[name].output.kind in reporting.FEATURE_KINDS:
                rows = {
                    r.track_id: (o.uri or "", reporting.feature_fields(o))
                    for r in batch
                    if (o := r.analyses.get(name)) is not None and o.status.done
                }
                self.catalog.record_features(name, version=version, rows=rows)

    def finish(
        self,
        client: BeamPipesClient,
        *,
        started: float,
        force: bool,
        fail_on_tracks: bool = True,
    ) -> Iterator[dg.AssetMaterialization]:
        """Report the tracks without a result as failed, then the run; fail it if needed.

        The summary is kept in :attr:`summary`.

        Parameters
        ----------
        fail_on_tracks : bool
            Fail the run when some track failed (else only when the Beam job did).

        Raises
        ------
        dg.Failure
            After reporting everything else, when some track failed (``fail_on_tracks``) or
            the Beam job did.
        """
        yield from self.add(self._missing(client.error))
        yield from self.flush()
        layout = Layout(self.store)
        results_folder = layout.results_folder(self.context.run_id)
        # The per-track files are read; removing them overlaps with writing the summary.
        cleanup = threading.Thread(
            target=self.store.delete_tree, args=(results_folder,), daemon=True
        )
        cleanup.start()
        summary = self.summary = self._summary(client, started=started, force=force)
        self.watch.summary = summary
        try:
            self.store.write_json(f"{layout.run_folder(self.context.run_id)}/summary.json", summary)
        except StorageError as exc:  # the run's scratch copy; the run's tags and log have it
            self.context.log.warning(f"run summary not written: {one_line(exc)}")
        cleanup.join(timeout=60)
        self.context.instance.add_run_tags(self.context.run_id, reporting.run_tags(summary))
        self.context.log.info("summary\n" + reporting.summary_markdown(summary))
        failed = {n: _failed_reasons(self.results.values(), n) for n in self.scope.selected}
        _log_failures(self.context, failed)
        n_failed = sum(len(v) for v in failed.values())
        if (n_failed and not self.dry_run and fail_on_tracks) or client.error:
            raise _run_failure(failed, summary, client.error, len(self.scope.track_ids))

    def _missing(self, beam_error: BeamJobError | None) -> list[TrackResult]:
        """Failed results for the run's tracks that have none."""
        uris = self.scope.uris
        # The job's error is the run's (one line, in the run's failure and the CLI's output):
        # it names whatever the job was doing, often another track, so it is not repeated here.
        missing = (
            "no result: the run's Beam job failed before this track was done"
            if beam_error
            else "no result from the Beam job"
        )
        out = []
        for track_id in self.scope.track_ids:
            if track_id in self.results:
                continue
            reason = (
                f"track {track_id!r} is not registered in the catalog (klio-assets add)"
                if track_id in self.scope.unregistered
                else f"track {track_id!r}: {missing}"
            )
            out.append(
                TrackResult(
                    track_id=track_id,
                    uri=uris.get(track_id, ""),
                    # A lost worker or job says nothing about the file: transient.
                    analyses={
                        n: AnalysisOutcome.failed(
                            reason, permanent=track_id in self.scope.unregistered
                        )
                        for n in self.scope.selected
                    },
                )
            )
        return out

    def _summary(self, client: BeamPipesClient, *, started: float, force: bool) -> dict[str, Any]:
        job = client.job
        summary = reporting.summarize(
            self.results,
            self.scope.selected,
            beam_seconds=job.wall_s if job else 0.0,
            beam_cpu_seconds=job.cpu_s if job else None,
        )
        summary.update(
            run_id=self.context.run_id,
            dry_run=self.dry_run,
            force=force,
            beam_job_id=job.job_id if job else None,
            beam_console_url=job.console_url if job else None,
            error=one_line(client.error) if client.error else None,
            wall_seconds=round(time.perf_counter() - started, 3),
            tracks_detail={
                t: {
                    name: {k: v for k, v in o.to_dict().items() if k in _DETAIL_FIELDS}
                    for name in self.scope.selected
                    if (o := r.analyses.get(name)) is not None
                }
                for t, r in self.results.items()
            },
        )
        return summary


def _failed_reasons(results: Iterable[TrackResult], name: str) -> dict[str, str]:
    """Track ID to the reason analysis ``name`` failed, for the failed ones of ``results``."""
    return {
        r.track_id: o.reason or "failed"
        for r in results
        if (o := r.analyses.get(name)) is not None and o.status == Status.FAILED
    }


def _log_failures(
    context: dg.AssetExecutionContext, failed: Mapping[str, Mapping[str, str]]
) -> None:
    """One warning per failed track (its analyses grouped), up to ``MAX_FAILURE_LOG_LINES``
    tracks; the rest counted."""
    tracks = group_failures(failed)
    for failure in tracks[: reporting.MAX_FAILURE_LOG_LINES]:
        context.log.warning(f"{failure.track_id}  {failure.reason} ({failure.names()})")
    hidden = len(tracks) - reporting.MAX_FAILURE_LOG_LINES
    if hidden > 0:
        context.log.warning(
            f"... {hidden} more failed tracks not shown (klio-assets status --failed)"
        )


def _run_failure(
    failed: Mapping[str, Mapping[str, str]],
    summary: Mapping[str, Any],
    beam_error: BeamJobError | None,
    n_tracks: int,
) -> dg.Failure:
    tracks_failed = len({t for per in failed.values() for t in per})
    return dg.Failure(
        description=(
            f"{tracks_failed} of {n_tracks} tracks failed"
            + (f"; {beam_error}" if beam_error else "")
            + "; every other track was reported"
        ),
        metadata={
            "failed_tracks": dg.MetadataValue.md(reporting.failures_markdown(failed)),
            "summary": dg.MetadataValue.md(reporting.summary_markdown(summary)),
        },
        allow_retries=False,
    )
