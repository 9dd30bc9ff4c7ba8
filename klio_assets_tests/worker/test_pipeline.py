"""The worker side on its own: the real Beam local runner, no Dagster (none may be imported)."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
import soundfile as sf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from klio_assets.analyses import downsampled_audio, source_audio
from klio_assets.worker.execution import Engine, estimate_cost
from klio_assets.worker.pipeline import build_pipeline, group_by_content, share_queue
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import sample_analyses, synth

ALL = [
    source_audio,
    downsampled_audio,
    sample_analyses.rms_level,
    sample_analyses.peak_frequency,
    sample_analyses.frame_energy,
    sample_analyses.explodes_on_mono,
    sample_analyses.first_block_only,
]


def run_plan(
    tmp_path,
    tracks,
    selected,
    *,
    run_id="r1",
    force=False,
    dry_run=False,
    root=None,
    analyses=ALL,
    overrides=None,
):
    planned = plan_analyses(analyses, overrides)
    root = root or str(tmp_path / "out")
    plan = RunPlan(
        run_id=run_id,
        storage_root=root,
        analyses=planned,
        selected=selected,
        force=force,
        dry_run=dry_run,
        lanes=2,
    )
    refs = [{"track_id": t.track_id, "uri": t.path} for t in tracks]
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, plan, refs)
    storage = Storage(root)
    folder = Layout(storage).results_folder(run_id)
    results = {n[:-5]: storage.read_json(f"{folder}/{n}") for n in storage.list_names(folder)}
    return results, planned, storage


def statuses(results, name):
    return {t: r["analyses"][name]["status"] for t, r in results.items()}


def test_worker_modules_import_no_dagster():
    code = (
        "import sys, klio_assets, klio_assets.worker.pipeline, klio_assets.worker.execution, "
        "klio_assets.analyses; assert 'dagster' not in sys.modules, sorted(m for m in sys.modules if 'dagster' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_worker_imports_only_the_analyses_its_plan_names(tmp_path):
    """Loading the framework loads no built-in analysis (nor librosa, nor Dagster); an engine
    imports the analyses its plan names and nothing else."""
    code = f"""
import sys
import klio_assets.worker.execution, klio_assets.worker.pipeline
unwanted = ("dagster", "librosa", "klio_assets.analyses", "klio_assets.analyses.stems")
assert not [m for m in unwanted if m in sys.modules], [m for m in unwanted if m in sys.modules]
from klio_assets.worker.execution import Engine
from klio_assets.worker.plan import PlannedAnalysis, RunPlan
planned = PlannedAnalysis(
    name="downsampled_audio", module="klio_assets.analyses.downsampled_audio",
    attr="downsampled_audio", version="1", params={{}}, extension="flac",
)
Engine(RunPlan(run_id="r", storage_root={str(tmp_path)!r},
               analyses={{"downsampled_audio": planned}}, selected=["downsampled_audio"]))
loaded = sorted(m for m in sys.modules if m.startswith("klio_assets.analyses."))
assert loaded == ["klio_assets.analyses.downsampled_audio"], loaded
assert "dagster" not in sys.modules and "librosa" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_pipeline_computes_every_selected_analysis_for_every_track(tmp_path, catalog_tracks):
    tracks = [catalog_tracks[k] for k in ("wav44", "flac48", "ogg32", "mp3", "m4a")]
    selected = ["source_audio", "downsampled_audio", "rms_level", "frame_energy"]
    results, planned, storage = run_plan(tmp_path, tracks, selected)
    assert set(results) == {t.track_id for t in tracks}
    for track in tracks:
        analyses = results[track.track_id]["analyses"]
        assert {analyses[n]["status"] for n in selected} == {"computed"}, analyses
        flac = analyses["downsampled_audio"]["uri"]
        y, sr = sf.read(flac, dtype="float32")
        assert sr == 22050 and y.ndim == 1
        probe = storage.read_json(analyses["source_audio"]["uri"])
        assert len(y) == int(np.floor(probe["frames"] * 22050 / track.sample_rate + 0.5))
        assert synth.dominant_frequency(y, sr) == pytest.approx(track.freq, abs=3.0)
        rms = storage.read_json(analyses["rms_level"]["uri"])["rms"]
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
        energy = np.load(analyses["frame_energy"]["uri"], allow_pickle=False)
        assert energy.dtype == np.float64 and energy.sum() > 0


