"""Lazy librosa: imported only by the analyses that need it, with a persistent numba cache.

librosa's numba functions compile at first use, 20-30 CPU-seconds per cold process; with a
writable, persistent ``NUMBA_CACHE_DIR`` a process loads them in 2-3 s instead. A read-only
install without a cache dir fails outright, so one is always set before librosa is imported.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

_LOCK = threading.Lock()


def numba_cache_dir(environ: dict[str, str] | None = None) -> str:
    """Where numba caches compiled librosa functions.

    ``NUMBA_CACHE_DIR`` if set, else ``$KLIO_ASSETS_HOME/numba-cache``, else
    ``~/.cache/klio-assets/numba``.
    """
    env = os.environ if environ is None else environ
    if env.get("NUMBA_CACHE_DIR"):
        return env["NUMBA_CACHE_DIR"]
    if env.get("KLIO_ASSETS_HOME"):
        return os.path.join(os.path.abspath(env["KLIO_ASSETS_HOME"]), "numba-cache")
    return os.path.join(os.path.expanduser("~"), ".cache", "klio-assets", "numba")


def librosa() -> ModuleType:
    """Import librosa (once per process) after making sure numba can cache."""
    with _LOCK:  # analyses run in threads; the environment must be set before the import
        os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()
        os.makedirs(os.environ["NUMBA_CACHE_DIR"], exist_ok=True)
        import librosa as module  # noqa: PLC0415 - deliberately lazy

    return module
