"""The local runner's Beam job in a child process, so that a crash costs only what it touches.

Beam's FnApiRunner runs a job inside the process that submits it. Run there, a segfault in a
native decoder or the OOM killer would take the Dagster step with it: the good tracks of the
batch never recorded, the run left STARTED. :class:`WorkerProcessJob` runs the job in a child
instead (``python -m klio_assets.worker``, the standalone worker entry point: no
Dagster imported, and Beam without the pandas, pyarrow and cloud clients it never uses there), in its own process group, with the same interface as
:class:`~klio_assets.resources.beam.BeamJob`. Results still stream through the run's results
folder; the child marks each track in flight (one empty file per track in ``inflight/`` of its
work folder) while it checks or analyses it, so the launcher can tell which tracks a dead
child was working on.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from klio_assets.errors import BeamJobError, one_line
from klio_assets.worker.decoder_log import VERBOSE_ENV
from klio_assets.worker.spare import take_spare

#: Lines of the child's stderr kept to say why it failed.
_STDERR_TAIL_BYTES = 8192


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class WorkerProcessJob:
    """A Beam job run by a child ``python -m klio_assets.worker`` process.

    Parameters
    ----------
    plan_json : str
        The run's :class:`~klio_assets.worker.plan.RunPlan` as JSON.
    tracks : sequence of dict
        ``{"track_id", "uri"}`` in run order.
    beam_args : sequence of str
        The Beam pipeline options of the job.
    job_name : str
    """

    runner = "FnApiRunner"
    dataflow = None
    result = None  # no runner handle in this process (no run tags to record)

    def __init__(
        self, plan_json: str, tracks: Sequence[dict[str, Any]], beam_args: Sequence[str], *,
        job_name: str,
    ):  # fmt: skip
        self.job_name = job_name
        self._spare = take_spare()
        self.workdir = (
            self._spare.workdir if self._spare else tempfile.mkdtemp(prefix="klio-worker-")
        )
        self.inflight_dir = os.path.join(self.workdir, "inflight")
        os.mkdir(self.inflight_dir)
        plan_path = os.path.join(self.workdir, "plan.json")
        tracks_path = os.path.join(self.workdir, "tracks.jsonl")
        with open(plan_path, "w") as fh:
            fh.write(plan_json)
        with open(tracks_path, "w") as fh:
            fh.writelines(json.dumps(dict(t)) + "\n" for t in tracks)
        self.command = [
            sys.executable, "-m", "klio_assets.worker", "--plan", plan_path,
            "--tracks", tracks_path, "--inflight-dir", self.inflight_dir, "--exit-when-done",
            *beam_args,
        ]  # fmt: skip
        self._stderr_path = os.path.join(self.workdir, "stderr.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._cpu_started = _children_cpu_s()
        self._cpu_finished: float | None = None
        self.error: BaseException | None = None

    @property
    def job_id(self) -> str:
        """``local:<name>:<pid>``."""
        pid = f":{self.proc.pid}" if self.proc is not None else ""
        return f"local:{self.job_name}{pid}"

    console_url = None

    def start(self) -> WorkerProcessJob:
        """Start the child; its temporary files go to the work folder, removed with it even
        if the child dies.

        The child stays in this process's group, so that whatever kills the group (a shell's
        Ctrl-C, ``kill -- -PGID``, a container stop) kills it too; and it exits by itself
        when this process disappears (``--exit-with-parent``: a SIGKILL of this process
        alone, the OOM killer choosing it)."""
        args = [*self.command, f"--exit-with-parent={os.getpid()}"]
        spare, self._spare = self._spare, None
        if spare is not None:  # started ahead (prestart): it reads its arguments now
            assert spare.proc.stdin is not None
            try:
                spare.proc.stdin.write(json.dumps(args[3:]).encode() + b"\n")
                spare.proc.stdin.close()
            except OSError:  # it died waiting: start one the usual way
                spare.proc.wait()
            else:
                self.proc = spare.proc
                return self
        env = {**os.environ, "TMPDIR": self.workdir}
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env
            )
        return self

    @property
    def returncode(self) -> int | None:
        """The child's exit status (negative: the signal that killed it); None while running."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None and self.finished is None:
            self.finished = time.monotonic()
            self._cpu_finished = _children_cpu_s()
        return code

    @property
    def state(self) -> str:
        """``RUNNING``, ``DONE`` or ``FAILED``."""
        code = self.returncode
        return "RUNNING" if code is None else "DONE" if code == 0 else "FAILED"

    def done(self) -> bool:
        """Whether the child has ended."""
        return self.returncode is not None

    def join(self, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` seconds for the child."""
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        self.returncode  # noqa: B018 - records the end time

    def how_it_died(self) -> str | None:
        """``signal 11, SIGSEGV`` or ``exited with status 1: <its error>``; None if it
        ended well or still runs."""
        code = self.returncode
        if not code:
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"signal {-code}, {name}"
        return f"exited with status {code}: {self.last_error_line()}"

    def last_error_line(self) -> str:
        """The last line of the child's stderr that says something (its exception)."""
        try:
            with open(self._stderr_path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self._stderr_path) - _STDERR_TAIL_BYTES))
                lines = fh.read().decode(errors="replace").splitlines()
        except OSError:
            return "no output"
        said = [ln.strip() for ln in lines if ln.strip() and not ln.startswith(" ")]
        return one_line(said[-1]) if said else "no output"

    def inflight(self) -> set[str]:
        """Track IDs the child had marked in flight."""
        try:
            return set(os.listdir(self.inflight_dir))
        except OSError:
            return set()

    def wait(self, *, interval_s: float = 1.0) -> str:
        """Wait for the child.

        Raises
        ------
        BeamJobError
            The child failed; the message says how (signal or exit status and its error).
        """
        while not self.done():
            self.join(interval_s)
        died = self.how_it_died()
        if died:
            raise BeamJobError(
                f"Beam job {self.job_id} failed: the worker process {died}",
                job_id=self.job_id,
                state="FAILED",
            )
        return "DONE"

    @property
    def wall_s(self) -> float:
        """Seconds from start to the end (or to now)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def cpu_s(self) -> float | None:
        """CPU-seconds of the child (once it has ended)."""
        if self._cpu_finished is None:
            return None
        return self._cpu_finished - self._cpu_started

    def cancel(self) -> None:
        """Kill the child (its decoders run in process groups of their own, each bounded by
        its deadline)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        """Remove the work folder (plan, tracks, markers, log); with ``KLIO_VERBOSE``
        set, the child's stderr (Beam's and the decoders' messages) is copied to ours first."""
        if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
            with contextlib.suppress(OSError), open(self._stderr_path, "rb") as fh:
                shutil.copyfileobj(fh, sys.stderr.buffer)
                sys.stderr.flush()
        shutil.rmtree(self.workdir, ignore_errors=True)
