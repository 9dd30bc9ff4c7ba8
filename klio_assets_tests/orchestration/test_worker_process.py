"""The local worker process started ahead of its job (the fixed cost of a run)."""

import os

from klio_assets.resources.worker_process import WorkerProcessJob

from klio_assets.analyses import downsampled_audio
from klio_assets.worker import spare as worker_spare
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.spare import prestart
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import synth

_ARGS = ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def _plan(root: str) -> RunPlan:
    return RunPlan(
        run_id="r1",
        storage_root=root,
        analyses=plan_analyses([downsampled_audio]),
        selected=["downsampled_audio"],
        lanes=2,
    )


def test_a_prestarted_worker_process_runs_the_next_job(tmp_path):
    """``prestart`` imports Beam in a waiting child; the next job hands it its arguments
    instead of starting a process of its own."""
    tracks = []
    for i in range(2):
        path = synth.write(str(tmp_path / f"a{i}.wav"), synth.sine(440 + i, 1.0, 44100), 44100)
        tracks.append({"track_id": f"a{i}", "uri": path})
    root = str(tmp_path / "out")
    prestart()
    spare = worker_spare._spare
    assert spare is not None
    job = WorkerProcessJob(_plan(root).to_json(), tracks, _ARGS, job_name="t").start()
    try:
        assert job.proc is spare.proc  # adopted, not started anew
        assert job.wait(interval_s=0.2) == "DONE"
        folder = Layout(Storage(root)).results_folder("r1")
        assert sorted(os.listdir(folder)) == ["a0.json", "a1.json"]
    finally:
        job.cleanup()
    assert worker_spare._spare is None


def test_an_unused_prestarted_worker_process_exits_and_leaves_nothing():
    prestart()
    spare = worker_spare._spare
    assert spare is not None
    worker_spare._spare = None
    spare.discard()
    assert spare.proc.returncode == 0  # it read the end of its input and left
    assert not os.path.exists(spare.workdir)
