"""What every command shares: the deployment's settings, refusals, how to call the CLI again."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import threading
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


def leave(code: int | str | None) -> NoReturn:
    """Exit with ``code`` (as :func:`sys.exit` reads it) once the output is flushed and the
    exit handlers have run, without the interpreter's teardown.

    Freeing every module and object one by one takes ~40 ms after an all-done ``klio-assets
    run`` (numpy, pydantic, click: ``benchmarks/rerun.py``) and 0.25 s on one core after a
    command that imported Dagster, after its output is written: on a local run's critical
    path (``benchmarks/balance.py``). The local worker process leaves the same way. Where a
    thread that is not a daemon still runs, Python's normal exit waits for it as always.

    Parameters
    ----------
    code : int, str or None
        The exit status; a string is printed on stderr and exits with 1 (as ``sys.exit``).
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others):
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - handlers run, as at a normal exit (spare worker)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: Python's own exit says 120
            status = status or 120
    os._exit(status)


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
