"""A local worker process started ahead of its job.

A worker process spends about a second importing Python, the engine and Beam before it reads
its plan. ``klio-assets run`` calls :func:`prestart` before it imports Dagster and plans the
run, so that both processes import at once; the next
:class:`~resources.worker_process.WorkerProcessJob` of the process adopts the
waiting worker (:func:`take_spare`) and writes its arguments to its standard input. This
module imports neither Dagster nor Beam, so that the worker starts before either is imported.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence


class _Spare:
    """A worker process started ahead of its job (``python -m klio_assets.worker --wait``),
    importing Python, the engine and Beam while the launcher plans the run."""

    def __init__(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="klio-worker-")
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.environ = _worker_environ()
        self.parent = os.getpid()
        self.adopted = False
        with open(self.stderr_path, "wb") as err:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-m", "klio_assets.worker", "--wait"],
                stdin=subprocess.PIPE, stdout=err, stderr=err,
                env={**os.environ, "TMPDIR": self.workdir},
            )  # fmt: skip

    def usable(self) -> bool:
        """Still waiting, started by this process, with the environment of now."""
        return (
            self.proc.poll() is None
            and self.parent == os.getpid()
            and self.environ == _worker_environ()
        )

    def discard(self) -> None:
        """End it (its end of input makes it exit) and remove its folder, unless a job has
        adopted it."""
        if self.adopted:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


_spare: _Spare | None = None
#: Most bytes of a hint: within a pipe's buffer (64 KiB on Linux), so that writing it never
#: waits for the worker to finish its imports (the launcher is on the run's critical path).
#: A second's hashing on the idle core is ~400 tracks anyway; this is ~600 paths.
HINT_BYTES = 60_000


def _worker_environ() -> dict[str, str]:
    """The environment a worker process depends on (it imports nothing of Dagster)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}


def prestart() -> None:
    """Start the next local worker process now (a no-op if one is waiting).

    A worker process spends about a second importing Python, the engine and Beam before it
    reads its plan; a launcher that calls this before it plans the run (imports Dagster,
    opens the instance, builds the job) overlaps the two. The next :class:`WorkerProcessJob`
    of this process adopts it; unused, it exits when this process ends.
    """
    global _spare
    if _spare is None or not _spare.usable():
        if _spare is not None:
            _spare.discard()
        _spare = _Spare()
        atexit.register(_spare.discard)


def prehash(uris: Sequence[str]) -> bool:
    """Have the waiting worker process hash these sources while it waits for its job
    (:mod:`klio_assets.worker.prehash`): a hint, for the tracks the job will most likely
    check first.

    Returns
    -------
    bool
        Whether a waiting worker took the hint (none is waiting: nothing happens).
    """
    if _spare is None or not _spare.usable() or not uris:
        return False
    try:
        assert _spare.proc.stdin is not None
        _spare.proc.stdin.write(hint_line(uris))
        _spare.proc.stdin.flush()
    except OSError:  # it has gone: the job starts a worker of its own
        return False
    return True


def hint_line(uris: Sequence[str]) -> bytes:
    """The hint for :func:`prehash`: the first of ``uris`` that fit :data:`HINT_BYTES`."""
    kept: list[str] = []
    size = len(b'{"prehash": []}\n')
    for uri in uris:
        size += len(json.dumps(uri)) + 2  # ASCII-escaped: characters are bytes
        if size > HINT_BYTES:
            break
        kept.append(uri)
    return json.dumps({"prehash": kept}).encode() + b"\n"


def take_spare() -> _Spare | None:
    """The waiting worker process, if it can run the next job (then no longer spare)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and not spare.usable():
        spare.discard()
        return None
    if spare is not None:
        spare.adopted = True
    return spare
