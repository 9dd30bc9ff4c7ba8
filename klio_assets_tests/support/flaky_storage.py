"""An object store that fails the way real ones do, for retry tests: fsspec's in-memory file
system behind ``memory://`` with faults injected into uploads and downloads.

Faults are rules ``(operation, path substring, error factory, times)``: the first ``times``
calls of ``put_file`` or ``get_file`` on a matching path raise the error (``times=None``:
every call). Every call is counted, so a test can check how often an operation was tried.
The engine, Storage, fsspec and the Beam runner above it are the real ones.
"""

from __future__ import annotations

import collections
import importlib
import threading
from collections.abc import Callable

from fsspec.implementations.memory import MemoryFileSystem


class HttpError(Exception):
    """What gcsfs raises for an HTTP error answer (it carries ``code``)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code} {message}")
        self.code = code


class FlakyMemoryFileSystem(MemoryFileSystem):
    """``memory://`` with injected faults (see the module docstring)."""

    store: dict = {}
    pseudo_dirs = [""]
    rules: list = []
    calls: collections.Counter = collections.Counter()
    _lock = threading.Lock()

    def _maybe_fail(self, op: str, path: str) -> None:
        with self._lock:
            self.calls[(op, path)] += 1
            for rule in self.rules:
                rule_op, fragment, factory, left = rule
                if rule_op == op and fragment in path and (left is None or left > 0):
                    if left is not None:
                        rule[3] = left - 1
                    raise factory()

    def put_file(self, lpath, rpath, *args, **kwargs):
        self._maybe_fail("put", self._strip_protocol(rpath))
        return super().put_file(lpath, rpath, *args, **kwargs)

    def get_file(self, rpath, lpath, *args, **kwargs):
        self._maybe_fail("get", self._strip_protocol(rpath))
        return super().get_file(rpath, lpath, *args, **kwargs)


def install(monkeypatch, rules: list[tuple[str, str, Callable[[], Exception], int | None]]) -> type:
    """Serve ``memory://`` from :class:`FlakyMemoryFileSystem` with ``rules`` for this test."""
    registry = importlib.import_module("fsspec.registry")
    FlakyMemoryFileSystem.store.clear()
    FlakyMemoryFileSystem.calls.clear()
    FlakyMemoryFileSystem.rules = [list(r) for r in rules]
    FlakyMemoryFileSystem.clear_instance_cache()
    monkeypatch.setitem(registry._registry, "memory", FlakyMemoryFileSystem)
    return FlakyMemoryFileSystem
