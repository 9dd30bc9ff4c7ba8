"""What every command shares: the deployment's settings, refusals, how to call the CLI again."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from typing import NoReturn

import click

from klio_assets.cli.text import shown
from klio_assets.errors import KlioAssetsError
from klio_assets.orchestration.home import prepare_environment
from klio_assets.settings import Settings
from klio_assets.worker.decoder_log import VERBOSE_ENV


def load_settings() -> Settings:
    """The deployment's settings, with Dagster pointed at ``KLIO_ASSETS_HOME`` (created).

    A refused ``KLIO_ASSETS_*`` value exits 2 with one line naming it (no traceback).

    Returns
    -------
    Settings
    """
    try:
        settings = Settings.from_env()
    except KlioAssetsError as exc:  # a bad KLIO_ASSETS_* value: one line, no traceback
        fail(str(exc))
    prepare_environment(settings)
    return settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``klio-assets: MESSAGE`` on stderr and exit with ``code`` (2: a usage error).

    Parameters
    ----------
    message : str
        What was refused and, where possible, the fix.
    code : int
        The exit status.
    """
    click.echo(f"klio-assets: {shown(message)}", err=True)
    sys.exit(code)


def started_as_cli() -> bool:
    """Whether this process is the command itself (``klio-assets`` or ``python -m
    klio_assets.cli``), not a program calling it in-process (click's ``CliRunner``, a script).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "klio_assets.cli.__main__":
        return True
    return os.path.basename(sys.argv[0]) == "klio-assets"


def exit_now(code: int) -> NoReturn:
    """Exit with ``code``; in a process started as the CLI, without the interpreter's teardown.

    Tearing down the modules a command imported (numpy, pydantic, click...) takes ~40 ms, a
    sixth of an all-done ``klio-assets run`` (``benchmarks/rerun.py``). For commands that leave
    nothing running behind them (no worker process, no open database session). Called
    in-process (:func:`started_as_cli` is False) or from another command (``demo`` invokes
    ``run``), it raises :class:`SystemExit` as usual.

    Parameters
    ----------
    code : int
        The exit status.
    """
    ctx = click.get_current_context(silent=True)
    # a command invoked by another (``demo`` runs ``run``): the caller has more to say
    nested = ctx is not None and ctx.parent is not None and ctx.parent.parent is not None
    if nested or not started_as_cli():
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say it to
            stream.flush()
    os._exit(code)


def self_command() -> str:
    """How to call this CLI again: ``klio-assets`` if that is on PATH, else its path.

    Returns
    -------
    str
    """
    exe = os.path.abspath(sys.argv[0])
    if os.path.basename(exe) != "klio-assets":
        return "klio-assets"
    found = shutil.which("klio-assets")
    if found and os.path.realpath(found) == os.path.realpath(exe):
        return "klio-assets"
    relative = os.path.relpath(exe)
    return relative if not relative.startswith("..") else exe


def quiet_third_party(*, verbose: bool) -> None:
    """Keep third-party chatter off the CLI's output unless ``verbose``.

    Python warnings (Dagster's ``SupersessionWarning``, deprecations) are ignored, here and in
    child processes (``PYTHONWARNINGS``); the root logger gets a handler that drops records
    below ERROR, so a library's ``logging.warning(...)`` at import time (Beam's "apitools not
    found") neither prints through Python's last-resort handler nor configures logging with
    ``basicConfig``. What decoders print on fd 2 is captured per track in the worker
    (:mod:`klio_assets.worker.decoder_log`) and kept in the track's metadata.

    Parameters
    ----------
    verbose : bool
        Show all of it (and set ``KLIO_VERBOSE=1``: the worker and its child processes,
        :data:`~klio_assets.worker.decoder_log.VERBOSE_ENV`, read it too).
    """
    if verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        os.environ[VERBOSE_ENV] = "1"
        return
    warnings.simplefilter("ignore")
    os.environ["PYTHONWARNINGS"] = "ignore"
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.ERROR)
        root.addHandler(handler)
