"""One Dagster run = one Beam job over a range of tracks: launch, watch, report.

This is the body of the ``audio_analyses`` multi-asset: it resolves the run's tracks to their
source audio, launches one Beam pipeline for every selected analysis, follows its progress,
and reports every track as ``computed``, ``skipped`` or ``failed``:

* computed and skipped tracks are materialized with per-track metadata (batched writes);
* failed tracks are not materialized (the next backfill retries them); their reasons go to
  the catalog (``klio-assets status``), the run's log and the failure's metadata;
* the run fails after everything else is saved, when any track failed.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from klio_assets.errors import BeamJobError
from klio_assets.orchestration import reporting
from klio_assets.orchestration.partitions import keys_in_range
from klio_assets.resources.beam import BeamRunnerResource
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import Layout, PlannedAnalysis, RunPlan, planned_for
from klio_assets.worker.storage import Storage

#: Seconds between progress lines in the run's log.
PROGRESS_LOG_INTERVAL_S = 15.0


class AnalysisRunConfig(dg.Config):
    """Per-run switches of the ``audio_analyses`` asset."""

    force: bool = Field(False, description="Recompute tracks whose outputs already exist.")
    dry_run: bool = Field(
        False,
        description="Report per track and analysis what would be computed or skipped; compute "
        "and materialize nothing (Klio's ping mode).",
    )


def read_results(storage: Storage, folder: str) -> dict[str, dict[str, Any]]:
    """Per-track records of a run (read in parallel for remote roots)."""
    names = [n for n in storage.list_names(folder) if n.endswith(".json")]

    def read(name: str) -> dict[str, Any]:
        return storage.read_json(f"{folder}/{name}")

    if storage.remote and len(names) > 8:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            records = list(pool.map(read, names))
    else:
        records = [read(n) for n in names]
    return {r["track_id"]: r for r in records}


class _Progress:
    """Counts per-track result files while the Beam job runs, and logs now and then."""

    def __init__(
        self, context: dg.AssetExecutionContext, storage: Storage, folder: str, total: int
    ):
        self.context = context
        self.storage = storage
        self.folder = folder
        self.total = total
        self.done = 0
        self.last_log = time.monotonic()

    def poll(self) -> None:
        try:
            self.done = len(self.storage.list_names(self.folder))
        except Exception:  # progress is informative only; the final read reports errors
            return
        if time.monotonic() - self.last_log >= PROGRESS_LOG_INTERVAL_S:
            self.last_log = time.monotonic()
            self.context.log.info(f"progress: {self.done}/{self.total} tracks")


def run_track_ids(context: dg.AssetExecutionContext) -> list[str]:
    """The run's track IDs, in partition order, without listing every registered track."""
    try:
        key_range = context.partition_key_range
    except dg.DagsterInvariantViolationError:
        return list(context.partition_keys)
    if key_range.start == key_range.end:
        return [key_range.start]
    keys = keys_in_range(context.instance, key_range.start, key_range.end)
    return keys if keys is not None else list(context.partition_keys)


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
        Only if Dagster's batched event path is unavailable (see :mod:`klio_assets.orchestration.reporting`).

    Raises
    ------
    dg.Failure
        After reporting everything else, when some track failed or the Beam job did.
    """
    started = time.perf_counter()
    track_ids = run_track_ids(context)
    selected = [name for name in planned if dg.AssetKey(name) in context.selected_asset_keys]
    store = storage.get_storage()
    layout = Layout(store)
    plan = RunPlan(
        run_id=context.run_id,
        storage_root=store.root,
        storage_options=store.options,
        analyses=planned_for(selected, planned, graph),
        selected=selected,
        force=config.force,
        dry_run=config.dry_run,
        lanes=beam.lanes(),
    )
    track_catalog = catalog.get_catalog()
    uris = track_catalog.resolve(track_ids)
    refs = [{"track_id": t, "uri": uris[t]} for t in track_ids if t in uris]
    unregistered = [t for t in track_ids if t not in uris]
    mode = " (dry run)" if config.dry_run else " (force)" if config.force else ""
    context.log.info(
        f"{len(track_ids)} tracks, analyses {', '.join(selected)}{mode}: one Beam job on {beam.runner}"
    )

    from klio_assets.worker.pipeline import build_pipeline  # noqa: PLC0415 - imports Beam

    results_folder = layout.results_folder(context.run_id)
    beam_error: BeamJobError | None = None
    job = None
    if refs:
        job = beam.launch(
            lambda p: build_pipeline(p, plan, refs), job_name=f"klio-{context.run_id}"
        )
        context.log.info(f"Beam job {job.job_id} started")
        progress = _Progress(context, store, results_folder, len(refs))
        try:
            job.wait(poll=progress.poll, interval_s=beam.poll_interval_s)
        except BeamJobError as exc:
            beam_error = exc  # report what finished before failing the run
        except BaseException:  # the Dagster run is being terminated: stop the Beam job too
            try:
                job.cancel()
            except BeamJobError as exc:  # keep the interrupt, not the failed cancel
                context.log.error(f"could not cancel Beam job {job.job_id}: {exc}")
            raise
    results = read_results(store, results_folder)
    # The per-track files are read; removing them overlaps with writing Dagster events.
    cleanup = threading.Thread(target=store.delete_tree, args=(results_folder,), daemon=True)
    cleanup.start()
    missing_reason = (
        f"no result: the Beam job ended before this track was done ({beam_error})"
        if beam_error
        else "no result from the Beam job"
    )
    for track_id in track_ids:
        if track_id not in results:
            reason = (
                f"track {track_id!r} is not registered in the catalog (klio-assets add)"
                if track_id in unregistered
                else f"track {track_id!r}: {missing_reason}"
            )
            results[track_id] = {
                "track_id": track_id,
                "uri": uris.get(track_id, ""),
                "analyses": {name: {"status": "failed", "reason": reason} for name in selected},
            }

    summary = reporting.summarize(
        results,
        selected,
        beam_seconds=job.wall_s if job else 0.0,
        beam_cpu_seconds=job.cpu_s if job else None,
    )
    failed = {
        name: {
            t: r["analyses"][name]["reason"]
            for t, r in results.items()
            if r["analyses"].get(name, {}).get("status") == "failed"
        }
        for name in selected
    }
    if not config.dry_run:
        done = {
            name: {
                t: r["analyses"][name]
                for t in track_ids
                if (r := results[t])["analyses"].get(name, {}).get("status")
                in ("computed", "skipped")
            }
            for name in selected
        }
        mats = []
        for name in selected:
            images = graph[name].output.kind == "image" and embed_image_bytes > 0
            for t, record in done[name].items():
                metadata = reporting.track_metadata(record)
                if images:
                    metadata.update(
                        reporting.embedded_image(store, record["uri"], t, embed_image_bytes)
                    )
                mats.append(
                    dg.AssetMaterialization(
                        asset_key=name,
                        partition=t,
                        metadata=metadata,
                        tags=reporting.version_tags(planned[name].version),
                    )
                )
        yield from reporting.log_materializations(context, mats)
        for name in selected:
            track_catalog.record_outcomes(
                name,
                version=planned[name].version,
                run_id=context.run_id,
                failed=failed[name],
                succeeded=[t for t in track_ids if t not in failed[name]],
            )
            if graph[name].output.kind in reporting.FEATURE_KINDS:
                track_catalog.record_features(
                    name,
                    version=planned[name].version,
                    rows={
                        t: (rec["uri"], reporting.feature_fields(rec))
                        for t, rec in done[name].items()
                    },
                )

    summary.update(
        run_id=context.run_id,
        dry_run=config.dry_run,
        force=config.force,
        beam_job_id=job.job_id if job else None,
        beam_console_url=getattr(job, "console_url", None),
        wall_seconds=round(time.perf_counter() - started, 3),
        tracks_detail={
            t: {
                name: {
                    k: v
                    for k, v in r["analyses"][name].items()
                    if k in ("status", "reason", "shared_from", "uri")
                }
                for name in selected
                if name in r["analyses"]
            }
            for t, r in results.items()
        },
    )
    store.write_json(f"{layout.run_folder(context.run_id)}/summary.json", summary)
    cleanup.join(timeout=60)
    context.instance.add_run_tags(context.run_id, reporting.run_tags(summary))
    context.log.info("summary\n" + reporting.summary_markdown(summary))

    n_failed = sum(len(v) for v in failed.values())
    for lines, (name, reason) in enumerate(
        (n, r) for n, per in failed.items() for r in per.values()
    ):
        if lines >= reporting.MAX_FAILURE_LOG_LINES:
            context.log.warning(
                f"... and {n_failed - lines} more failed tracks (klio-assets status)"
            )
            break
        context.log.warning(f"{name}: {reason}")
    if (n_failed and not config.dry_run) or beam_error:
        tracks_failed = len({t for per in failed.values() for t in per})
        raise dg.Failure(
            description=(
                f"{tracks_failed} of {len(track_ids)} tracks failed"
                + (f"; {beam_error}" if beam_error else "")
                + "; every other track was reported"
            ),
            metadata={
                "failed_tracks": dg.MetadataValue.md(reporting.failures_markdown(failed)),
                "summary": dg.MetadataValue.md(reporting.summary_markdown(summary)),
            },
            allow_retries=False,
        )