def test_outputs_land_in_the_documented_layout(tmp_path, catalog_tracks):
    results, planned, storage = run_plan(tmp_path, [catalog_tracks["wav44"]], ["downsampled_audio"])
    uri = results["wav44"]["analyses"]["downsampled_audio"]["uri"]
    version = planned["downsampled_audio"].version
    assert uri == Layout(storage).output_uri(planned["downsampled_audio"], "wav44")
    assert f"/downsampled_audio/v{version}/" in uri and uri.endswith("/wav44.flac")


def test_broken_file_and_buggy_analysis_fail_only_their_own_records(tmp_path, catalog_tracks):
    tracks = [catalog_tracks[k] for k in ("wav44", "ogg32", "broken")]
    results, _, _ = run_plan(tmp_path, tracks, ["downsampled_audio", "explodes_on_mono"])
    assert statuses(results, "downsampled_audio") == {
        "wav44": "computed",
        "ogg32": "computed",
        "broken": "failed",
    }
    assert statuses(results, "explodes_on_mono") == {
        "wav44": "computed",
        "ogg32": "failed",
        "broken": "failed",
    }
    broken = results["broken"]["analyses"]["downsampled_audio"]["reason"]
    assert broken.startswith("track 'broken': cannot decode ") and "broken.mp3" in broken
    assert "looks like text" in broken
    bug = results["ogg32"]["analyses"]["explodes_on_mono"]["reason"]
    assert "track 'ogg32'" in bug and "ogg32.ogg" in bug
    assert "ValueError: mono is not supported" in bug and "sample_analyses.py" in bug


def test_rerun_skips_and_force_recomputes(tmp_path, catalog_tracks):
    tracks = [catalog_tracks["wav44"], catalog_tracks["flac48"]]
    first, _, _ = run_plan(tmp_path, tracks, ["downsampled_audio"], run_id="a")
    uri = first["wav44"]["analyses"]["downsampled_audio"]["uri"]
    mtime = os.stat(uri).st_mtime_ns
    again, _, _ = run_plan(tmp_path, tracks, ["downsampled_audio"], run_id="b")
    assert statuses(again, "downsampled_audio") == {"wav44": "skipped", "flac48": "skipped"}
    skipped = again["wav44"]["analyses"]["downsampled_audio"]
    assert skipped["sample_rate"] == 22050 and skipped["duration_s"] == pytest.approx(2.0)
    assert os.stat(uri).st_mtime_ns == mtime
    forced, _, _ = run_plan(tmp_path, tracks, ["downsampled_audio"], run_id="c", force=True)
    assert statuses(forced, "downsampled_audio") == {"wav44": "computed", "flac48": "computed"}
    assert os.stat(uri).st_mtime_ns != mtime


def test_dry_run_reports_and_writes_no_output(tmp_path, catalog_tracks):
    tracks = [catalog_tracks["wav44"], catalog_tracks["dup"], catalog_tracks["flac48"]]
    run_plan(tmp_path, [catalog_tracks["flac48"]], ["downsampled_audio"], run_id="a")
    results, planned, storage = run_plan(
        tmp_path, tracks, ["downsampled_audio"], run_id="b", dry_run=True
    )
    assert statuses(results, "downsampled_audio") == {
        "wav44": "would_compute",
        "dup": "would_skip",
        "flac48": "would_skip",
    }
    assert results["dup"]["analyses"]["downsampled_audio"]["shared_from"] == "wav44"
    layout = Layout(storage)
    assert not storage.exists(layout.output_uri(planned["downsampled_audio"], "wav44"))
    assert not storage.exists(layout.output_uri(planned["downsampled_audio"], "dup"))


def test_identical_content_is_computed_once_and_shared(tmp_path, catalog_tracks):
    tracks = [catalog_tracks["wav44"], catalog_tracks["dup"]]
    results, _, _ = run_plan(tmp_path, tracks, ["source_audio", "downsampled_audio"])
    assert statuses(results, "downsampled_audio") == {"wav44": "computed", "dup": "skipped"}
    shared = results["dup"]["analyses"]["downsampled_audio"]
    assert shared["shared_from"] == "wav44"
    a, _ = sf.read(results["wav44"]["analyses"]["downsampled_audio"]["uri"])
    b, _ = sf.read(shared["uri"])
    np.testing.assert_array_equal(a, b)
    assert results["dup"]["content_hash"] == results["wav44"]["content_hash"]


