"""The Beam pipeline of a run: one job over a batch of tracks, for every selected analysis.

On a local runner (``lanes``: Beam's FnApiRunner)::

    ListTracks -> CheckOutputs
      -+-> (nothing to do, reported) ---------------------------+
       +-> ShareQueue -> GroupByLane -> AnalyzeTracks ----------+-> ReportedTracks

On a distributed runner (Dataflow)::

    ListTracks -> CheckOutputs
      -+-> (nothing to do, reported) ---------------------------+
       +-> GroupByContent -> Reshuffle -> AnalyzeTracks --------+-> ReportedTracks

* ``CheckOutputs`` skips tracks whose outputs exist for the current versions (Klio's
  output-existence check) and probes and hashes the rest. On a local runner it is one step
  over every reference, on ``lanes`` threads (:class:`CheckAllOutputs`): each step that
  regroups elements costs the local runner a stage (~40 ms on one core) before the first
  decode, and a job used to have four.
* Tracks with identical source bytes are grouped together (``GroupByContent``, or
  :func:`group_by_content` on a local runner): one is computed, the others share its
  outputs.
* Work is spread evenly. Beam's local FnApiRunner splits a stage statically into
  ``direct_num_workers`` parts with no work stealing, so every lane is handed the same queue
  of all groups (``ShareQueue``), longest first (by a cost estimate from the header), and
  each lane claims the next unclaimed group when it is free (one claim file per group in a
  folder local to the job): the lanes end within one group of each other whatever the
  estimate got wrong. Distributed runners rebalance dynamically; there the step is a plain
  ``Reshuffle``.
* ``AnalyzeTracks`` decodes each source once and runs every selected analysis on it.
* Each track's :class:`~klio_assets.worker.records.TrackResult` is written as soon as it is
  known, one JSON file per track under ``_runs/<run_id>/results/``: the one results channel,
  which the launcher polls while the job runs to report each track to Dagster.

Elements are small dicts (IDs, paths, header facts); audio never travels between stages.
Run standalone with ``python -m klio_assets.worker.pipeline --plan plan.json --tracks
tracks.jsonl [Beam options]``. This module imports nothing from Dagster.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import PCollection

from klio_assets.worker import models
from klio_assets.worker.audio import DecodeLimits
from klio_assets.worker.execution import Engine, track_result
from klio_assets.worker.models import DEVICES
from klio_assets.worker.plan import RunPlan
from klio_assets.worker.records import TrackResult
from klio_assets.worker.watchdog import AnalysisThread

#: Pipeline options that set the per-track limits (see :class:`TrackLimitsOptions`), with the
#: :class:`~klio_assets.worker.audio.DecodeLimits` field each one sets.
LIMIT_OPTIONS = {
    "track_timeout_s": "timeout_s",
    "max_duration_s": "max_duration_s",
    "max_channels": "max_channels",
    "max_sample_rate": "max_sample_rate",
}

_DONE = "done"
#: Models loaded by the job's worker processes (one per model and process, when the cache
#: works): read by the benchmark from the pipeline result.
MODEL_LOADS = beam.metrics.Metrics.counter("klio_assets", "model_loads")


def _limit_native_threads() -> None:
    """One BLAS thread per worker thread: parallelism comes from Beam, not from OpenBLAS
    (two BLAS threads cost 45-85 % more CPU for 7 % less wall time)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with librosa's scikit-learn; not required
        pass


class TrackLimitsOptions(PipelineOptions):
    """Per-track limits as Beam pipeline options (``KLIO_ASSETS_TRACK_TIMEOUT``,
    ``KLIO_ASSETS_MAX_DURATION`` and ``KLIO_ASSETS_MAX_CHANNELS`` become these; they can also
    be given in ``KLIO_ASSETS_BEAM_OPTIONS``). Unset options keep the plan's limits."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--track_timeout_s", type=float, default=None,
            help="Longest a probe or decode of one track may take, in seconds; the decoder is then killed.",
        )  # fmt: skip
        parser.add_argument(
            "--max_duration_s", type=float, default=None, help="Longest source accepted, seconds."
        )
        parser.add_argument(
            "--max_channels", type=int, default=None, help="Most channels accepted."
        )
        parser.add_argument(
            "--max_sample_rate", type=int, default=None, help="Highest sample rate accepted, Hz."
        )


class ModelOptions(PipelineOptions):
    """Where models run (``KLIO_ASSETS_MODEL_DEVICE`` becomes ``--model_device``)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--model_device", choices=DEVICES, default=None,
            help="cpu, cuda or auto (CUDA where onnxruntime offers it); unset keeps the plan's.",
        )  # fmt: skip


