"""The Beam runner resource: which runner executes a run's pipeline, and how it is watched.

The local default is Beam's FnApiRunner, named explicitly (``--runner=DirectRunner`` first
tries to download the Prism binary on every run), in multi-threading mode over every core:
decoding, resampling and FFTs release the GIL, and threads start in ~0.2 s where
multi-processing spawns fresh, re-importing workers for every pipeline. Any other runner
(Dataflow, Flink, Spark, ``PortableRunner``) is chosen by configuration alone, through
``KLIO_ASSETS_BEAM_OPTIONS``. A run's local job runs in a child process
(:mod:`~klio_assets.resources.worker_process`, ``isolate_local``), so that a crash inside it
costs only the track it was on, never the Dagster step.

A run's job is launched and followed by
:class:`klio_assets.orchestration.launcher.BeamPipesClient` (shaped like dagster-gcp's Dataproc
Pipes client: submit with labels, poll at an interval, stream results back, cancel the Beam
job if the Dagster run is interrupted, raise with the job ID and final state on failure);
this module submits (:meth:`BeamRunnerResource.launch`) and wraps the runner's job
(:class:`BeamJob`). Beam options are read through Beam's own ``PipelineOptions`` views.

Dataflow is configured by :class:`~klio_assets.resources.dataflow.DataflowConfig`
(``KLIO_ASSETS_DATAFLOW``; kept importable from here): project, region,
staging, worker image, machine type, autoscaling, identity, network, and labels carrying the
Dagster run ID, the assets and the batch size (sanitized to GCP's label rules). The job ID and
console URL are recorded as tags of the Dagster run (``klio/beam_job_id``,
``klio/beam_console_url``) and logged as soon as the job is submitted.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import dagster as dg
from klio_assets.resources.dataflow import (  # noqa: F401 - re-exported: imported from here
    DATAFLOW_RUNNER,
    DataflowConfig,
    console_url,
    gcp_label,
    gcp_labels,
)
from klio_assets.resources.worker_process import WorkerProcessJob
from pydantic import Field

from klio_assets.errors import BeamJobError, one_line

LOCAL_RUNNER = "FnApiRunner"
_TERMINAL = {"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED", "STOPPED"}
#: Run tags recording the Beam job of a Dagster run.
JOB_ID_TAG = "klio/beam_job_id"
CONSOLE_URL_TAG = "klio/beam_console_url"


def _option(args: list[str], name: str) -> str | None:
    """The value of Beam option ``--name`` in ``args`` (``--name=V`` or ``--name V``; the last
    one wins, as with Beam's parser), read without importing Beam: the local path starts its
    worker process without paying for Beam's imports in this one (~1 CPU-s)."""
    value = None
    flag = f"--{name}"
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(args):
            value = args[i + 1]
    return value


def _google_cloud_options(args: list[str]) -> Any:
    """``args`` read by Beam as its ``GoogleCloudOptions`` (project, region, job name...)."""
    from apache_beam.options.pipeline_options import (  # noqa: PLC0415 - see above
        GoogleCloudOptions,
        PipelineOptions,
    )

    return PipelineOptions(args).view_as(GoogleCloudOptions)


class BeamJob:
    """A launched Beam pipeline: poll it, wait for it, cancel it.

    Local runners run synchronously inside ``pipeline.run()``, so they run in a thread here;
    remote runners return at once and are polled through their ``PipelineResult``.
    """

    def __init__(
        self, pipeline: Any, *, runner: str, job_name: str, dataflow: DataflowConfig | None = None
    ):
        self.pipeline = pipeline
        self.runner = runner
        self.job_name = job_name
        self.dataflow = dataflow
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._cpu_started = time.process_time()
        self._cpu_finished: float | None = None

    @property
    def job_id(self) -> str:
        """The runner's job ID (``local:<name>`` for the local runner)."""
        if self.result is not None:
            for attr in ("job_id", "_job_id"):
                value = getattr(self.result, attr, None)
                if callable(value):
                    value = value()
                if value:
                    return str(value)
        return f"local:{self.job_name}"

    @property
    def console_url(self) -> str | None:
        """The job's page in the Cloud Console (Dataflow jobs that were submitted)."""
        if self.dataflow is None or self.result is None:
            return None
        return console_url(
            project=self.dataflow.project, region=self.dataflow.region, job_id=self.job_id
        )

    def start(self) -> BeamJob:
        """Submit the pipeline."""
        if self.runner == LOCAL_RUNNER:

            def run_local() -> None:
                try:
                    self.result = self.pipeline.run()
                    self.result.wait_until_finish()
                except BaseException as exc:  # reported by wait()
                    self.error = exc
                finally:
                    self.finished = time.monotonic()
                    self._cpu_finished = time.process_time()

            self._thread = threading.Thread(
                target=run_local, name=f"beam-{self.job_name}", daemon=True
            )
            self._thread.start()
        else:
            self.result = self.pipeline.run()
        return self

    @property
    def state(self) -> str:
        """``RUNNING`` or the final state (``DONE``, ``FAILED``, ``CANCELLED``...)."""
        if self._thread is not None:
            if self._thread.is_alive():
                return "RUNNING"
            return "FAILED" if self.error is not None else "DONE"
        try:
            return str(self.result.state).rsplit(".", 1)[-1]
        except Exception as exc:  # a transient error asking the service; keep polling
            return f"UNKNOWN ({type(exc).__name__})"

    def done(self) -> bool:
        """Whether the job reached a final state."""
        return self.state in _TERMINAL

    def join(self, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` seconds for the job (returns the moment a local job ends)."""
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        else:
            time.sleep(timeout_s)

    def wait(self, *, poll: Callable[[], None] | None = None, interval_s: float = 1.0) -> str:
        """Wait for the job, calling ``poll`` every ``interval_s`` seconds.

        Raises
        ------
        BeamJobError
            The job failed or was cancelled; the message carries the job ID and state.
        """
        while not self.done():
            if poll is not None:
                poll()
            self.join(interval_s)
        if self.finished is None:
            self.finished = time.monotonic()
        state = self.state
        if state != "DONE":
            cause = f": {one_line(self.error)}" if self.error else ""
            where = f" (see {self.console_url})" if self.console_url else ""
            raise BeamJobError(
                f"Beam job {self.job_id} ended in state {state}{cause}{where}",
                job_id=self.job_id,
                state=state,
            ) from self.error
        return state

    @property
    def wall_s(self) -> float:
        """Seconds from submission to the end (or to now)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def cpu_s(self) -> float | None:
        """CPU-seconds this process spent from submission to the end (or to now), for the
        local runner, which runs the job in this process (with ``wall_s``: how many cores
        it kept busy); None for remote runners."""
        if self._thread is None:
            return None
        return (self._cpu_finished or time.process_time()) - self._cpu_started

    def cancel(self) -> None:
        """Ask the runner to stop the job (the local runner cannot be stopped mid-run)."""
        if self.result is not None and self._thread is None:
            try:
                self.result.cancel()
            except Exception as exc:  # best effort while the Dagster run is being torn down
                raise BeamJobError(
                    f"could not cancel Beam job {self.job_id}: {exc}", job_id=self.job_id
                ) from exc


class BeamRunnerResource(dg.ConfigurableResource):
    """The Beam runner that executes each run's pipeline.

    By default Beam's FnApiRunner on this machine, multi-threaded over every core. Pass any
    Beam options in ``pipeline_args`` (``KLIO_ASSETS_BEAM_OPTIONS``); a ``--runner`` there
    replaces the local default.
    """

    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = Field(
        "multi_threading", description="FnApiRunner mode (local runs only)."
    )
    direct_num_workers: int = Field(
        0, ge=0, description="FnApiRunner parallelism (local runs only); 0 means every core."
    )
    pipeline_args: list[str] = Field(
        default_factory=list,
        description="Beam pipeline options, e.g. ['--runner=PortableRunner', '--job_endpoint=...'].",
    )
    balance: Literal["auto", "lanes", "reshuffle"] = Field(
        "auto",
        description="How work is spread: 'lanes' (a fixed number of workers sharing one queue, "
        "longest first, for runners that split statically), 'reshuffle' (for runners that rebalance), or "
        "'auto' (lanes for the local runner).",
    )
    poll_interval_s: float = Field(1.0, gt=0, description="Seconds between job status polls.")
    isolate_local: bool = Field(
        True,
        description="Local runner: run each job in a child process (python -m "
        "klio_assets.worker), so that a crash of a native decoder or the OOM killer "
        "costs only the track it hit, not the Dagster step.",
    )
    dataflow: DataflowConfig | None = Field(
        None,
        description="Run on Google Cloud Dataflow with these settings (KLIO_ASSETS_DATAFLOW); "
        "pipeline_args still apply after them.",
    )

    @property
    def runner(self) -> str:
        """Runner name in effect."""
        default = DATAFLOW_RUNNER if self.dataflow is not None else LOCAL_RUNNER
        return _option(self.pipeline_args, "runner") or default

    def workers(self) -> int:
        """Local parallelism: ``direct_num_workers`` or the number of usable cores."""
        if self.direct_num_workers:
            return self.direct_num_workers
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1

    def lanes(self) -> int:
        """Lanes for the Balance step (0 means reshuffle)."""
        if self.balance == "reshuffle":
            return 0
        if self.balance == "lanes" or self.runner == LOCAL_RUNNER:
            return self.workers()
        return 0

    def pipeline_options_args(
        self, *, job_name: str, labels: Mapping[str, Any] | None = None
    ) -> list[str]:
        """The Beam arguments of one run.

        Parameters
        ----------
        job_name : str
        labels : mapping, optional
            Labels of the job (Dataflow only), merged over ``dataflow.labels`` and sanitized
            to GCP's rules.
        """
        args = list(self.pipeline_args)
        if self.dataflow is not None:
            merged = gcp_labels({**self.dataflow.labels, **dict(labels or {})})
            args = [
                *self.dataflow.args(),
                *(f"--labels={k}={v}" for k, v in sorted(merged.items())),
                *args,
            ]
        if _option(args, "runner") is None:
            args = [
                f"--runner={LOCAL_RUNNER}",
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.workers()}",
                *args,
            ]
        if _option(args, "job_name") is None:
            args.append(f"--job_name={job_name}")
        return args

    def launch(
        self,
        build: Callable[[Any], Any],
        *,
        job_name: str,
        labels: Mapping[str, Any] | None = None,
    ) -> BeamJob | WorkerProcessJob:
        """Create a pipeline, let ``build`` add its steps, and submit it.

        Inside a Dagster run, the job is labelled with the run ID and the selected assets
        (unless ``labels`` is given: :func:`run_labels`), and once submitted its ID and
        console URL are logged and recorded as run tags (``klio/beam_job_id``,
        ``klio/beam_console_url``).

        Parameters
        ----------
        build : callable
            Receives the ``beam.Pipeline``. If it has a ``standalone()`` method (returning the
            plan's JSON, the track references and extra Beam arguments) and the runner is the
            local one, the job runs in a child process instead
            (:class:`~klio_assets.resources.worker_process.WorkerProcessJob`).
        job_name : str
            Lowercase letters, digits and ``-`` (Dataflow's rule); other characters are
            replaced.
        labels : mapping, optional
            Job labels (Dataflow); by default taken from the current Dagster run.
        """
        name = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")[:63] or "klio-assets"
        standalone = getattr(build, "standalone", None)
        if standalone is not None and self.isolate_local and self.runner == LOCAL_RUNNER:
            plan_json, tracks, extra_args = standalone()
            args = [*self.pipeline_options_args(job_name=name), *extra_args]
            return WorkerProcessJob(plan_json, tracks, args, job_name=name).start()
        import apache_beam as beam  # noqa: PLC0415 - keeps Beam out of definition loading
        from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

        context = _current_context()
        if labels is None and context is not None:
            labels = run_labels(context)
        options = PipelineOptions(self.pipeline_options_args(job_name=name, labels=labels))
        pipeline = beam.Pipeline(options=options)
        build(pipeline)
        dataflow = self.dataflow
        if dataflow is None and self.runner == DATAFLOW_RUNNER:
            dataflow = _dataflow_from_args(self.pipeline_options_args(job_name=name))
        job = BeamJob(pipeline, runner=self.runner, job_name=name, dataflow=dataflow).start()
        if context is not None and job.result is not None:
            tags = {JOB_ID_TAG: job.job_id}
            if job.console_url:
                tags[CONSOLE_URL_TAG] = job.console_url
            context.instance.add_run_tags(context.run_id, tags)
            context.log.info(
                f"Beam job {job.job_id} submitted to {self.runner}"
                + (f": {job.console_url}" if job.console_url else "")
            )
        return job


def _current_context() -> dg.OpExecutionContext | None:
    """The Dagster op context running this code, if any."""
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None


def run_labels(context: dg.OpExecutionContext, *, batch_size: int = 0) -> dict[str, str]:
    """Labels naming a run's Beam job: Dagster run ID, assets and batch size (GCP rules).

    Parameters
    ----------
    context : dg.OpExecutionContext
    batch_size : int
        Tracks in the run (0: not known here; the launcher knows and passes it).
    """
    assets = sorted(key.to_user_string() for key in context.selected_asset_keys)
    return gcp_labels(
        {
            "dagster-run-id": context.run_id,
            "dagster-asset": "-".join(assets),
            "klio-batch-size": batch_size,
        }
    )


def _dataflow_from_args(args: list[str]) -> DataflowConfig | None:
    """Project and region of a Dataflow job configured through raw Beam arguments only."""
    view = _google_cloud_options(args)
    if not view.project or not view.region:
        return None
    return DataflowConfig(
        project=view.project, region=view.region, temp_location=view.temp_location or ""
    )
