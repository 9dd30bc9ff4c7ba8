"""Typed per-track records: the JSON at the worker -> orchestrator boundary stays as it was."""

import json

import pytest

from klio_assets.worker.records import AnalysisOutcome, Status, TrackResult

#: Records as the workers wrote them before the records were typed (one per kind of outcome).
WRITTEN = {
    "track_id": "a1",
    "uri": "/music/a1.flac",
    "content_hash": "abc",
    "analyses": {
        "computed": {
            "status": "computed",
            "uri": "/out/x/a1.json",
            "version": "v1",
            "seconds": 0.25,
            "duration_s": 2.0,
            "sample_rate": 44100,
            "channels": 2,
            "metadata": {"lufs": -14.2, "decoder": "ffmpeg (libsndfile failed)"},
        },
        "shared": {"status": "skipped", "uri": "/out/x/a1.json", "shared_from": "a0"},
        "failed": {"status": "failed", "reason": "track 'a1': bad", "error": "DecodeError"},
        "would": {"status": "would_skip", "shared_from": "a0", "uri": "/out/y/a1.npy"},
    },
}


def test_a_track_result_reads_and_writes_the_json_the_workers_write():
    result = TrackResult.from_json(json.dumps(WRITTEN))
    assert result.analyses["failed"].status is Status.FAILED
    assert result.analyses["computed"].metadata == {
        "lufs": -14.2,
        "decoder": "ffmpeg (libsndfile failed)",
    }
    assert result.to_dict() == WRITTEN
    assert json.loads(result.to_json()) == WRITTEN


def test_a_track_without_content_hash_has_no_such_key():
    data = {"track_id": "t", "uri": "u", "analyses": {}}
    assert TrackResult.from_dict(data).to_dict() == data


def test_statuses_are_their_strings_and_know_what_is_done():
    assert Status.COMPUTED == "computed" and json.dumps(Status.SKIPPED) == '"skipped"'
    assert {s for s in Status if s.done} == {Status.COMPUTED, Status.SKIPPED}
    with pytest.raises(ValueError):
        Status("cached")


def test_a_failure_is_one_line_with_the_exception_class():
    outcome = AnalysisOutcome.failed("track 't': x\ny", ValueError("boom"))
    assert outcome.to_dict() == {
        "status": "failed",
        "reason": "track 't': x y",
        "error": "ValueError",
        "permanent": True,  # a new field: an exception in the analysis fails again
    }


def test_describe_puts_standard_facts_first_and_the_rest_under_metadata():
    outcome = AnalysisOutcome(Status.COMPUTED, uri="u")
    outcome.describe({"duration_s": 1.5, "sample_rate": 22050, "channels": 1, "peak": 0.5})
    assert outcome.to_dict() == {
        "status": "computed",
        "uri": "u",
        "duration_s": 1.5,
        "sample_rate": 22050,
        "channels": 1,
        "metadata": {"peak": 0.5},
    }