def with_model_options(plan: RunPlan, options: PipelineOptions | None) -> RunPlan:
    """``plan`` with ``--model_device`` (:class:`ModelOptions`) applied."""
    device = None if options is None else options.view_as(ModelOptions).model_device
    return plan if device is None else dataclasses.replace(plan, model_device=device)


def with_limit_options(plan: RunPlan, options: PipelineOptions | None) -> RunPlan:
    """``plan`` with the limits set in ``options`` (:class:`TrackLimitsOptions`) applied.

    Raises
    ------
    ParameterError
        A limit is not a positive number.
    """
    if options is None:
        return plan
    view = options.view_as(TrackLimitsOptions)
    given = {
        field: getattr(view, opt)
        for opt, field in LIMIT_OPTIONS.items()
        if getattr(view, opt) is not None
    }
    if not given:
        return plan
    limits = {**plan.limits, **given}
    DecodeLimits(**limits)  # validate here, at the boundary, with the option named
    return dataclasses.replace(plan, limits=limits)


class _EngineDoFn(beam.DoFn):
    """A DoFn holding one :class:`Engine`, built once per worker from the plan's JSON."""

    def __init__(self, plan_json: str, inflight_dir: str | None = None):
        super().__init__()  # type: ignore[no-untyped-call]  # Beam's DoFn is untyped
        self._plan_json = plan_json
        self._inflight_dir = inflight_dir
        self.engine: Engine | None = None

    def mark(self, track_ids: Iterable[str]) -> None:
        """Mark tracks in flight (the launcher of a local worker process reads the marks of
        a process that died, to fail the tracks it was working on)."""
        if self._inflight_dir is None:
            return
        for track_id in track_ids:
            with open(os.path.join(self._inflight_dir, track_id), "wb"):
                pass

    def unmark(self, track_id: str) -> None:
        """The track is no longer in flight."""
        if self._inflight_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._inflight_dir, track_id))

    def check(self, ref: dict[str, Any]) -> dict[str, Any]:
        """:meth:`Engine.check` of one track reference, marked in flight meanwhile."""
        assert self.engine is not None
        self.mark([ref["track_id"]])
        try:
            return self.engine.check(ref)
        finally:
            self.unmark(ref["track_id"])

    def setup(self) -> None:
        _limit_native_threads()
        self.engine = Engine(RunPlan.from_json(self._plan_json))

    def teardown(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def write_result(self, result: TrackResult) -> str:
        """Write one track's result into the run's results folder, as soon as it is known
        (the launcher reads these files while the job runs)."""
        assert self.engine is not None
        uri = self.engine.layout.result_uri(self.engine.plan.run_id, result.track_id)
        # Scratch, read within the run: the one place a result becomes JSON.
        self.engine.storage.write_json(uri, result.to_dict(), durable=False)
        _LAST_RESULT.written(result.track_id)
        return result.track_id


class CheckOutputs(_EngineDoFn):
    """Existence checks and source probing; tracks with nothing left to do are reported here
    (the ``done`` output carries their IDs)."""

    def process(self, ref: dict[str, Any]) -> Iterator[Any]:
        task = self.check(ref)
        if task["pending"]:
            yield task
        else:
            yield beam.pvalue.TaggedOutput(_DONE, self.write_result(track_result(task)))


class CheckAllOutputs(_EngineDoFn):
    """:class:`CheckOutputs` for a local runner's lanes: one element, every track reference
    of the job, checked on ``lanes`` threads; yields the tasks with work left as one list.

    Beam's local runner pays a stage, about 40 ms on one core, for each step that regroups
    elements (dealing references to workers, grouping by content, collecting the groups):
    a fifth of a second before the first decode, with the other core idle. Checked here,
    the references need no dealing and the groups are made in :func:`share_queue`.
    """

    def __init__(self, plan_json: str, inflight_dir: str | None = None, *, lanes: int = 1):
        super().__init__(plan_json, inflight_dir)
        self._lanes = max(1, lanes)

    def _check(self, ref: dict[str, Any]) -> dict[str, Any]:
        task = self.check(ref)
        if not task["pending"]:
            self.write_result(track_result(task))
        return task

    def process(self, refs: list[dict[str, Any]]) -> Iterator[Any]:
        with concurrent.futures.ThreadPoolExecutor(self._lanes, "klio-check") as pool:
            tasks = list(pool.map(self._check, refs))
        for task in tasks:
            if not task["pending"]:
                yield beam.pvalue.TaggedOutput(_DONE, task["track_id"])
        pending = [task for task in tasks if task["pending"]]
        if pending:
            yield pending


class AnalyzeTracks(_EngineDoFn):
    """Compute each group of identical sources once (or plan it, in a dry run), and report
    each track as soon as its group is done.

    An element is one group, or a lane's :class:`WorkQueue` (``ShareQueue`` on a local
    runner): then the groups of the queue that no other lane has claimed yet. The groups run
    on the lane's analysis thread, each within its time limit (:mod:`.watchdog`).
    """

    _lane: AnalysisThread | None = None

    def setup(self) -> None:
        super().setup()
        assert self.engine is not None
        self._lane = AnalysisThread(self.engine)

    def teardown(self) -> None:
        if self._lane is not None:
            self._lane.close()
        super().teardown()

    def process(self, element: list[dict[str, Any]] | WorkQueue) -> Iterator[str]:
        groups = element.claimed() if isinstance(element, WorkQueue) else [element]
        for group in groups:
            yield from self._analyze(group)

    def _analyze(self, group: list[dict[str, Any]]) -> Iterator[str]:
        assert self.engine is not None
        self.mark(task["track_id"] for task in group)
        if self.engine.plan.dry_run:
            results = self.engine.plan_group(group)
        else:
            assert self._lane is not None
            results = self._lane.analyze(group)
            # counted here, in the DoFn's thread (Beam's metrics context), not in the worker
            # thread that loaded the model: loads per job are counted, not assumed
            MODEL_LOADS.inc(models.unreported_loads())
        for result in results:
            yield self.write_result(result)
            self.unmark(result.track_id)


@dataclasses.dataclass(frozen=True)
class WorkQueue:
    """Every group of a job, in the order they should start (longest first), shared by the
    lanes of a local runner: each lane claims the next group no lane has taken yet.

    A claim is a file created with ``O_EXCL`` in ``claims_dir`` (a folder on the machine
    that runs the job, made when the pipeline is built): it works between the threads of
    ``multi_threading`` and the processes of ``multi_processing`` alike. A worker that cannot
    see that folder (lanes forced on a runner whose workers run elsewhere) takes every
    ``lanes``-th group from its own, ``lane``, on: a static split, as before.

    Parameters
    ----------
    claims_dir : str
    groups : list of list of dict
    lane, lanes : int
        This queue's lane, and how many there are.
    """

    claims_dir: str
    groups: list[list[dict[str, Any]]]
    lane: int = 0
    lanes: int = 1

    def claim(self, index: int) -> bool:
        """Whether this lane takes group ``index`` (False: another lane has)."""
        try:
            fd = os.open(
                os.path.join(self.claims_dir, str(index)), os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            return False
        except FileNotFoundError:  # not the machine that built the pipeline
            return index % self.lanes == self.lane
        os.close(fd)
        return True

    def claimed(self) -> Iterator[list[dict[str, Any]]]:
        """The groups this lane claims, one at a time (each claimed when the previous one is
        done, so that a free lane takes the next group)."""
        for index, group in enumerate(self.groups):
            if self.claim(index):
                yield group


def _group_cost(group: list[dict[str, Any]]) -> float:
    return max(float(t.get("cost", 0.0)) for t in group)


def group_by_content(tasks: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Tasks with identical source bytes (``content_hash``) together, in first-seen order:
    one of each group is computed, the others share its outputs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        groups.setdefault(task["content_hash"], []).append(task)
    return list(groups.values())


def share_queue(
    groups: Sequence[list[dict[str, Any]]], lanes: int, claims_dir: str
) -> list[tuple[int, WorkQueue]]:
    """One :class:`WorkQueue` of all ``groups`` (longest first) for each of ``lanes`` lanes.

    Returns
    -------
    list of (int, WorkQueue)
        ``(lane, queue)`` pairs, the same groups in every lane's queue.
    """
    ordered = sorted(groups, key=lambda g: -_group_cost(g))
    lanes = max(1, lanes)
    return [(lane, WorkQueue(claims_dir, ordered, lane, lanes)) for lane in range(lanes)]


def build_pipeline(
    pipeline: beam.Pipeline,
    plan: RunPlan,
    tracks: Iterable[dict[str, Any]],
    *,
    inflight_dir: str | None = None,
) -> PCollection[str]:
    """Add a run's steps to ``pipeline``.

    Parameters
    ----------
    pipeline : beam.Pipeline
    plan : RunPlan
    tracks : iterable of dict
        ``{"track_id", "uri"}`` in run order.
    inflight_dir : str, optional
        A local folder where each track is marked (an empty file named after it) while it is
        checked or analysed (local worker processes only: see ``--inflight-dir``).

    Returns
    -------
    PCollection of str
        The track IDs whose results were written.
    """
    options = getattr(pipeline, "options", None)
    plan = with_model_options(with_limit_options(plan, options), options)
    plan_json = plan.to_json()
    refs = [{"track_id": t["track_id"], "uri": t["uri"], "order": i} for i, t in enumerate(tracks)]
    if plan.lanes > 0:
        checked, analyzed = _local_steps(pipeline, plan, plan_json, refs, inflight_dir)
    else:
        checked, analyzed = _distributed_steps(pipeline, plan, plan_json, refs, inflight_dir)
    reported: PCollection[str] = (checked[_DONE], analyzed) | "ReportedTracks" >> beam.Flatten()
    return reported


def _local_steps(
    pipeline: beam.Pipeline,
    plan: RunPlan,
    plan_json: str,
    refs: list[dict[str, Any]],
    inflight_dir: str | None,
) -> tuple[Any, PCollection[str]]:
    """A local runner's steps: every check in one step on ``lanes`` threads
    (:class:`CheckAllOutputs`), then one queue of content groups shared by the lanes."""
    # Local runners only (lanes): the job runs on this machine. Under TMPDIR, which a
    # worker process's launcher points into its own work folder.
    claims_dir = tempfile.mkdtemp(prefix="klio-claims-")
    atexit.register(shutil.rmtree, claims_dir, ignore_errors=True)
    lanes = plan.lanes
    # One element, every reference; typed, or Beam infers the type of each (~0.3 s per
    # 1000 tracks).
    listed = pipeline | "ListTracks" >> beam.Create([refs], reshuffle=False).with_output_types(
        list[dict[str, Any]]
    )
    checked = listed | "CheckOutputs" >> beam.ParDo(
        CheckAllOutputs(plan_json, inflight_dir, lanes=lanes)
    ).with_outputs(_DONE, main="pending")
    analyzed: PCollection[str] = (
        checked.pending
        | "ShareQueue"
        >> beam.FlatMap(lambda tasks: share_queue(group_by_content(tasks), lanes, claims_dir))
        | "GroupByLane" >> beam.GroupByKey()
        | "UnpackLane" >> beam.FlatMap(lambda kv: list(kv[1]))
        | "AnalyzeTracks" >> analyze_step(plan, plan_json, inflight_dir)
    )
    return checked, analyzed


def _distributed_steps(
    pipeline: beam.Pipeline,
    plan: RunPlan,
    plan_json: str,
    refs: list[dict[str, Any]],
    inflight_dir: str | None,
) -> tuple[Any, PCollection[str]]:
    """A distributed runner's steps: one check per reference, groups by content, then a
    ``Reshuffle`` (the runner rebalances work dynamically)."""
    # Typed: otherwise Beam infers the type of every element (~0.3 s per 1000 tracks).
    listed = pipeline | "ListTracks" >> beam.Create(refs, reshuffle=False).with_output_types(
        dict[str, Any]
    )
    checked = listed | "CheckOutputs" >> beam.ParDo(
        CheckOutputs(plan_json, inflight_dir)
    ).with_outputs(_DONE, main="pending")
    analyzed: PCollection[str] = (
        checked.pending
        | "KeyByContent" >> beam.Map(lambda task: (task["content_hash"], task))
        | "GroupByContent" >> beam.GroupByKey()
        | "DropKeys" >> beam.Map(lambda kv: list(kv[1]))
        | "Reshuffle" >> beam.Reshuffle()
        | "AnalyzeTracks" >> analyze_step(plan, plan_json, inflight_dir)
    )
    return checked, analyzed


def analyze_step(
    plan: RunPlan, plan_json: str, inflight_dir: str | None = None
) -> beam.PTransform[Any, Any]:
    """The ``AnalyzeTracks`` step, with its models' resource hints (accelerator, minimum
    RAM: Dataflow provisions workers for them; local runners ignore them)."""
    step = beam.ParDo(AnalyzeTracks(plan_json, inflight_dir))
    hints = plan.resource_hints()
    return step.with_resource_hints(**hints) if hints else step


def exit_now(code: int = 0) -> NoReturn:
    """End the process now, its logs and standard streams flushed: no exit handlers, no
    teardown (a local worker process whose results are all written)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _LastResult:
    """Ends a local worker process as soon as every track of its job has its result written
    (``--exit-when-done``).

    Everything a job leaves is written by then: each output is committed, with its records,
    before its track's result. What Beam's runner would still do is stop its gRPC servers and
    join their threads, ~0.15 s after the last decode, with both cores idle and the launcher
    waiting for this process to end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected: int | None = None
        self._written: set[str] = set()

    def expect(self, tracks: int) -> None:
        """Exit once ``tracks`` distinct tracks have a result (none: exit at once)."""
        with self._lock:
            self._expected = tracks
            done = len(self._written) >= tracks
        if done:
            exit_now()

    def written(self, track_id: str) -> None:
        with self._lock:
            if self._expected is None:
                return
            self._written.add(track_id)
            done = len(self._written) >= self._expected
        if done:
            exit_now()


_LAST_RESULT = _LastResult()


def _exit_with_parent(pid: int, *, interval_s: float = 0.1) -> None:
    """Kill this process as soon as its parent ``pid`` is gone (a worker process whose
    launcher was killed must not go on writing into the run's folders)."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="klio-exit-with-parent", daemon=True).start()


def run(argv: Sequence[str] | None = None) -> None:
    """Run a plan from files: ``--plan plan.json --tracks tracks.jsonl`` plus Beam options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", required=True, help="RunPlan JSON file")
    parser.add_argument("--tracks", required=True, help="JSON lines of {track_id, uri}")
    parser.add_argument(
        "--inflight-dir", default=None, help="local folder marking the tracks in flight"
    )
    parser.add_argument(
        "--exit-with-parent", type=int, default=None, metavar="PID",
        help="exit at once when process PID (the launcher) is gone",
    )  # fmt: skip
    parser.add_argument(
        "--exit-when-done", action="store_true",
        help="end the process as soon as every track has its result written, before Beam's "
        "own teardown (a worker process of its own)",
    )  # fmt: skip
    known, beam_args = parser.parse_known_args(argv)
    if known.exit_with_parent:
        _exit_with_parent(known.exit_with_parent)
    with open(known.plan) as fh:
        plan = RunPlan.from_json(fh.read())
    with open(known.tracks) as fh:
        tracks = [json.loads(line) for line in fh if line.strip()]
    if known.exit_when_done:
        _LAST_RESULT.expect(len({t["track_id"] for t in tracks}))
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build_pipeline(pipeline, plan, tracks, inflight_dir=known.inflight_dir)


if __name__ == "__main__":
    run()
