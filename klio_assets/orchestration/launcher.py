"""Launch a run's Beam job and stream its per-track results back while it runs.

Shaped like dagster-gcp's ``PipesDataprocJobClient``: :meth:`BeamPipesClient.run` submits the
job with labels (Dagster run ID, assets, batch size), polls it, hands each batch of
:class:`~klio_assets.worker.records.TrackResult` to the caller *as the workers write them*,
cancels the Beam job when the Dagster run is interrupted, and raises an error carrying the
job ID and its final state.

There is one results channel and one poller: the workers write one JSON file per track under
the run's results folder in storage (which works on Dataflow too), and
:class:`ResultsChannel` reads each file once, while the job runs and once more after it ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from klio_assets.errors import BeamJobError, StorageError, one_line
from klio_assets.resources.beam import BeamJob, BeamRunnerResource, run_labels
from klio_assets.resources.worker_process import WorkerProcessJob
from klio_assets.worker.plan import Layout, RunPlan
from klio_assets.worker.records import AnalysisOutcome, Status, TrackResult
from klio_assets.worker.storage import Storage

#: Remote storage: result files read in parallel by this many threads.
_READ_THREADS = 32


@dataclass(frozen=True)
class TrackRef:
    """A track of a run and its source audio (what the Beam job is given)."""

    track_id: str
    uri: str


class ResultsChannel:
    """The per-track result files of one run, each read once.

    Parameters
    ----------
    storage : Storage
    folder : str
        The run's results folder (:meth:`Layout.results_folder`).
    """

    def __init__(self, storage: Storage, folder: str):
        self.storage = storage
        self.folder = folder
        self._seen: set[str] = set()

    def poll(self) -> list[TrackResult]:
        """The results written since the last poll (read in parallel for remote roots).

        Raises
        ------
        StorageError
            The folder or a file cannot be read.
        """
        names = [
            n
            for n in self.storage.list_names(self.folder)
            if n.endswith(".json") and n not in self._seen
        ]

        def read(name: str) -> TrackResult:
            return TrackResult.from_dict(self.storage.read_json(f"{self.folder}/{name}"))

        if self.storage.remote and len(names) > 8:
            with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
                results = list(pool.map(read, names))
        else:
            results = [read(n) for n in names]
        self._seen.update(names)
        return results


def read_results(storage: Storage, folder: str) -> dict[str, TrackResult]:
    """Every per-track result in ``folder``, by track ID (a finished run's, read at once)."""
    return {r.track_id: r for r in ResultsChannel(storage, folder).poll()}


class BeamPipesClient:
    """Runs a :class:`RunPlan` as one Beam job and streams its per-track results back.

    Parameters
    ----------
    beam : BeamRunnerResource
        Which runner, and how often the job is polled (``poll_interval_s``).
    storage : Storage
        The storage root the workers write to.

    Attributes
    ----------
    job : BeamJob or None
        The submitted job (None before :meth:`run` submits, or with no tracks).
    error : BeamJobError or None
        How the job failed, once :meth:`run` is exhausted (the results it streamed stand).
    """

    def __init__(self, beam: BeamRunnerResource, storage: Storage):
        self.beam = beam
        self.storage = storage
        self.job: BeamJob | None = None
        self.error: BeamJobError | None = None
        self._relaunched: set[str] = set()
        self._since: float | None = None

    def run(
        self, context: dg.AssetExecutionContext, plan: RunPlan, tracks: Sequence[TrackRef]
    ) -> Generator[list[TrackResult], None, None]:
        """Submit the job, then yield batches of results as the workers write them.

        Close the iterator (or let an interrupt reach it) to cancel the Beam job. A failed
        job does not raise here: the results it left are yielded and :attr:`error` is set.

        A local job runs in a child process (:class:`WorkerProcessJob`): when that process
        dies (a segfault in a native decoder, the OOM killer), the tracks it had in flight
        fail with that reason and a new child takes the tracks without a result (after a
        death with several tracks in flight, those first, one at a time, so that the next
        death names its track; then the rest in parallel), at most :data:`MAX_RELAUNCHES`
        times.

        Yields
        ------
        list of TrackResult
            The results found at one poll (possibly none: the caller's chance to report
            what waits).
        """
        if not tracks:
            return
        layout = Layout(self.storage)
        self.error = self._check_bookkeeping(plan, layout)
        if self.error is not None:
            return
        channel = ResultsChannel(self.storage, layout.results_folder(plan.run_id))
        seen: set[str] = set()
        # Tracks in flight when a worker died, given to the next one: an output the dead
        # worker committed before it could report it was computed by this run, not skipped.
        self._relaunched = set()
        self._since = self.storage.modified(layout.plan_uri(plan.run_id))
        # Suspects: tracks in flight when a worker died with several at once. They run next,
        # one at a time (so that a death names its track), then the rest in parallel again.
        pending, suspects, deaths = list(tracks), set[str](), 0
        while pending:
            serial = bool(suspects)
            batch = [t for t in pending if t.track_id in suspects] if serial else pending
            job = yield from self._attempt(context, plan, batch, channel, seen, serial=serial)
            if not isinstance(job, WorkerProcessJob):
                return
            try:
                died = job.how_it_died()
                inflight = job.inflight() - seen
            finally:
                job.cleanup()
            left = [t for t in pending if t.track_id not in seen]
            if not left or (died is None and not serial):
                return
            if died is None:  # the suspects ran without a death: back to parallel
                suspects = set()
                pending = left
                continue
            deaths += 1
            if not died.startswith("signal") or not (inflight or _progress(batch, seen)):
                # An exception left the pipeline (not a signal): the job's own bookkeeping
                # failed (storage full, read-only, unreachable); or it died before any track.
                self.error = BeamJobError(
                    f"Beam job {job.job_id} failed: the worker process {died}",
                    job_id=job.job_id,
                    state="FAILED",
                )
                return
            blamed = self._blame(context, plan, died, inflight, left, serial=serial, deaths=deaths)
            self._relaunched |= inflight - blamed
            failed = [
                _crashed(t, plan, died, deaths, self._written_since(plan, t.track_id))
                for t in left
                if t.track_id in blamed
            ]
            seen.update(r.track_id for r in failed)
            yield failed
            if not serial and len(inflight) > 1:
                suspects = set(inflight)
            pending = [t for t in left if t.track_id not in blamed]
            suspects &= {t.track_id for t in pending}

    def _attempt(
        self,
        context: dg.AssetExecutionContext,
        plan: RunPlan,
        batch: Sequence[TrackRef],
        channel: ResultsChannel,
        seen: set[str],
        *,
        serial: bool,
    ) -> Generator[list[TrackResult], None, BeamJob | WorkerProcessJob | None]:
        """Launch one job over ``batch`` and yield its results until it ends (adding their
        tracks to ``seen``); return the job, or None when it could not start (:attr:`error`
        says why)."""
        try:
            job = self.job = self._launch(context, plan, batch, serial=serial)
        except Exception as exc:  # an unknown runner, bad options: the whole job, one line
            self.error = BeamJobError(
                f"could not start the Beam job on {self.beam.runner}: {one_line(exc)}",
                state="NOT_STARTED",
            )
            return None
        # Closed explicitly: an interrupt reaching this generator cancels the job now.
        with contextlib.closing(self._follow(context, job, channel)) as follow:
            for results in follow:
                seen.update(r.track_id for r in results)
                for result in results:
                    if result.track_id in self._relaunched:
                        self._credit_dead_worker(result)
                yield results
        return job

    def _written_since(self, plan: RunPlan, track_id: str) -> list[str]:
        """The selected analyses of ``track_id`` whose output was committed during this run."""
        if self._since is None:
            return []
        layout = Layout(self.storage)
        written = []
        for name in plan.selected:
            committed = self.storage.modified(layout.output_uri(plan.analyses[name], track_id))
            if committed is not None and committed >= self._since:
                written.append(name)
        return written

    def _credit_dead_worker(self, result: TrackResult) -> None:
        """Report as computed the outputs of ``result`` that a dead worker of this run
        committed before it could report them (the next worker found them and skipped them):
        they were computed by this run. Those that existed before the run stay skipped."""
        if self._since is None:
            return
        for outcome in result.analyses.values():
            if outcome.status != Status.SKIPPED or outcome.shared_from or outcome.uri is None:
                continue
            committed = self.storage.modified(outcome.uri)
            if committed is not None and committed >= self._since:
                outcome.status = Status.COMPUTED

    def _blame(
        self,
        context: dg.AssetExecutionContext,
        plan: RunPlan,
        died: str,
        inflight: set[str],
        left: Sequence[TrackRef],
        *,
        serial: bool,
        deaths: int,
    ) -> set[str]:
        """The tracks a dead worker process costs: the one it had in flight (or every one,
        when it ran one track at a time), every track left after :data:`MAX_RELAUNCHES`
        deaths, else none (the next child runs one track at a time). Their temporaries are
        swept."""
        context.log.warning(
            f"the Beam worker process died ({died}) with {len(inflight)} track(s) in "
            f"flight; {len(left)} track(s) without a result"
        )
        blamed = inflight if (len(inflight) == 1 or serial) else set()
        if deaths > MAX_RELAUNCHES:
            blamed = {t.track_id for t in left}
        self._sweep(plan, blamed)
        return blamed

    def _check_bookkeeping(self, plan: RunPlan, layout: Layout) -> BeamJobError | None:
        """Write the run's plan into its folder: the run's own bookkeeping must work before
        any track is given to a worker (a full disk, a read-only mount, a root that is a
        file). Returns the error, in one line, or None."""
        try:
            self.storage.write_bytes(
                layout.plan_uri(plan.run_id),
                plan.to_json().encode(),
                durable=False,
            )
        except (StorageError, OSError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            why = cause.strerror if isinstance(cause, OSError) and cause.strerror else None
            return BeamJobError(
                f"the run's storage {self.storage.root} cannot be written"
                f"{f' ({why})' if why else ''}; no track was analysed: {one_line(exc)}",
                state="NOT_STARTED",
            )
        return None

    def _sweep(self, plan: RunPlan, track_ids: set[str]) -> None:
        """Remove what a dead worker process was writing for ``track_ids`` (its temporaries;
        never an output: those are committed whole or not at all)."""
        layout = Layout(self.storage)
        for planned in plan.analyses.values():
            for track_id in track_ids:
                folder = os.path.dirname(layout.output_uri(planned, track_id))
                self.storage.sweep_stale_temporaries(folder, again=True)

    def _launch(
        self,
        context: dg.AssetExecutionContext,
        plan: RunPlan,
        tracks: Sequence[TrackRef],
        *,
        serial: bool,
    ) -> BeamJob | WorkerProcessJob:
        refs = [{"track_id": t.track_id, "uri": t.uri} for t in tracks]
        if serial:
            plan = dataclasses.replace(plan, lanes=min(plan.lanes, 1))
        build = _RunPipeline(plan, refs, serial=serial)
        job = self.beam.launch(
            # fsspec's memory:// (tests) lives in this process: no worker process can see it
            build if not plan.storage_root.startswith("memory://") else build.__call__,
            job_name=f"klio-{context.run_id}",
            labels=run_labels(context, batch_size=len(tracks)),
        )
        context.log.info(f"Beam job {job.job_id} started")
        return job

    def _follow(
        self,
        context: dg.AssetExecutionContext,
        job: BeamJob | WorkerProcessJob,
        channel: ResultsChannel,
    ) -> Generator[list[TrackResult], None, None]:
        """Poll ``job`` until it ends, yielding results; cancel it if interrupted."""
        try:
            while not job.done():
                yield _poll_quietly(channel, context)
                job.join(self.beam.poll_interval_s)
            if not isinstance(job, WorkerProcessJob):
                try:
                    job.wait()
                except BeamJobError as exc:  # report what finished before failing the run
                    self.error = exc
        except BaseException:  # the Dagster run is being terminated: stop the Beam job too
            try:
                job.cancel()
            except BeamJobError as exc:  # keep the interrupt, not the failed cancel
                context.log.error(f"could not cancel Beam job {job.job_id}: {exc}")
            if isinstance(job, WorkerProcessJob):
                job.cleanup()
            raise
        try:
            last = channel.poll()  # the last ones; read errors are the run's now
        except (StorageError, OSError) as exc:
            self.error = self.error or BeamJobError(
                f"the run's results cannot be read: {one_line(exc)}", job_id=job.job_id
            )
            return
        yield last


#: A local worker process that dies is replaced at most this many times per run; after that
#: the tracks still without a result fail with the reason.
MAX_RELAUNCHES = 3


class _RunPipeline:
    """Builds a run's pipeline in this process, or describes it for a worker process."""

    def __init__(self, plan: RunPlan, refs: list[dict[str, str]], *, serial: bool):
        self.plan = plan
        self.refs = refs
        self.serial = serial

    def __call__(self, pipeline: Any) -> Any:
        # Beam is imported on use: it keeps Beam out of definition loading.
        from klio_assets.worker.pipeline import build_pipeline  # noqa: PLC0415

        return build_pipeline(pipeline, self.plan, self.refs)

    def standalone(self) -> tuple[str, list[dict[str, str]], list[str]]:
        """The plan's JSON, the track references and extra Beam arguments of a child."""
        return self.plan.to_json(), self.refs, ["--direct_num_workers=1"] if self.serial else []


def _progress(batch: Sequence[TrackRef], seen: set[str]) -> bool:
    """Whether some track of ``batch`` got a result."""
    return any(t.track_id in seen for t in batch)


def _crashed(
    track: TrackRef, plan: RunPlan, died: str, deaths: int, written: Sequence[str] = ()
) -> TrackResult:
    """A failed result for a track the worker process died on; ``written``: its analyses
    whose output the dead process had committed (whole and valid, reported by the next run)."""
    if deaths > MAX_RELAUNCHES:
        reason = (
            f"track {track.track_id!r}: {track.uri}: not analysed: the worker process died "
            f"{deaths} times in this run (last: {died})"
        )
    else:
        reason = (
            f"track {track.track_id!r}: {track.uri}: the worker process died ({died}) "
            "while analysing this track"
        )
    after = (
        "; this analysis had finished and its output is kept: the next run reports it "
        "without computing it again"
    )
    return TrackResult(
        track_id=track.track_id,
        uri=track.uri,
        analyses={
            n: AnalysisOutcome(
                Status.FAILED,
                reason=reason + (after if n in written else ""),
                error="WorkerDied",
                permanent=False,
            )
            for n in plan.selected
        },
    )


def _poll_quietly(channel: ResultsChannel, context: dg.AssetExecutionContext) -> list[TrackResult]:
    """A poll while the job runs: a storage hiccup waits for the next poll (the final one,
    after the job, raises)."""
    try:
        return channel.poll()
    except Exception as exc:  # any storage error: the next poll retries, the final one raises
        context.log.debug(f"results not read this time: {type(exc).__name__}: {exc}")
        return []
