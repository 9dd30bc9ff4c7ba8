"""The one place that decides "already done" (``klio_assets.worker.done``), and its callers."""

import os

import pytest

from klio_assets.worker import done
from klio_assets.worker.execution import Engine
from klio_assets.worker.plan import Layout, PlannedAnalysis, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import sample_analyses


def _planned(version="1", extension="json", name="rms_level"):
    return PlannedAnalysis(
        name=name, module="m", attr="a", version=version, params={}, extension=extension
    )


def _write_outputs(storage, planned, track_ids):
    layout = Layout(storage)
    for track_id in track_ids:
        storage.write_json(layout.output_uri(planned, track_id), {}, durable=False)


@pytest.mark.parametrize("count", [5, done.LISTING_MIN_TRACKS + 44])
def test_existing_outputs_are_those_of_the_current_version(tmp_path, count):
    """The same answer whether found by ``exists`` (few tracks) or by listing shards (many)."""
    storage = Storage(str(tmp_path))
    current, older = _planned("2"), _planned("1")
    ids = [f"track{i}" for i in range(count)]
    _write_outputs(storage, current, ids[::2])
    _write_outputs(storage, older, ids)  # an older version does not count
    other = _planned("2", name="beats")
    _write_outputs(storage, other, ids)  # nor another analysis
    stray = Layout(storage).output_uri(current, ids[1])
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(f"{stray}.part", "w") as fh:  # nor a file that is not the output
        fh.write("{}")
    assert done.existing_outputs(storage, current, ids) == set(ids[::2])
    assert done.existing_outputs(storage, current, ids[1::2]) == set()
    assert done.existing_outputs(storage, current, []) == set()


def test_done_tracks_need_the_record_and_the_output(tmp_path):
    storage = Storage(str(tmp_path))
    a, b = _planned(name="a"), _planned(name="b")
    _write_outputs(storage, a, ["t1", "t2"])
    _write_outputs(storage, b, ["t1", "t3"])
    recorded = {"a": ["t1", "t3"], "b": ["t1", "t2", "t3"]}
    found = done.done_tracks(storage, {"a": a, "b": b}, recorded)
    assert found == {"a": {"t1"}, "b": {"t1", "t3"}}  # t2 of a: no record; t3 of a: no output
    assert done.tracks_with_work(["t3", "t2", "t1"], ["a", "b"], found) == ["t3", "t2"]
    assert done.done_analyses(storage, {"a": a, "b": b}, ["b", "a"], "t3") == ["b"]


def test_the_engine_skips_exactly_what_is_done(tmp_path):
    planned = plan_analyses([sample_analyses.rms_level, sample_analyses.frame_energy])
    storage = Storage(str(tmp_path / "out"))
    _write_outputs(storage, planned["rms_level"], ["t1"])
    plan = RunPlan(
        run_id="r",
        storage_root=storage.root,
        analyses=planned,
        selected=["rms_level", "frame_energy"],
    )
    ref = {"track_id": "t1", "uri": str(tmp_path / "missing.wav"), "order": 0}
    task = Engine(plan).check(ref)
    assert task["analyses"]["rms_level"].status == "skipped"
    assert task["analyses"]["rms_level"].uri == Layout(storage).output_uri(
        planned["rms_level"], "t1"
    )
    assert task["analyses"]["frame_energy"].status == "failed"  # pending, then no source
    forced = Engine(RunPlan(**{**plan.__dict__, "force": True})).check(ref)
    assert forced["analyses"]["rms_level"].status == "failed"  # force: nothing is done
    assert os.path.exists(task["analyses"]["rms_level"].uri)
