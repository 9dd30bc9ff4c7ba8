"""The local worker process started ahead of its job (the fixed cost of a run)."""

import json
import os
import time

from klio_assets.resources.worker_process import WorkerProcessJob

from klio_assets.analyses import downsampled_audio
from klio_assets.worker import spare as worker_spare
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.records import TrackResult
from klio_assets.worker.spare import prestart
from klio_assets.worker.storage import Storage, hash_file
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


def test_a_prestarted_worker_hashes_hinted_sources_and_the_job_gets_current_hashes(
    tmp_path,
):
    """The hint (``spare.prehash``) only saves work: a source rewritten after the hint is
    hashed again, and every result carries the hash of the bytes the job read."""
    tracks = []
    for i in range(3):
        path = synth.write(str(tmp_path / f"h{i}.wav"), synth.sine(300 + i, 1.0, 44100), 44100)
        tracks.append({"track_id": f"h{i}", "uri": path})
    time.sleep(1.1)  # older than prehash.RECENT_S
    prestart()
    assert worker_spare.prehash([t["uri"] for t in tracks])
    time.sleep(1.0)  # the worker imports, then hashes while it waits
    synth.write(tracks[2]["uri"], synth.sine(900, 1.0, 44100), 44100)  # rewritten since
    root = str(tmp_path / "out")
    job = WorkerProcessJob(_plan(root).to_json(), tracks, _ARGS, job_name="t").start()
    try:
        assert job.wait(interval_s=0.2) == "DONE"
        folder = Layout(Storage(root)).results_folder("r1")
        for track in tracks:
            with open(os.path.join(folder, f"{track['track_id']}.json")) as fh:
                result = TrackResult.from_dict(json.load(fh))
            assert result.content_hash == hash_file(track["uri"])
    finally:
        job.cleanup()


def test_a_hint_without_a_waiting_worker_does_nothing():
    worker_spare._spare = None
    assert not worker_spare.prehash(["/nowhere.flac"])


def test_a_hint_fits_the_pipe_so_the_launcher_never_waits_for_the_worker():
    uris = [f"/music/{i:06d}/" + "x" * 80 + ".flac" for i in range(2000)]
    line = worker_spare.hint_line(uris)
    assert len(line) <= worker_spare.HINT_BYTES
    kept = json.loads(line)["prehash"]
    assert kept == uris[: len(kept)] and 400 < len(kept) < 2000
    assert json.loads(worker_spare.hint_line(uris[:3]))["prehash"] == uris[:3]
