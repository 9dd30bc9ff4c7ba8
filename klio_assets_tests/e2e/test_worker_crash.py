"""A worker process that dies (segfault, OOM killer) costs only the track it was analysing.

Through ``klio-assets run``: the local Beam job runs in a child process; when it dies, the
tracks it had in flight fail with the signal in their reason, a new child computes the rest,
the good tracks are materialized in Dagster and the Dagster run ends (FAILURE), not STARTED.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from klio_assets_tests.conftest import _ENV_VARS, cli_json, run_cli
from klio_assets_tests.support import sample_analyses, synth

pytestmark = pytest.mark.e2e
ENV = {"KLIO_ASSETS_ANALYSES": "klio_assets_tests.support.sample_analyses"}


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
    # A good track whose output was committed just before the crash, but not its result, is
    # found done by the next worker: computed by this run all the same, never recomputed.
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


def _worker_of(parent: int) -> int | None:
    """PID of the Beam worker process started by ``parent``, if any."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"-m\0klio_assets.worker" in cmdline:
            return int(pid)
    return None


def test_the_worker_process_does_not_outlive_a_killed_run(tmp_path):
    """``kill -9`` of ``klio-assets run`` alone (not its group): its worker process exits by
    itself instead of going on writing into the run's folders."""
    library = tmp_path / "library"
    library.mkdir()
    synth.write(str(library / "stall0.wav"), synth.sine(300, 1.0, 8000), 8000)
    home = str(tmp_path / "home")
    env = {**ENV, "KLIO_ASSETS_TRACK_TIMEOUT": "300"}
    run_cli("add", str(library), home=home, env=env, check=True)
    full_env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    full_env.update(env, KLIO_ASSETS_HOME=home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "klio_assets.cli", "run", "hangs_on_stall"],
        env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        worker = None
        while worker is None:
            assert proc.poll() is None and time.monotonic() < deadline, "no worker process"
            time.sleep(0.1)
            worker = _worker_of(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{worker}") and _state(worker) != "Z":
            assert time.monotonic() < deadline, "the worker process outlived its run"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_death_with_several_tracks_in_flight_costs_only_the_one_that_caused_it(tmp_path):
    """Two lanes: a slow good track is in flight when the other lane's track crashes. The
    tracks in flight are retried one at a time: the crash names its track, the slow one is
    computed."""
    library = tmp_path / "library"
    library.mkdir()
    ids = ["slow0", "segv1", "good2"]
    for i, t in enumerate(ids):
        synth.write(str(library / f"{t}.wav"), synth.sine(250 + 50 * i, 1.0, 8000), 8000)
    home = str(tmp_path / "home")
    env = {**ENV, "KLIO_ASSETS_BEAM_OPTIONS": "--direct_num_workers=2"}
    run_cli("add", str(library), home=home, env=env, check=True)
    out, done = cli_json("run", "crashes_on_segv", home=home, env=env, expect_code=1)
    assert out["assets"]["crashes_on_segv"] == {"computed": 2, "failed": 1}, done.stderr
    assert out["tracks"]["segv1"]["crashes_on_segv"]["reason"].endswith(
        "the worker process died (signal 11, SIGSEGV) while analysing this track"
    )
    assert out["tracks"]["slow0"]["crashes_on_segv"]["status"] == "computed"


def test_outputs_a_dead_worker_committed_but_never_reported_count_as_computed(tmp_path):
    """The worker dies while a track's first analysis is committed and its second is running:
    the next worker finds that output and does not recompute it, and the run reports it as
    computed (this run made it), not skipped. An output made before the run stays skipped."""
    library = tmp_path / "library"
    library.mkdir()
    for i, t in enumerate(["held0", "segv1", "made2"]):
        synth.write(str(library / f"{t}.wav"), synth.sine(250 + 50 * i, 1.0, 8000), 8000)
    home = str(tmp_path / "home")
    env = {
        **ENV,
        "KLIO_ASSETS_BEAM_OPTIONS": "--direct_num_workers=2",
        sample_analyses.GATE_ENV: str(tmp_path / "held"),
    }
    run_cli("add", str(library), home=home, env=env, check=True)
    cli_json("run", "rms_level", "--tracks", "made2", home=home, env=env, expect_code=0)

    out, done = cli_json("run", "rms_level", "crashes_after_rms", home=home, env=env, expect_code=1)
    tracks = out["tracks"]
    assert tracks["held0"]["rms_level"]["status"] == "computed", done.stderr
    assert tracks["held0"]["crashes_after_rms"]["status"] == "computed", done.stderr
    assert tracks["segv1"]["crashes_after_rms"]["reason"].endswith(
        "the worker process died (signal 11, SIGSEGV) while analysing this track"
    )
    # segv1's rms_level finished before the crash: its failure says so, and the next run
    # reports the kept output without computing it again
    assert tracks["segv1"]["rms_level"]["reason"].endswith(
        "this analysis had finished and its output is kept: the next run reports it without "
        "computing it again"
    )
    assert tracks["made2"]["crashes_after_rms"]["status"] == "computed"
    assert "made2" not in tracks or tracks["made2"].get("rms_level", {}).get("status") in (
        None,
        "skipped",
    )
    again, done = cli_json("run", "rms_level", home=home, env=env, expect_code=0)
    assert again["tracks"]["segv1"]["rms_level"]["status"] == "skipped", done.stderr
    assert again["assets"]["rms_level"] == {"skipped": 3}  # nothing computed again
