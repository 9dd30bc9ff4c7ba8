"""A local Beam worker process: ``python -m klio_assets.worker --plan plan.json --tracks
tracks.jsonl [Beam options]`` (what :mod:`klio_assets.resources.worker_process` starts).

The same as ``python -m klio_assets.worker.pipeline``, with Beam imported without the
optional parts a local worker never uses (:mod:`klio_assets.worker.beam_imports`): about
120 MB less memory per worker.
"""

from __future__ import annotations


def main() -> None:
    """Import Beam lean, then run the plan given on the command line."""
    from klio_assets.worker.beam_imports import import_beam_without_extras  # noqa: PLC0415

    import_beam_without_extras()
    from klio_assets.worker.pipeline import run  # noqa: PLC0415 - after the lean import

    run()


if __name__ == "__main__":
    main()
