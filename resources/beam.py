"""The Beam runner resource: which runner executes a run's pipeline, and how it is watched.

The local default is Beam's FnApiRunner, named explicitly (``--runner=DirectRunner`` first
tries to download the Prism binary on every run), in multi-threading mode over every core:
decoding, resampling and FFTs release the GIL, and threads start in ~0.2 s where
multi-processing spawns fresh, re-importing workers for every pipeline. Any other runner
(Dataflow, Flink, Spark, ``PortableRunner``) is chosen by configuration alone, through
``KLIO_ASSETS_BEAM_OPTIONS``.

Launching follows dagster-gcp's Dataproc Pipes client: submit, poll at an interval, cancel the
Beam job if the Dagster run is interrupted, raise with the job ID and final state on failure.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from klio_assets.errors import BeamJobError

LOCAL_RUNNER = "FnApiRunner"
_TERMINAL = {"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED", "STOPPED"}


def _option(args: list[str], name: str) -> str | None:
    """Value of ``--name=value`` or ``--name value`` in ``args`` (last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


class BeamJob:
    """A launched Beam pipeline: poll it, wait for it, cancel it.

    Local runners run synchronously inside ``pipeline.run()``, so they run in a thread here;
    remote runners return at once and are polled through their ``PipelineResult``.
    """

    def __init__(self, pipeline: Any, *, runner: str, job_name: str):
        self.pipeline = pipeline
        self.runner = runner
        self.job_name = job_name
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.finished: float | None = None

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

            self._thread = threading.Thread(target=run_local, name=f"beam-{self.job_name}", daemon=True)
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
            if self._thread is not None:
                self._thread.join(timeout=interval_s)  # returns the moment a local job ends
            else:
                time.sleep(interval_s)
        if self.finished is None:
            self.finished = time.monotonic()
        state = self.state
        if state != "DONE":
            cause = f": {type(self.error).__name__}: {self.error}" if self.error else ""
            raise BeamJobError(
                f"Beam job {self.job_id} ended in state {state}{cause}", job_id=self.job_id, state=state
            ) from self.error
        return state

    @property
    def wall_s(self) -> float:
        """Seconds from submission to the end (or to now)."""
        return (self.finished or time.monotonic()) - self.started

    def cancel(self) -> None:
        """Ask the runner to stop the job (the local runner cannot be stopped mid-run)."""
        if self.result is not None and self._thread is None:
            try:
                self.result.cancel()
            except Exception as exc:  # best effort while the Dagster run is being torn down
                raise BeamJobError(f"could not cancel Beam job {self.job_id}: {exc}", job_id=self.job_id) from exc


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
        description="How work is spread: 'lanes' (longest first over a fixed number of workers, "
        "for runners that split statically), 'reshuffle' (for runners that rebalance), or "
        "'auto' (lanes for the local runner).",
    )
    poll_interval_s: float = Field(1.0, gt=0, description="Seconds between job status polls.")

    @property
    def runner(self) -> str:
        """Runner name in effect."""
        return _option(self.pipeline_args, "runner") or LOCAL_RUNNER

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

    def pipeline_options_args(self, *, job_name: str) -> list[str]:
        """The Beam arguments of one run."""
        args = list(self.pipeline_args)
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

    def launch(self, build: Callable[[Any], Any], *, job_name: str) -> BeamJob:
        """Create a pipeline, let ``build`` add its steps, and submit it.

        Parameters
        ----------
        build : callable
            Receives the ``beam.Pipeline``.
        job_name : str
            Lowercase letters, digits and ``-`` (Dataflow's rule); other characters are
            replaced.
        """
        import apache_beam as beam  # noqa: PLC0415 - keeps Beam out of definition loading
        from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

        name = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")[:63] or "klio-assets"
        options = PipelineOptions(self.pipeline_options_args(job_name=name))
        pipeline = beam.Pipeline(options=options)
        build(pipeline)
        return BeamJob(pipeline, runner=self.runner, job_name=name).start()
