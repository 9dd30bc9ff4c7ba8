"""A lane's groups run on one analysis thread, each within its time limit.

The engine here only records where and when it runs (the real engine under a real Beam job,
an analysis that never returns included, is in ``test_limits.py``).
"""

import threading
from types import SimpleNamespace

import pytest

from klio_assets.worker.records import Status, TrackResult
from klio_assets.worker.watchdog import WATCHDOG_FACTOR, AnalysisThread


class _RecordingEngine:
    """Analyzes a group by noting its thread; a group named ``stuck`` waits for ``release``."""

    def __init__(self, timeout_s: float):
        self.limits = SimpleNamespace(timeout_s=timeout_s)
        self.threads: dict[str, threading.Thread] = {}
        self.release = threading.Event()

    def analyze(self, group):
        track_id = group[0]["track_id"]
        self.threads[track_id] = threading.current_thread()  # kept: no reuse of idents
        if track_id == "stuck":
            self.release.wait(30)
        if track_id == "broken":
            raise RuntimeError("engine bug")
        return [TrackResult(track_id=t["track_id"], uri=t["uri"], analyses={}) for t in group]


def _group(track_id):
    return [{"track_id": track_id, "uri": f"/music/{track_id}.flac", "analyses": {},
             "pending": ["loudness"]}]  # fmt: skip


def test_the_groups_of_a_lane_share_one_analysis_thread():
    engine = _RecordingEngine(timeout_s=30)
    lane = AnalysisThread(engine)
    try:
        for track_id in ("a", "b", "c"):
            assert [r.track_id for r in lane.analyze(_group(track_id))] == [track_id]
    finally:
        lane.close()
    assert len(set(engine.threads.values())) == 1
    assert threading.current_thread() not in engine.threads.values()


def test_a_group_past_its_limit_fails_its_tracks_and_the_next_group_gets_a_new_thread():
    engine = _RecordingEngine(timeout_s=0.05)
    lane = AnalysisThread(engine)
    try:
        (result,) = lane.analyze(_group("stuck"))
        outcome = result.analyses["loudness"]
        assert outcome.status is Status.FAILED and outcome.error == "TrackTimeout"
        assert not outcome.permanent
        limit = f"{WATCHDOG_FACTOR * 0.05:g} s"
        assert outcome.reason == (
            f"track 'stuck': /music/stuck.flac: analyses did not finish within {limit} "
            f"({WATCHDOG_FACTOR:g} x timeout_s); the worker gave up on them"
        )
        assert [r.track_id for r in lane.analyze(_group("after"))] == ["after"]
        assert engine.threads["after"] is not engine.threads["stuck"]
    finally:
        engine.release.set()
        lane.close()


def test_an_engine_error_is_raised_in_the_lane_and_the_thread_goes_on():
    engine = _RecordingEngine(timeout_s=30)
    lane = AnalysisThread(engine)
    try:
        with pytest.raises(RuntimeError, match="engine bug"):
            lane.analyze(_group("broken"))
        assert [r.track_id for r in lane.analyze(_group("next"))] == ["next"]
    finally:
        lane.close()
    assert engine.threads["next"] is engine.threads["broken"]
