"""A new klio-assets home used by several processes at once, as a user's shell loops and the
daemon do: the first commands create its databases once, registrations never collide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from klio_assets_tests.conftest import _ENV_VARS, cli_json
from klio_assets_tests.support import synth

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("attempt", [1, 2])  # a race: two new homes make a miss unlikely
def test_three_adds_at_once_on_a_new_home_all_succeed(tmp_path, attempt):
    library = tmp_path / "library"
    for i in range(6):
        synth.write(str(library / f"t{i}.wav"), synth.sine(300 + 50 * i, 0.2, 8000), 8000)
    home = tmp_path / f"home{attempt}"
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    env["KLIO_ASSETS_HOME"] = str(home)
    adds = [
        subprocess.Popen(
            [sys.executable, "-m", "klio_assets.cli", "add", str(library)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in adds]
    for code, stderr in outcomes:
        assert code == 0, stderr  # once: "table run_tags already exists", duplicate heads
        assert "Traceback" not in stderr
    status, _ = cli_json("status", home=str(home))
    assert status["tracks"] == 6
