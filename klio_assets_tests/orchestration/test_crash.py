"""Crash safety: a real ``klio-assets run`` killed with SIGKILL in the middle of its Beam job,
then run again. Nothing partial or corrupt is ever visible under an output's name, nothing
committed before the kill is computed again, and every track ends computed exactly once.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import soundfile as sf

from klio_assets.worker.audio import exact_length
from klio_assets_tests.conftest import _ENV_VARS, cli_json, run_cli
from klio_assets_tests.support import synth

pytestmark = pytest.mark.e2e
N_TRACKS = 30
SECONDS = 60.0
RATE = 48000
ANALYSES = ("source_audio", "downsampled_audio")  # named: other analyses may be installed


def committed_outputs(outputs: str) -> list[str]:
    """Files under the output root that carry an output's name (temporaries start with '.')."""
    found = []
    for path in glob.glob(os.path.join(outputs, "*", "v*", "[0-9a-f][0-9a-f]", "*")):
        if not os.path.basename(path).startswith("."):
            found.append(path)
    return sorted(found)


def temporaries(outputs: str) -> list[str]:
    """Temporary files next to outputs and content-index entries (not the runs' scratch)."""
    found = glob.glob(os.path.join(outputs, "**", ".*.tmp-*"), recursive=True)
    return [p for p in found if "/_runs/" not in p]


def content_index(outputs: str) -> list[str]:
    """Entries of the per-version content index (committed the same way)."""
    return glob.glob(os.path.join(outputs, "*", "v*", "_content", "*", "[!.]*"))


def check_output(path: str) -> None:
    """Read an output completely; raises if it is partial or corrupt."""
    if path.endswith(".flac"):
        y, rate = sf.read(path, dtype="float32")
        assert rate == 22050 and y.ndim == 1
        assert len(y) == exact_length(int(SECONDS * RATE), RATE, 22050), f"{path} is partial"
    else:
        with open(path) as fh:
            facts = json.load(fh)
        assert facts["frames"] == int(SECONDS * RATE) and facts["sample_rate"] == RATE


def wait_for_group_to_exit(pgid: int, timeout_s: float = 60.0) -> None:
    """Wait until no process of group ``pgid`` runs (zombies left unreaped count as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                running.append(pid)
        if not running:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of the killed run still running: {running}")


def test_run_killed_midway_leaves_only_whole_outputs_and_a_rerun_finishes_the_rest(tmp_path):
    library = tmp_path / "library"
    for i in range(N_TRACKS):  # distinct content: no sharing between tracks
        synth.write(str(library / f"t{i:03d}.flac"), synth.sine(200 + 13 * i, SECONDS, RATE), RATE)
    home = str(tmp_path / "home")
    outputs = os.path.join(home, "outputs")
    run_cli("add", str(library), home=home, check=True)

    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    env["KLIO_ASSETS_HOME"] = home
    proc = subprocess.Popen(
        [sys.executable, "-m", "klio_assets.cli", "run", *ANALYSES, "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while len(committed_outputs(outputs)) < N_TRACKS // 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "the run produced no outputs"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    wait_for_group_to_exit(proc.pid)  # as a user rerunning after a crash: its workers are gone

    survivors = committed_outputs(outputs)
    assert N_TRACKS // 2 <= len(survivors) < 2 * N_TRACKS, "killed too late to test anything"
    for path in survivors:
        check_output(path)  # no partial or corrupt file under an output's name
    temporaries_after_kill = len(temporaries(outputs))
    for path in content_index(outputs):
        with open(path) as fh:
            assert set(json.load(fh)) == {"track_id", "uri"}
    before = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in survivors}

    rerun, _ = cli_json("run", *ANALYSES, home=home)
    for name in ("source_audio", "downsampled_audio"):
        counts = rerun["assets"][name]
        assert counts.get("failed", 0) == 0
        assert counts.get("computed", 0) + counts.get("skipped", 0) == N_TRACKS
    final = committed_outputs(outputs)
    assert len(final) == 2 * N_TRACKS
    for path in final:
        check_output(path)
    # what was committed before the kill was kept, not computed a second time
    assert {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in survivors} == before
    computed_twice = [
        (name, t)
        for t, per in rerun["tracks"].items()
        for name, rec in per.items()
        if rec["status"] == "computed" and rec["uri"] in before
    ]
    assert computed_twice == []
    # temporary files of the killed run are never taken for outputs, and the rerun swept those
    # next to outputs (the killed run's scratch records under _runs/ are not outputs)
    assert not [p for p in final if ".tmp-" in p]
    assert temporaries(outputs) == []

    # bookkeeping: every track materialized exactly once per analysis, nothing failed or missing
    status, _ = cli_json("status", home=home)
    for name in ("source_audio", "downsampled_audio"):
        assert status["assets"][name] == {"materialized": N_TRACKS, "missing": 0, "failed": {}}
    os.environ["DAGSTER_HOME"] = home
    with dg.DagsterInstance.from_config(home) as instance:
        for name in ("source_audio", "downsampled_audio"):
            records = instance.fetch_materializations(
                dg.AssetKey(name), limit=10 * N_TRACKS
            ).records
            partitions = [r.asset_materialization.partition for r in records]
            assert sorted(partitions) == sorted(set(partitions)) and len(partitions) == N_TRACKS
    print(
        f"\nkilled with {len(survivors)} of {2 * N_TRACKS} outputs committed, "
        f"{temporaries_after_kill} temporary files left by the kill and swept, 0 corrupt outputs"
    )
