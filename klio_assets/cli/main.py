"""``klio_assets.cli.main:main``, kept importable for scripts, tests and benchmarks, and
:func:`console_main`, what the ``klio-assets`` command and ``python -m klio_assets.cli`` run.

The commands live in :mod:`klio_assets.cli.app` and its sibling modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from klio_assets.cli.app import main
from klio_assets.cli.common import leave
from klio_assets.orchestration.selection import planned_analyses as _planned

__all__ = ["_planned", "console_main", "main"]


def console_main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run one ``klio-assets`` command, then exit without tearing the interpreter down
    (:func:`~klio_assets.cli.common.leave`).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: the command line's).
    """
    try:
        main.main(args=list(argv) if argv is not None else None, prog_name="klio-assets")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    leave(code)


if __name__ == "__main__":
    console_main()
