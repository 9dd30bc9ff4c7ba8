"""Shared fixtures: a fresh klio-assets home (a real Dagster instance on SQLite), generated audio."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from klio_assets.settings import variable_names
from klio_assets_tests.support import synth

#: Every variable the settings read (from the model, so a new setting is cleared too), plus
#: the Dagster instance the CLI points at: a test sees only what it sets.
_ENV_VARS = (*variable_names(), "DAGSTER_HOME")


def _is_setting(name: str) -> bool:
    return name.upper() in _ENV_VARS  # the settings match names regardless of case


#: librosa's numba functions compile once per cold cache (20-30 CPU-s): the whole suite, and
#: every CLI or Dagster process it starts, shares one persistent cache.
NUMBA_CACHE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "numba"
)
os.environ.setdefault("NUMBA_CACHE_DIR", NUMBA_CACHE_DIR)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> str:
    """Generated audio shared by the whole session (read-only for tests)."""
    return str(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="session")
def catalog_tracks(audio_dir) -> dict[str, synth.Track]:
    """The standard generated catalog (see :func:`synth.make_catalog`)."""
    return synth.make_catalog(os.path.join(audio_dir, "catalog"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> str:
    """A fresh KLIO_ASSETS_HOME with the environment the CLI would set up."""
    for name in [k for k in os.environ if _is_setting(k)]:
        monkeypatch.delenv(name)
    path = tmp_path / "home"
    monkeypatch.setenv("KLIO_ASSETS_HOME", str(path))
    from klio_assets.orchestration.launch import FAST_BOOKKEEPING_ENV, prepare_environment
    from klio_assets.settings import Settings

    for name in FAST_BOOKKEEPING_ENV:
        monkeypatch.delenv(name, raising=False)
    prepare_environment(Settings.from_env())
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    for name, value in FAST_BOOKKEEPING_ENV.items():
        monkeypatch.setenv(name, value)
    return str(path)


def run_cli(
    *args: str,
    home: str,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: int = 600,
):
    """Run ``klio-assets ARGS`` in a subprocess with ``home``; return the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
    full_env["KLIO_ASSETS_HOME"] = home
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "klio_assets.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"klio-assets {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        )
    return done


def cli_json(*args: str, home: str, env: dict[str, str] | None = None, expect_code: int | None = 0):
    """Run the CLI with ``--json`` and parse its stdout."""
    done = run_cli(*args, "--json", home=home, env=env)
    if expect_code is not None:
        assert done.returncode == expect_code, (
            f"exit {done.returncode}:\n{done.stderr}\n{done.stdout}"
        )
    return json.loads(done.stdout), done
