"""The outcome of ``klio-assets run`` in figures, and the assets it selects (no Dagster, no run)."""

import pytest

from klio_assets.errors import ParameterError
from klio_assets.orchestration.invocation import Invocation, RunOutcome
from klio_assets.orchestration.run_report import RunReport, group_failures
from klio_assets.orchestration.selection import catalog_tables, select_assets
from klio_assets.settings import Settings

JSON_KEYS = {
    "assets",
    "runs",
    "failed",
    "tracks",
    "already_materialized",
    "audio_hours",
    "computed_audio_hours",
    "beam_seconds",
    "beam_cpu_seconds",
    "wall_seconds",
    "errors",
    "catalog",
    "failed_earlier",
    "back_in_window",
}


def _summary(statuses):
    """A run's summary with one record per (track, analysis) and these statuses."""
    detail = {t: {n: {"status": s} for n, s in per.items()} for t, per in statuses.items()}
    for per in detail.values():
        for record in per.values():
            if record["status"] == "failed":
                record["reason"] = "cannot decode"
    counts = {}
    for per in statuses.values():
        for name, status in per.items():
            counts.setdefault(name, {}).setdefault(status, 0)
            counts[name][status] += 1
    return {
        "assets": counts,
        "tracks_detail": detail,
        "audio_hours": 0.5,
        "computed_audio_hours": 0.25,
        "beam_seconds": 10.0,
        "beam_cpu_seconds": None,
    }


def test_a_run_that_died_before_its_summary_counts_every_track_failed():
    summary = _summary({"a": {"loudness": "computed"}, "b": {"loudness": "failed"}})
    invocation = Invocation(
        selected=["loudness"],
        already_done={"loudness": ["z"]},
        runs=[
            RunOutcome(run_id="r1", success=False, track_ids=["a", "b"], summary=summary),
            RunOutcome(run_id="r2", success=False, track_ids=["c", "d", "e"], error="pod lost"),
        ],
        catalog={"track_features": {"status": "failed", "reason": "no rows"}},
    )
    report = RunReport.from_invocation(invocation, ["loudness"])
    assert dict(report.rows["loudness"]) == {"skipped": 1, "computed": 1, "failed": 1 + 3}
    assert report.failed == {("loudness", "b"): "cannot decode"}
    assert report.errors == ["run r2: pod lost"]
    assert report.failures == 4 + 1  # four failed tracks, one failed catalog table
    data = report.to_json()
    assert set(data) == JSON_KEYS and data["back_in_window"] is None  # no track came back
    assert data["failed"] == {"loudness/b": "cannot decode"}
    assert data["runs"] == ["r1", "r2"] and data["beam_cpu_seconds"] is None
    assert report.statuses == ["computed", "skipped", "failed"]


def test_all_done_reports_skipped_and_nothing_failed():
    invocation = Invocation(selected=["loudness", "beats"], already_done={"loudness": ["a"]})
    report = RunReport.from_invocation(invocation, invocation.selected)
    assert report.failures == 0
    assert report.statuses == ["skipped"]
    assert report.to_json()["assets"] == {"loudness": {"skipped": 1}, "beats": {}}


def test_unknown_assets_are_refused_with_the_known_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("KLIO_ASSETS_HOME", str(tmp_path))
    settings = Settings.from_env()
    with pytest.raises(ParameterError, match=r"unknown assets \['loudnes'\]; known: .*loudness"):
        select_assets(settings, ["loudness", "loudnes"])
    chosen = select_assets(settings, ["beats", "track_features"])
    assert (chosen.selected, chosen.tables, chosen.named) == (["beats"], ["track_features"], True)
    everything = select_assets(settings, [])
    assert everything.selected == list(everything.planned) and not everything.named
    assert catalog_tables(["loudness"]) == ["track_features"]
    assert catalog_tables(["fingerprint"]) == ["duplicate_groups", "track_features"]


def test_failures_are_grouped_one_line_per_track_with_the_root_reason():
    failed = {
        "downsampled_audio": {"t7": "track 't7': /a/notes.wav: not audio"},
        "loudness": {
            "t7": "track 't7': /a/notes.wav: not audio",
            "t9": "track 't9': /a/x.flac: cut",
        },
        "beats": {
            "t7": "upstream 'downsampled_audio' failed for this track: track 't7': /a/notes.wav: not audio"
        },
        "mfcc": {"t7": "failed earlier: track 't7': /a/notes.wav: not audio"},
    }
    tracks = group_failures(failed)
    assert [t.track_id for t in tracks] == ["t7", "t9"]
    seven = tracks[0]
    assert seven.reason == "/a/notes.wav: not audio"
    assert seven.analyses == ["downsampled_audio", "loudness", "beats", "mfcc"]
    assert seven.names() == "downsampled_audio, loudness, beats, +1"
    assert not seven.earlier
    upstream_only = group_failures({"beats": failed["beats"]})[0]
    assert upstream_only.reason == "/a/notes.wav: not audio"


def test_failed_earlier_counts_apart_and_does_not_fail_the_command():
    invocation = Invocation(
        selected=["loudness", "beats"],
        already_done={"loudness": ["a"], "beats": ["a"]},
        failed_earlier={
            "loudness": {"b": "failed earlier: track 'b': /x/b.wav: not audio"},
            "beats": {"b": "failed earlier: upstream 'loudness' failed for this track: nope"},
        },
    )
    report = RunReport.from_invocation(invocation, invocation.selected)
    assert report.failures == 0
    assert dict(report.rows["loudness"]) == {"skipped": 1, "failed_earlier": 1}
    assert report.statuses == ["skipped", "failed_earlier"]
    [track] = report.failed_tracks
    assert (track.track_id, track.earlier, track.analyses) == ("b", True, ["loudness", "beats"])
    assert track.reason == "/x/b.wav: not audio"
    data = report.to_json()
    assert set(data) == JSON_KEYS and data["failed"] == {}
    assert data["failed_earlier"]["beats/b"].startswith("failed earlier: ")


def test_run_lists_every_failed_track_up_to_the_cap_and_says_how_to_see_the_rest():
    from rich.console import Console

    from klio_assets.cli import render

    names = [f"a{i}" for i in range(13)]
    failed = {n: {f"t{k}": f"track 't{k}': /f{k}.wav: broken" for k in range(25)} for n in names}
    console = Console(width=80, record=True)
    render.print_failed_tracks(group_failures(failed), console=console)
    lines = console.export_text().splitlines()
    assert sum(line.startswith("failed t") for line in lines) == render.FAILED_TRACKS_SHOWN
    assert all("+10)" in line for line in lines if line.startswith("failed t"))
    assert "5 more failed tracks not shown" in lines[-1] and "status --failed" in lines[-1]
