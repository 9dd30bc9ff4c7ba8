"""A broken file fails once, is remembered, and is not retried forever; dry runs are plans.

What a user starts: the ``klio-assets`` CLI on a fresh home (a real Dagster instance on
SQLite, the real local Beam runner), with a folder holding three broken files: a text file
named ``.wav``, a truncated FLAC and a file over the duration limit.
"""

import json
import os

import dagster as dg
import pytest

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.support import synth

pytestmark = pytest.mark.e2e

BROKEN = ["cut", "long", "notes"]
LIMITS = {"KLIO_ASSETS_MAX_DURATION": "3"}


def _library(folder) -> None:
    folder.mkdir()
    rate = 22050
    for i in range(2):
        synth.write(str(folder / f"good{i}.wav"), synth.sine(330.0 + 110 * i, 1.0, rate), rate)
    (folder / "notes.wav").write_text("not audio, just notes\n" * 40)
    full = synth.write(str(folder.parent / "full.flac"), synth.sine(440.0, 2.0, rate), rate)
    data = open(full, "rb").read()
    (folder / "cut.flac").write_bytes(data[: len(data) // 3])
    synth.write(str(folder / "long.wav"), synth.sine(220.0, 5.0, rate), rate)


def _runs(home: str) -> int:
    with dg.DagsterInstance.from_config(home) as instance:
        return instance.get_runs_count()


def _run(home, *args, env=None, expect_code=0):
    """``klio-assets run downsampled_audio ARGS --json``, and whether it imported Dagster."""
    out, done = cli_json(
        "run",
        "downsampled_audio",
        *args,
        home=home,
        env={**LIMITS, "PYTHONPROFILEIMPORTTIME": "1", **(env or {})},
        expect_code=expect_code,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return out, "dagster" in imported


def test_broken_files_fail_once_then_are_held_until_their_file_or_version_changes(tmp_path):
    library, home = tmp_path / "library", str(tmp_path / "home")
    _library(library)
    run_cli("add", str(library), home=home, check=True)

    first = run_cli("run", "downsampled_audio", home=home, env={**LIMITS, "COLUMNS": "80"})
    assert first.returncode == 1, first.stderr
    failed_lines = [line for line in first.stderr.splitlines() if line.startswith("failed ")]
    assert sorted(line.split()[1] for line in failed_lines) == BROKEN  # one line per track
    assert "more" not in first.stderr
    runs_after_first = _runs(home)

    # The second run launches nothing, answers without Dagster, and exits 0.
    again, used_dagster = _run(home)
    assert again["runs"] == [] and not used_dagster
    assert again["assets"]["downsampled_audio"] == {"skipped": 2, "failed_earlier": 3}
    assert sorted(k.split("/")[1] for k in again["failed_earlier"]) == BROKEN
    assert "looks like text" in again["failed_earlier"]["downsampled_audio/notes"]
    assert "max_duration_s" in again["failed_earlier"]["downsampled_audio/long"]
    human = run_cli("run", "downsampled_audio", home=home, env=LIMITS)
    assert human.returncode == 0 and human.stderr.count("failed earlier ") >= 3
    assert _runs(home) == runs_after_first

    # A dry run is a plan: no Dagster run recorded, the counts of the real run.
    synth.write(str(library / "good2.wav"), synth.sine(550.0, 1.0, 22050), 22050)
    run_cli("add", str(library / "good2.wav"), home=home, check=True)
    plan, _ = _run(home, "--dry-run")
    assert plan["runs"] == [] and _runs(home) == runs_after_first
    assert plan["assets"]["downsampled_audio"] == {
        "skipped": 2,
        "failed_earlier": 3,
        "would_compute": 1,
    }
    dry_human = run_cli(
        "run", "downsampled_audio", "--dry-run", home=home, env={**LIMITS, "COLUMNS": "80"}
    )
    assert "1 to run" in dry_human.stderr and "3 failed earlier" in dry_human.stderr
    assert "…" not in dry_human.stderr  # nothing cut at 80 columns
    real, _ = _run(home)
    assert real["assets"]["downsampled_audio"] == {"skipped": 2, "failed_earlier": 3, "computed": 1}
    assert _runs(home) == runs_after_first + 1

    # Touching one broken file retries exactly that one.
    stat = os.stat(library / "notes.wav")
    os.utime(library / "notes.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched, _ = _run(home, expect_code=1)
    assert list(touched["tracks"]) == ["notes"] and list(touched["failed"]) == [
        "downsampled_audio/notes"
    ]
    held_again, _ = _run(home)
    assert held_again["runs"] == []

    # --retry-failed retries all of them; a version bump retries every track.
    retried, _ = _run(home, "--retry-failed", expect_code=1)
    assert sorted(retried["tracks"]) == BROKEN
    bumped, _ = _run(
        home,
        env={"KLIO_ASSETS_PARAMS": json.dumps({"downsampled_audio": {"sample_rate": 16000}})},
        expect_code=1,
    )
    assert sorted(bumped["tracks"]) == sorted([*BROKEN, "good0", "good1", "good2"])
    assert bumped["assets"]["downsampled_audio"] == {"computed": 3, "failed": 3}

    listed, _ = cli_json("status", "--failed", home=home)
    assert sorted(t["track_id"] for t in listed["failed"]) == BROKEN
    assert all(t["analyses"] == ["downsampled_audio"] and t["reason"] for t in listed["failed"])


def test_a_transient_failure_is_retried_on_the_next_run_and_stops_after_the_bound(tmp_path):
    library, home = tmp_path / "library", str(tmp_path / "home")
    library.mkdir()
    synth.write(str(library / "song.wav"), synth.sine(440.0, 1.0, 22050), 22050)
    run_cli("add", str(library), home=home, check=True)
    # A real storage failure: the analysis' output folder is a file, so the write fails.
    blocker = os.path.join(home, "outputs", "downsampled_audio")
    os.makedirs(os.path.dirname(blocker), exist_ok=True)
    with open(blocker, "w") as fh:
        fh.write("in the way")
    # The backoff (60 s by default) is the automation's: `run` tries again at once.
    env = {"KLIO_ASSETS_MAX_TRANSIENT_RETRIES": "1"}

    first, _ = _run(home, env=env, expect_code=1)
    assert "Not a directory" in first["failed"]["downsampled_audio/song"]
    second, _ = _run(home, env=env, expect_code=1)  # transient: tried again
    assert list(second["tracks"]) == ["song"] and len(second["runs"]) == 1
    third, used_dagster = _run(home, env=env)  # past the bound: held, nothing launched
    assert third["runs"] == [] and not used_dagster
    assert "gave up after 2 tries" in third["failed_earlier"]["downsampled_audio/song"]

    os.remove(blocker)
    still, _ = _run(home, env=env)
    assert still["runs"] == []
    fixed, _ = _run(home, "--retry-failed", env=env)
    assert fixed["assets"]["downsampled_audio"] == {"computed": 1}
