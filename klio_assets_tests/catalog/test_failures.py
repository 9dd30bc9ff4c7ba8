"""Remembered failures: a broken file is held (not retried) until its file or the analysis'
version changes; transient failures are retried with backoff, a bounded number of times.

A real SQLite catalog and real files; no Dagster."""

import os
import time

from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.failures import (
    RetryPolicy,
    forget_failures,
    held_failures,
    remember_failures,
    remembered,
)
from klio_assets.errors import DecodeError, StorageError, TransientStorageError, is_permanent
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.records import AnalysisOutcome, Status, TrackResult
from klio_assets.worker.storage import source_stat


def _planned(name: str, version: str = "v1") -> PlannedAnalysis:
    return PlannedAnalysis(name, "m", "a", version, {}, ".json")


def _setup(tmp_path):
    catalog = get_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    paths = {}
    for track_id in ("bad", "flaky", "good"):
        path = tmp_path / f"{track_id}.wav"
        path.write_bytes(b"not audio at all\n" * 10)
        paths[track_id] = str(path)
    catalog.register(list(paths.items()))
    return catalog, paths


def _result(track_id, path, name, outcome):
    return TrackResult(track_id, path, {name: outcome}, source_stat=source_stat(path))


def test_errors_are_classified_permanent_or_transient():
    assert is_permanent(DecodeError("t", "/a.wav", "not audio"))
    assert is_permanent(ValueError("a bug in the analysis"))
    assert is_permanent(FileNotFoundError("gone"))
    assert not is_permanent(StorageError("disk full"))
    assert not is_permanent(TransientStorageError("503"))
    assert not is_permanent(TimeoutError())
    assert not is_permanent(MemoryError())
    outcome = AnalysisOutcome.failed("x", StorageError("disk full"))
    assert outcome.permanent is False and outcome.transient
    assert AnalysisOutcome.from_dict(outcome.to_dict()).permanent is False
    assert "permanent" not in AnalysisOutcome(Status.COMPUTED).to_dict()


def test_a_permanent_failure_is_held_until_the_file_or_the_version_changes(tmp_path):
    catalog, paths = _setup(tmp_path)
    planned = {"loudness": _planned("loudness"), "beats": _planned("beats")}
    policy = RetryPolicy(max_transient_retries=3, backoff_s=0)
    failure = AnalysisOutcome.failed("track 'bad': /bad.wav: not audio", DecodeError("b", "u", "p"))
    remember_failures(
        catalog,
        "loudness",
        version="v1",
        run_id="r1",
        results=[_result("bad", paths["bad"], "loudness", failure)],
    )
    held = held_failures(catalog, planned, ["loudness", "beats"], None, policy)
    assert held == {
        "loudness": {"bad": "failed earlier: track 'bad': /bad.wav: not audio"},
        "beats": {},
    }
    # downstream of a held analysis: held too, naming the upstream
    with_lineage = held_failures(
        catalog, planned, ["beats"], ["bad", "good"], policy, inputs={"beats": ["loudness"]}
    )
    assert with_lineage["beats"]["bad"].startswith("failed earlier: upstream 'loudness' failed")
    # another version of the analysis: tried again
    bumped = {**planned, "loudness": _planned("loudness", "v2")}
    assert held_failures(catalog, bumped, ["loudness"], None, policy) == {"loudness": {}}
    # the file touched: tried again
    stat = os.stat(paths["bad"])
    os.utime(paths["bad"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert held_failures(catalog, planned, ["loudness"], None, policy) == {"loudness": {}}


def test_a_transient_failure_backs_off_then_stops_after_the_bound(tmp_path):
    catalog, paths = _setup(tmp_path)
    planned = {"loudness": _planned("loudness")}
    outcome = AnalysisOutcome.failed("track 'flaky': disk full", StorageError("disk full"))

    def fail_once() -> None:
        remember_failures(
            catalog,
            "loudness",
            version="v1",
            run_id="r",
            results=[_result("flaky", paths["flaky"], "loudness", outcome)],
        )

    fail_once()
    policy = RetryPolicy(max_transient_retries=2, backoff_s=100.0)
    now = time.time()
    waiting = held_failures(catalog, planned, ["loudness"], None, policy, now=now)
    assert "transient, try 1; tried again after" in waiting["loudness"]["flaky"]
    later = held_failures(catalog, planned, ["loudness"], None, policy, now=now + 101)
    assert later == {"loudness": {}}  # the backoff is over: retried
    fail_once()
    assert remembered(catalog, "loudness")["flaky"].attempts == 2
    assert held_failures(catalog, planned, ["loudness"], None, policy, now=now + 150)["loudness"]
    assert not held_failures(catalog, planned, ["loudness"], None, policy, now=now + 301)[
        "loudness"
    ]  # 200 s after the second failure: doubled backoff over
    fail_once()  # the third failure: past max_transient_retries=2 retries
    gave_up = held_failures(catalog, planned, ["loudness"], None, policy, now=now + 10**6)
    assert "gave up after 3 tries" in gave_up["loudness"]["flaky"]
    # --retry-failed forgets; a success forgets too
    forget_failures(catalog, ["loudness"], ["flaky"])
    assert remembered(catalog, "loudness") == {}
    fail_once()
    catalog.record_outcomes("loudness", version="v1", run_id="r2", failed={}, succeeded=["flaky"])
    assert remembered(catalog, "loudness") == {}


def test_a_track_with_any_transient_failure_is_not_remembered_as_permanent(tmp_path):
    catalog, paths = _setup(tmp_path)
    result = TrackResult(
        "good",
        paths["good"],
        {
            "downsampled_audio": AnalysisOutcome.failed("write failed", StorageError("full")),
            "beats": AnalysisOutcome.failed("upstream 'downsampled_audio' failed: write failed"),
        },
        source_stat=source_stat(paths["good"]),
    )
    remember_failures(catalog, "beats", version="v1", run_id="r", results=[result])
    assert remembered(catalog, "beats")["good"].permanent is False
