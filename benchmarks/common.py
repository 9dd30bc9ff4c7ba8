"""Pieces shared by the benchmarks: fresh homes on SQLite or PostgreSQL, tiny WAV clips,
timing of chosen functions, sensor ticks as the daemon calls them.

The scripts put the repository root and this folder on ``sys.path`` (``klio_assets_tests``
is not installed), then ``from common import ...``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import soundfile as sf

from klio_assets.settings import Settings

SAMPLE_RATE = 44_100
CLIP_SECONDS = 0.05
#: Settings a fresh home must not inherit from the calling shell.
KLIO_VARS = ("KLIO_ASSETS_HOME", "KLIO_ASSETS_STORAGE", "KLIO_ASSETS_CATALOG", "DAGSTER_HOME")


def write_clips(folder: str, n: int) -> list[str]:
    """``n`` distinct 0.05-s mono WAVs (a different tone and noise each: no content sharing)."""
    os.makedirs(folder, exist_ok=True)
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        y = 0.3 * np.sin(2 * np.pi * (110.0 + i) * t) + 0.05 * rng.standard_normal(t.size)
        path = os.path.join(folder, f"clip-{i:06d}.wav")
        sf.write(path, y.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def touch_files(folder: str, prefix: str, n: int) -> None:
    """``n`` empty ``.wav`` files named ``<prefix>-<i>.wav`` (never decoded)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        with open(os.path.join(folder, f"{prefix}-{i:07d}.wav"), "wb"):
            pass


def fresh_home(
    backend: str,
    workdir: str,
    *,
    postgres: Any = None,
    name: str = "home",
    extra_env: dict[str, str] | None = None,
) -> Settings:
    """A new ``KLIO_ASSETS_HOME`` under ``workdir/<backend>-<name>`` on ``sqlite`` (Dagster's
    SQLite and a SQLite catalog) or ``postgres`` (new databases on ``postgres``, a
    :class:`klio_assets_tests.support.postgres.PostgresServer`), made current in ``os.environ``."""
    from klio_assets.orchestration import launch

    home = os.path.join(workdir, f"{backend}-{name}")
    os.makedirs(home)
    for var in KLIO_VARS:
        os.environ.pop(var, None)
    os.environ["KLIO_ASSETS_HOME"] = home
    os.environ.update(extra_env or {})
    if backend == "postgres":
        if postgres is None:
            raise ValueError("the postgres backend needs a running server")
        db = name.replace("-", "_")
        postgres.create_database(f"dagster_{db}")
        with open(os.path.join(home, "dagster.yaml"), "w") as fh:  # before the instance exists
            fh.write(postgres.dagster_yaml(f"dagster_{db}"))
        os.environ["KLIO_ASSETS_CATALOG"] = postgres.create_database(f"catalog_{db}")
    elif backend != "sqlite":
        raise ValueError(f"unknown backend {backend!r}")
    settings = Settings.from_env()
    launch.prepare_environment(settings)
    return settings


class PhaseTimer:
    """Wall time and calls of chosen functions (patched in this process while timing)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextlib.contextmanager
    def wrap(self, owner: Any, attr: str, label: str) -> Iterator[None]:
        original = inspect.getattr_static(owner, attr)  # the plain function, even if inherited
        own = attr in vars(owner)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, timed)
        try:
            yield
        finally:
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)

    def wrap_all(self, targets: list[tuple[Any, str, str]]) -> contextlib.ExitStack:
        """Wrap every ``(owner, attribute, label)``; undone when the returned stack closes."""
        stack = contextlib.ExitStack()
        for owner, attr, label in targets:
            stack.enter_context(self.wrap(owner, attr, label))
        return stack

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def sensor_tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None):
    """Seconds and result of one evaluation of sensor ``name``, as the daemon calls it."""
    sensor = defs.resolve_sensor_def(name)
    started = time.perf_counter()
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
    return time.perf_counter() - started, result


def add_run_arguments(parser: Any, *, registered: int) -> None:
    """``--registered``, ``--run-tracks``, ``--backends`` and ``--keep``, shared by the scripts."""
    parser.add_argument("--registered", type=int, default=registered, help="tracks registered")
    parser.add_argument("--run-tracks", type=int, default=1000, help="tracks in the run")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")


def checked_backends(parser: Any, args: Any) -> list[str]:
    """The backends asked for, after checking the arguments of :func:`add_run_arguments`."""
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(backends) - {"sqlite", "postgres"}:
        parser.error(f"unknown backends {sorted(unknown)}")
    if not 0 < args.run_tracks <= args.registered:
        parser.error("need 0 < --run-tracks <= --registered")
    return backends
