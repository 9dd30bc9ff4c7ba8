"""A local Beam worker process: ``python -m klio_assets.worker --plan plan.json --tracks
tracks.jsonl [Beam options]`` (what :mod:`resources.worker_process` starts).

The same as ``python -m klio_assets.worker.pipeline``, with Beam imported without the
optional parts a local worker never uses (:mod:`klio_assets.worker.beam_imports`): about
120 MB less memory per worker.

``python -m klio_assets.worker --wait`` imports everything first, then reads its arguments
as one JSON list from standard input (and exits quietly at end of input): a launcher starts
it early, so that Python, the engine and Beam are imported while the launcher is still busy
planning the run (:func:`klio_assets.worker.spare.prestart`). Before them, a JSON object
``{"prehash": [uri, ...]}`` names sources to hash while it waits
(:mod:`klio_assets.worker.prehash`).
"""

from __future__ import annotations

from typing import IO


def main() -> None:
    """Import Beam lean, then run the plan given on the command line (or, with ``--wait``,
    on standard input)."""
    import sys  # noqa: PLC0415

    from klio_assets.worker.beam_imports import import_beam_without_extras  # noqa: PLC0415

    import_beam_without_extras()
    from klio_assets.worker.pipeline import run  # noqa: PLC0415 - after the lean import

    if sys.argv[1:] == ["--wait"]:
        args = wait_for_job(sys.stdin)
        if args is None:  # the launcher went away without a job
            return
        run(args)
    else:
        run()


def wait_for_job(lines: IO[str]) -> list[str] | None:
    """Read messages until the job's arguments come: a JSON list; before it, a JSON object
    ``{"prehash": [uri, ...]}`` starts hashing those sources (:mod:`~klio_assets.worker.prehash`),
    which stops when the job comes. None at end of input."""
    import json  # noqa: PLC0415

    from klio_assets.worker import prehash  # noqa: PLC0415

    while True:
        line = lines.readline()
        if not line.strip():
            prehash.stop()
            return None
        message = json.loads(line)
        if isinstance(message, dict):
            prehash.start([str(uri) for uri in message.get("prehash", [])])
            continue
        prehash.stop()
        return [str(arg) for arg in message]


def _leave() -> None:
    """End the process now that the job is finished (its outputs and results are written
    and closed when the pipeline returns).

    A normal interpreter exit would first join the non-daemon thread Beam's gRPC server
    leaves behind to wait out its stop grace, then tear every module down: 0.3-0.5 s after
    the job, which the launcher waits for on every run (``benchmarks/fixed_cost.py``).
    """
    from klio_assets.worker.pipeline import exit_now  # noqa: PLC0415

    exit_now(0)


if __name__ == "__main__":
    main()
    _leave()
