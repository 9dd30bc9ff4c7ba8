"""A worker process that dies (segfault, OOM killer) costs only the track it was analysing.

Through ``klio-assets run``: the local Beam job runs in a child process; when it dies, the
tracks it had in flight fail with the signal in their reason, a new child computes the rest,
the good tracks are materialized in Dagster and the Dagster run ends (FAILURE), not STARTED.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest

from klio_assets_tests import synth
from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e
ENV = {"KLIO_ASSETS_ANALYSES": "klio_assets_tests.sample_analyses"}


def _library(folder) -> list[str]:
    folder.mkdir()
    ids = ["good0", "segv1", "good2", "good3"]
    for i, t in enumerate(ids):
        synth.write(str(folder / f"{t}.wav"), synth.sine(300 + 40 * i, 1.0, 8000), 8000)
    return ids


def test_a_segfaulting_track_fails_alone_and_the_rest_of_the_batch_is_recorded(tmp_path):
    ids = _library(tmp_path / "library")
    home = str(tmp_path / "home")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**ENV, "TMPDIR": str(scratch)}  # the worker process's work folder goes there
    run_cli("add", str(tmp_path / "library"), home=home, env=env, check=True)
    out, done = cli_json("run", "crashes_on_segv", home=home, env=env, expect_code=1)
    assert out["assets"]["crashes_on_segv"] == {"computed": 3, "failed": 1}, done.stderr
    reason = out["tracks"]["segv1"]["crashes_on_segv"]["reason"]
    assert reason == (
        f"track 'segv1': {tmp_path / 'library' / 'segv1.wav'}: the worker process died "
        "(signal 11, SIGSEGV) while analysing this track"
    )
    status, _ = cli_json("status", home=home, env=env, expect_code=None)
    assert "SIGSEGV" in str(status)

    instance = dg.DagsterInstance.from_config(home)
    try:
        runs = instance.get_runs()
        assert runs and {r.status for r in runs} == {dg.DagsterRunStatus.FAILURE}
        done_keys = instance.get_materialized_partitions(dg.AssetKey("crashes_on_segv"))
        assert done_keys == {t for t in ids if t != "segv1"}
    finally:
        instance.dispose()
    outputs = os.path.join(home, "outputs")
    left = [n for _, _, files in os.walk(outputs) for n in files if ".tmp-" in n]
    assert not left
    assert not os.listdir(scratch)  # the worker's plan, track list and markers removed


def test_worker_deaths_are_bounded_and_every_track_ends_with_a_reason(tmp_path):
    """Five crashing tracks: the worker is relaunched at most 3 times, then the tracks still
    without a result fail saying so; the run ends (exit 1) instead of retrying forever."""
    library = tmp_path / "library"
    library.mkdir()
    ids = [f"segv{i}" for i in range(5)]
    for i, t in enumerate(ids):
        synth.write(str(library / f"{t}.wav"), synth.sine(200 + 30 * i, 0.5, 8000), 8000)
    home = str(tmp_path / "home")
    run_cli("add", str(library), home=home, env=ENV, check=True)
    out, done = cli_json("run", "crashes_on_segv", home=home, env=ENV, expect_code=1)
    assert out["assets"]["crashes_on_segv"] == {"failed": 5}, done.stderr
    reasons = [out["tracks"][t]["crashes_on_segv"]["reason"] for t in ids]
    assert all("the worker process died" in r and "SIGSEGV" in r for r in reasons), reasons
    assert any("died 4 times in this run" in r for r in reasons), reasons