def test_content_index_shares_across_runs(tmp_path, catalog_tracks):
    run_plan(tmp_path, [catalog_tracks["wav44"]], ["downsampled_audio"], run_id="a")
    later, _, _ = run_plan(tmp_path, [catalog_tracks["dup"]], ["downsampled_audio"], run_id="b")
    record = later["dup"]["analyses"]["downsampled_audio"]
    assert record["status"] == "skipped" and record["shared_from"] == "wav44"


def test_downstream_analysis_reads_upstream_output(tmp_path, catalog_tracks):
    tracks = [catalog_tracks["wav44"], catalog_tracks["flac48"]]
    results, _, storage = run_plan(tmp_path, tracks, ["downsampled_audio", "peak_frequency"])
    for track in tracks:
        record = results[track.track_id]["analyses"]["peak_frequency"]
        assert record["status"] == "computed"
        assert storage.read_json(record["uri"])["hz"] == pytest.approx(track.freq, abs=3.0)


def test_missing_upstream_fails_with_the_fix_named(tmp_path, catalog_tracks):
    results, _, _ = run_plan(tmp_path, [catalog_tracks["wav44"]], ["peak_frequency"])
    reason = results["wav44"]["analyses"]["peak_frequency"]["reason"]
    assert (
        "upstream 'downsampled_audio' has no output for this track (materialize it first)" in reason
    )


def test_failed_upstream_fails_its_downstream_with_the_cause(tmp_path, catalog_tracks):
    results, _, _ = run_plan(
        tmp_path, [catalog_tracks["broken"]], ["downsampled_audio", "peak_frequency"]
    )
    assert results["broken"]["analyses"]["peak_frequency"]["status"] == "failed"


def test_consumer_that_stops_early_does_not_block_the_shared_decode(tmp_path, catalog_tracks):
    results, _, storage = run_plan(
        tmp_path,
        [catalog_tracks["wav44"]],
        ["first_block_only", "downsampled_audio", "source_audio"],
    )
    analyses = results["wav44"]["analyses"]
    assert {r["status"] for r in analyses.values()} == {"computed"}
    assert (
        storage.read_json(analyses["source_audio"]["uri"])["frames"]
        == catalog_tracks["wav44"].frames
    )


def test_lanes_share_one_queue_and_a_free_lane_takes_the_next_group(tmp_path):
    """Work stealing on a static-splitting runner: every lane gets the same queue, longest
    group first, and claims the next group whenever it is free, so a lane held up by a long
    (or underestimated) group leaves the rest to the others."""
    groups = [[{"track_id": f"t{i}", "cost": float(i)}] for i in range(10)]
    lanes = share_queue(groups, 2, str(tmp_path))
    assert [lane for lane, _ in lanes] == [0, 1]
    busy, free = (queue.claimed() for _, queue in lanes)
    assert next(busy)[0]["track_id"] == "t9"  # the longest first
    assert [g[0]["track_id"] for g in free] == [f"t{i}" for i in range(8, -1, -1)]
    assert list(busy) == []  # each group is claimed once


def test_lanes_that_cannot_see_the_claims_folder_split_the_queue_statically(tmp_path):
    groups = [[{"track_id": f"t{i}", "cost": float(i)}] for i in range(5)]
    lanes = share_queue(groups, 2, str(tmp_path / "elsewhere"))
    taken = [[g[0]["track_id"] for g in queue.claimed()] for _, queue in lanes]
    assert taken == [["t4", "t2", "t0"], ["t3", "t1"]]


def test_cost_estimate_knows_flac_from_wav_and_counts_each_track():
    """libsndfile reports FLAC's codec as PCM_16, like WAV's; FLAC decodes at about half the
    speed, and a 60-minute FLAC measured 8.5-10 CPU-s against 0.045 for a 10-second Vorbis."""
    header = {"sample_rate": 44100, "channels": 2, "decoder": "soundfile", "codec": "PCM_16"}
    hour_flac = estimate_cost({**header, "container": "FLAC", "frames": 3600 * 44100})
    hour_wav = estimate_cost({**header, "container": "WAV", "frames": 3600 * 44100})
    short_vorbis = estimate_cost(
        {**header, "container": "OGG", "codec": "VORBIS", "frames": 10 * 44100}
    )
    assert hour_flac - hour_wav > 2.0  # decoding an hour: 4.8 CPU-s of FLAC, 2.7 of WAV
    assert 150 < hour_flac / short_vorbis < 250  # measured ~200
    assert estimate_cost({**header, "container": "WAV", "frames": 0}) > 0  # every track costs


