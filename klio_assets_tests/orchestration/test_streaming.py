"""A run reports each track while its Beam job still runs (the real local runner)."""

import logging
import threading
import time
from types import SimpleNamespace

import dagster as dg
import pytest
from klio_assets.resources.beam import BeamRunnerResource

from klio_assets.catalog.database import get_catalog
from klio_assets.orchestration import launch
from klio_assets.orchestration.launcher import BeamPipesClient, TrackRef
from klio_assets.orchestration.registration import register_tracks
from klio_assets.orchestration.reporting import CODE_VERSION_TAG
from klio_assets.orchestration.run import report
from klio_assets.settings import Settings
from klio_assets.worker.plan import RunPlan
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import sample_analyses

ASSET = "waits_for_gate"


@pytest.fixture
def gated_home(home, catalog_tracks, monkeypatch, tmp_path):
    """Two quick tracks and a slow one that waits for a gate file; batches flushed often."""
    monkeypatch.setenv("KLIO_ASSETS_ANALYSES", "klio_assets_tests.support.sample_analyses")
    gate = tmp_path / "gate"
    monkeypatch.setenv(sample_analyses.GATE_ENV, str(gate))
    monkeypatch.setattr(report, "FLUSH_INTERVAL_S", 0.2)
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    tracks = [
        ("fast1", catalog_tracks["wav44"].path),
        ("fast2", catalog_tracks["flac48"].path),
        ("slow", catalog_tracks["ogg32"].path),
    ]
    register_tracks(instance, catalog, tracks)
    yield instance, settings, catalog, gate
    instance.dispose()


def test_finished_tracks_are_materialized_while_the_beam_job_still_runs(gated_home):
    instance, settings, catalog, gate = gated_home
    seen: dict[str, object] = {}
    progress: list[int] = []

    def open_gate_once_reported() -> None:
        """Watch Dagster the way a user watches the UI; open the gate when a quick track is
        green (or give up after a minute, and the test fails)."""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                done = set(instance.get_materialized_partitions(dg.AssetKey(ASSET)))
                if done and "before_gate" not in seen:
                    seen["before_gate"] = done
                    event = instance.get_latest_materialization_event(dg.AssetKey(ASSET))
                    seen["version"] = event.asset_materialization.tags[CODE_VERSION_TAG]
                if done:  # the catalog's ledger follows right after the events
                    missing = catalog.not_materialized(ASSET, seen["version"], sorted(done))
                    if not missing:
                        seen["in_ledger"] = done
                        return
                time.sleep(0.1)
        finally:
            gate.touch()

    opener = threading.Thread(target=open_gate_once_reported, daemon=True)
    opener.start()
    outcome = launch.execute_range(
        instance,
        selected=[ASSET],
        track_ids=["fast1", "fast2", "slow"],
        storage=Storage(settings.storage),
        on_progress=progress.append,
    )
    opener.join(timeout=10)

    assert outcome.success, outcome.error
    before = seen.get("before_gate")
    assert before, "no track was materialized while the Beam job ran"
    assert "slow" not in before and before <= {"fast1", "fast2"}
    assert seen.get("in_ledger"), "the catalog did not record the finished tracks during the job"
    # The run ended after the gate opened: the slow track is reported too.
    assert set(instance.get_materialized_partitions(dg.AssetKey(ASSET))) == {
        "fast1",
        "fast2",
        "slow",
    }
    # Progress and summary come from the run itself (its one results poller).
    assert progress and progress[-1] == 3 and progress == sorted(progress)
    assert outcome.summary["assets"][ASSET] == {"computed": 3}
    assert outcome.summary["run_id"] == outcome.run_id


class _EndlessJob:
    """A Beam job that never ends by itself; records being cancelled."""

    job_id = "job-1"

    def __init__(self):
        self.cancelled = False

    def done(self):
        return self.cancelled

    def join(self, timeout_s):
        time.sleep(min(timeout_s, 0.01))

    def cancel(self):
        self.cancelled = True


def test_closing_the_result_stream_cancels_the_beam_job(tmp_path, monkeypatch):
    """What an interrupted Dagster run does to the stream (``contextlib.closing`` in the run)."""
    job = _EndlessJob()
    launched = {}

    def fake_launch(self, build, *, job_name, labels=None):
        launched.update(job_name=job_name, labels=labels)
        return job

    monkeypatch.setattr(BeamRunnerResource, "launch", fake_launch)
    context = SimpleNamespace(
        run_id="run-1",
        selected_asset_keys={dg.AssetKey("loudness")},
        log=logging.getLogger("test"),
    )
    plan = RunPlan(run_id="run-1", storage_root=str(tmp_path), analyses={}, selected=[])
    client = BeamPipesClient(BeamRunnerResource(poll_interval_s=0.01), Storage(str(tmp_path)))
    stream = client.run(context, plan, [TrackRef("t1", "/a.wav"), TrackRef("t2", "/b.wav")])
    assert next(stream) == []  # submitted; nothing written yet
    assert launched["labels"]["klio-batch-size"] == "2"
    assert launched["labels"]["dagster-run-id"] == "run-1"
    stream.close()
    assert job.cancelled
