"""End to end with the real daemon: ``klio-assets dev`` (webserver + dagster-daemon) on a
temporary home with automation running. Audio dropped into the landing folder is registered
by the landing sensor and every selected analysis is materialized, outputs on disk, with no
one launching anything; then a parameter change (a new output version of one analysis) and a
restart: the backfill schedule re-runs exactly that analysis for exactly those tracks."""

import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from klio_assets.analyses import load_analyses
from klio_assets.worker.plan import Layout, plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.automation.test_sensors import drop
from klio_assets_tests.e2e.test_dagster_dev import GRAPH, free_port, graphql
from klio_assets_tests.support.services import stop_process_group

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The analyses the automation runs here (their upstreams come along): small enough for CI.
AUTO = "loudness,spectrogram"
SELECTED = ["source_audio", "downsampled_audio", "loudness", "spectrogram"]
TRACKS = ["land1", "land2"]
TIMEOUT_S = 180


def _start(home, landing, params="{}"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env.update(
        KLIO_ASSETS_HOME=home,
        KLIO_ASSETS_AUTOMATION="running",
        KLIO_ASSETS_LANDING=landing,
        KLIO_ASSETS_LANDING_SETTLE_S="0.5",
        KLIO_ASSETS_SENSOR_INTERVAL_S="1",
        KLIO_ASSETS_AUTO_ANALYSES=AUTO,
        KLIO_ASSETS_BACKFILL_CRON="* * * * *",
        KLIO_ASSETS_PARAMS=params,
    )
    port = free_port()
    log = open(os.path.join(home, f"dev-{port}.log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "klio_assets.cli", "dev", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.log_path = log.name
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if graphql(port, GRAPH)["data"]["assetNodes"]:
                return proc
        except OSError:
            pass
        assert proc.poll() is None, _tail(proc)
        time.sleep(1)
    stop_process_group(proc)
    raise AssertionError("klio-assets dev did not come up in 120 s")


def _outputs_exist(storage, params):
    planned = plan_analyses(load_analyses(), params)
    layout = Layout(storage)
    return all(storage.exists(layout.output_uri(planned[a], t)) for a in SELECTED for t in TRACKS)


def _wait(condition, what, proc):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, _tail(proc)
        time.sleep(1)
    raise AssertionError(f"{what} not done within {TIMEOUT_S} s; dagster dev said:\n{_tail(proc)}")


def _tail(proc):
    with open(proc.log_path, "rb") as fh:
        return fh.read().decode(errors="replace")[-6000:]


def test_daemon_streams_landed_files_through_every_analysis_and_reruns_a_bumped_one(home, tmp_path):
    landing = str(tmp_path / "landing")
    os.makedirs(landing)
    storage = Storage(os.path.join(home, "outputs"))
    instance = dg.DagsterInstance.get()

    proc = _start(home, landing)
    try:
        started = time.monotonic()
        for i, track_id in enumerate(TRACKS):  # different audio: no content sharing between them
            drop(landing, f"{track_id}.wav", seconds=2.0, rate=22050, freq=330.0 * (i + 1))

        def all_materialized():
            instance.get_materialized_partitions  # noqa: B018 - fresh reads below
            return all(
                set(TRACKS) <= set(instance.get_materialized_partitions(dg.AssetKey(a)))
                for a in SELECTED
            ) and _outputs_exist(storage, {})

        _wait(all_materialized, "landing -> every analysis materialized", proc)
        print(
            f"\nlanding -> all {len(SELECTED)} analyses materialized: {time.monotonic() - started:.1f} s"
        )
        _wait(lambda: _finished_since(instance, 0), "the landing run to finish", proc)
        runs = instance.get_runs()
        assert len(runs) == 1, [r.tags for r in runs]  # one fused run for the tick's batch
        assert {k.to_user_string() for k in runs[0].asset_selection} == set(SELECTED)
        assert (
            runs[0].status == dg.DagsterRunStatus.SUCCESS and runs[0].tags["klio/computed"] == "8"
        )
        assert all(
            analysis not in {k.to_user_string() for k in runs[0].asset_selection}
            for analysis in ("beats", "mfcc")
        )
    finally:
        stop_process_group(proc)

    counts_before = {a: _materialization_count(instance, a) for a in SELECTED}
    bumped = '{"spectrogram": {"n_fft": 1024}}'
    restarted = time.time()
    proc = _start(home, landing, params=bumped)
    try:
        _wait(
            lambda: (
                _outputs_exist(storage, {"spectrogram": {"n_fft": 1024}})
                and _finished_since(instance, restarted)
            ),
            "backfill of the bumped analysis",
            proc,
        )
    finally:
        stop_process_group(proc)
    new_runs = [
        r
        for r in instance.get_runs()
        if r.tags.get("klio/trigger") and _created(instance, r) > restarted
    ]
    assert new_runs, "no run after the restart"
    assert {k.to_user_string() for r in new_runs for k in r.asset_selection} == {"spectrogram"}
    assert sum(int(r.tags.get("klio/computed", 0)) for r in new_runs) == len(TRACKS)  # each once
    counts_after = {a: _materialization_count(instance, a) for a in SELECTED}
    assert counts_after == {
        **counts_before,
        "spectrogram": counts_before["spectrogram"] + len(TRACKS),
    }


def _created(instance, run):
    return instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()


def _finished_since(instance, since):
    runs = [r for r in instance.get_runs() if _created(instance, r) > since]
    return bool(runs) and all(r.is_finished for r in runs)


def _materialization_count(instance, asset):
    return len(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)