def test_identical_sources_are_grouped_in_first_seen_order():
    tasks = [
        {"track_id": "a", "content_hash": "h1"},
        {"track_id": "b", "content_hash": "h2"},
        {"track_id": "c", "content_hash": "h1"},
    ]
    groups = group_by_content(tasks)
    assert [[t["track_id"] for t in g] for g in groups] == [["a", "c"], ["b"]]


class _GroupByKeys(PipelineVisitor):
    def __init__(self):
        self.labels = []

    def visit_transform(self, node):
        if isinstance(node.transform, beam.GroupByKey):
            self.labels.append(node.full_label)


def _group_by_keys(plan, refs):
    options = PipelineOptions(["--runner=FnApiRunner"])
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan, refs)
    found = _GroupByKeys()
    pipeline.visit(found)
    return found.labels


def test_a_local_job_regroups_once_before_its_lanes_and_a_distributed_one_by_content(tmp_path):
    """Each regrouping step is a stage of Beam's local runner (~40 ms on one core before the
    first decode): a local job has one, dealing the shared queue to the lanes."""
    plan = RunPlan(
        run_id="r", storage_root=str(tmp_path), analyses=plan_analyses(ALL),
        selected=["downsampled_audio"], lanes=2,
    )  # fmt: skip
    refs = [{"track_id": "t", "uri": str(tmp_path / "t.wav")}]
    assert _group_by_keys(plan, refs) == ["GroupByLane"]
    distributed = _group_by_keys(dataclasses.replace(plan, lanes=0), refs)
    assert "GroupByContent" in distributed and "GroupByLane" not in distributed


def test_a_local_job_checks_its_tracks_on_every_lane(tmp_path, catalog_tracks, monkeypatch):
    """The checks (a content hash over each whole file) run on ``lanes`` threads at once."""
    threads = set()
    check = Engine.check

    def slow_check(self, ref):
        threads.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough that one thread cannot take every track
        return check(self, ref)

    monkeypatch.setattr(Engine, "check", slow_check)
    tracks = [catalog_tracks[k] for k in ("wav44", "flac48", "ogg32")]
    results, _, _ = run_plan(tmp_path, tracks, ["downsampled_audio"])
    assert set(statuses(results, "downsampled_audio").values()) == {"computed"}
    assert len({name for name in threads if name.startswith("klio-check")}) == 2


def test_plan_survives_json_round_trip():
    plan = RunPlan(
        run_id="x",
        storage_root="/tmp/o",
        analyses=plan_analyses(ALL),
        selected=["downsampled_audio"],
    )
    assert RunPlan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["selected"] == ["downsampled_audio"]


_STANDALONE = """
import atexit, sys
atexit.register(lambda: print("teardown", flush=True))
from klio_assets.worker.pipeline import run
run(sys.argv[1:])
print("returned", flush=True)
"""


@pytest.mark.parametrize("early", [True, False])
def test_a_worker_process_ends_once_every_track_has_its_result(tmp_path, catalog_tracks, early):
    """``--exit-when-done``: the process ends as soon as the last result is written, before
    Beam's runner stops its gRPC threads (and without the interpreter's teardown); every
    result is there."""
    root = str(tmp_path / "out")
    plan = RunPlan(
        run_id="r1", storage_root=root, analyses=plan_analyses(ALL),
        selected=["downsampled_audio"], lanes=2,
    )  # fmt: skip
    tracks = [catalog_tracks[k] for k in ("wav44", "ogg32", "broken")]
    (tmp_path / "plan.json").write_text(plan.to_json())
    (tmp_path / "tracks.jsonl").write_text(
        "".join(json.dumps({"track_id": t.track_id, "uri": t.path}) + "\n" for t in tracks)
    )
    args = ["--plan", str(tmp_path / "plan.json"), "--tracks", str(tmp_path / "tracks.jsonl")]
    args += ["--exit-when-done"] if early else []
    done = subprocess.run(
        [sys.executable, "-c", _STANDALONE, *args,
         "--runner=FnApiRunner", "--direct_running_mode=multi_threading",
         "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    storage = Storage(root)
    folder = Layout(storage).results_folder("r1")
    assert sorted(storage.list_names(folder)) == sorted(f"{t.track_id}.json" for t in tracks)
    assert ("returned" in done.stdout) is not early
    assert ("teardown" in done.stdout) is not early
