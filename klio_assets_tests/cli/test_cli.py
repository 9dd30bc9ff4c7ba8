"""End to end: the ``klio-assets`` commands a user types, each in its own process."""

import json
import os
import shutil
import time

import pytest
import soundfile as sf

from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli_home(tmp_path):
    return str(tmp_path / "home")


@pytest.fixture
def library(tmp_path, catalog_tracks):
    """A folder a user would add: a few tracks, a broken one, a duplicate, odd file names."""
    folder = tmp_path / "library"
    folder.mkdir()
    for key in ("wav44", "flac48", "ogg32", "broken", "dup"):
        shutil.copyfile(
            catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path)
        )
    shutil.copyfile(catalog_tracks["wav8k"].path, folder / 'Été "live" l\'été.wav')
    (folder / "notes.txt").write_text("not a track")
    return folder


def test_add_run_status_show_rerun(cli_home, library):
    added = run_cli("add", str(library), home=cli_home, check=True)
    assert "registered 6 new tracks" in added.stdout

    first, done = cli_json("run", home=cli_home, expect_code=1)  # 'broken' fails: exit 1
    assert first["assets"]["downsampled_audio"] == {"computed": 4, "skipped": 1, "failed": 1}
    assert first["assets"]["source_audio"] == {"computed": 4, "skipped": 1, "failed": 1}
    assert len(first["runs"]) == 1
    reason = first["failed"]["downsampled_audio/broken"]
    assert reason.startswith("track 'broken': cannot decode ") and reason.endswith(
        "the file looks like text"
    )

    for name, counts in first["assets"].items():  # every analysis: one run, 'broken' alone fails
        assert (
            counts["failed"] == 1 and counts.get("computed", 0) + counts.get("skipped", 0) == 5
        ), name
        assert first["failed"][f"{name}/broken"] == reason

    status, _ = cli_json("status", home=cli_home)
    assert status == {
        "tracks": 6,
        "assets": {
            name: {
                "materialized": 5,
                "missing": 0,
                "failed": {"broken": first["failed"][f"{name}/broken"]},
            }
            for name in first["assets"]
        },
    }
    features = first["catalog"]["track_features"]
    assert features["status"] == "materialized" and features["rows"] == 5
    shown_table, _ = cli_json("show", "track_features", home=cli_home)
    assert shown_table["uri"] == features["uri"] and os.path.isfile(features["uri"])

    shown, _ = cli_json("show", "downsampled_audio", "Ete-live-l-ete", home=cli_home)
    assert (
        shown["status"] == "computed" and shown["sample_rate"] == 22050 and shown["channels"] == 1
    )
    assert sf.info(shown["uri"]).duration == pytest.approx(1.0)
    assert shown["uri"].startswith(os.path.join(cli_home, "outputs", "downsampled_audio", "v"))
    failed_show, done = cli_json(
        "show", "downsampled_audio", "broken", home=cli_home, expect_code=1
    )
    assert failed_show["status"] == "failed" and "looks like text" in failed_show["reason"]

    # 'broken' is not audio: remembered, not tried again, and nothing new failed
    again, _ = cli_json("run", home=cli_home, expect_code=0)
    assert again["assets"]["downsampled_audio"] == {"skipped": 5, "failed_earlier": 1}
    assert sorted(again["already_materialized"]["downsampled_audio"]) == sorted(
        t for t in status_tracks(cli_home) if t != "broken"
    )
    assert again["tracks"] == {} and again["failed"] == {}
    assert again["runs"] == []  # nothing launched: not even the catalog tables, up to date
    assert again["catalog"]["track_features"]["uri"] == features["uri"]
    assert "looks like text" in again["failed_earlier"]["downsampled_audio/broken"]


def status_tracks(home):
    out = run_cli("status", "--json", home=home, check=True)
    state = json.loads(out.stdout)
    assert state["tracks"] == 6
    import sqlite3

    con = sqlite3.connect(os.path.join(home, "catalog.db"))
    return [row[0] for row in con.execute("select track_id from klio_tracks order by seq")]


def test_dry_run_force_and_track_selection(cli_home, library):
    run_cli("add", str(library), home=cli_home, check=True)
    # registration order (sorted names): broken, dup, flac48, ogg32, wav44, Ete...: one range
    picked = ["dup", "flac48", "ogg32", "wav44"]
    plan, _ = cli_json(
        "run",
        "downsampled_audio",
        "--dry-run",
        *(a for t in picked for a in ("--tracks", t)),
        home=cli_home,
    )
    assert plan["runs"] == []  # a plan: no Dagster run, no Beam job
    assert plan["assets"]["downsampled_audio"] == {"would_compute": 4}
    assert plan["tracks"]["dup"]["downsampled_audio"]["status"] == "would_compute"
    assert not os.path.exists(os.path.join(cli_home, "outputs", "downsampled_audio"))

    first, _ = cli_json("run", "downsampled_audio", "--tracks", "flac48", home=cli_home)
    assert first["assets"] == {"downsampled_audio": {"computed": 1}}
    status, _ = cli_json("status", home=cli_home)
    assert status["assets"]["downsampled_audio"]["materialized"] == 1
    assert status["assets"]["source_audio"]["materialized"] == 0  # siblings not run

    forced, _ = cli_json("run", "downsampled_audio", "--tracks", "flac48", "--force", home=cli_home)
    assert forced["assets"] == {"downsampled_audio": {"computed": 1}}


def test_unknown_tracks_and_assets_are_refused(cli_home, library):
    run_cli("add", str(library), home=cli_home, check=True)
    unknown = run_cli("run", "--tracks", "nope", home=cli_home)
    assert unknown.returncode == 2 and "tracks not registered: nope" in unknown.stderr
    escaping = run_cli("run", "--tracks", "../etc", home=cli_home)
    assert escaping.returncode == 2 and "not valid" in escaping.stderr
    bad_asset = run_cli("run", "loudnes", home=cli_home)
    assert bad_asset.returncode == 2 and "unknown assets ['loudnes']" in bad_asset.stderr


def test_manifest_paths_cannot_escape_and_ids_are_validated(cli_home, tmp_path, catalog_tracks):
    lists = tmp_path / "lists"
    (lists / "audio").mkdir(parents=True)
    shutil.copyfile(catalog_tracks["wav44"].path, lists / "audio" / "a.wav")
    outside = tmp_path / "outside.wav"
    shutil.copyfile(catalog_tracks["wav44"].path, outside)
    manifest = lists / "tracks.csv"
    manifest.write_text(
        "track_id,path\n"
        "good,audio/a.wav\n"
        "escape,../outside.wav\n"
        f"absolute,{outside}\n"
        "../evil,audio/a.wav\n"
        "remote,http://example.com/x.mp3\n"
    )
    done = run_cli("add", "--manifest", str(manifest), home=cli_home)
    assert done.returncode == 1
    assert "registered 1 new track " in done.stdout
    assert "track 'escape': path '../outside.wav' leads outside" in done.stderr
    assert "track 'absolute': path" in done.stderr
    assert "track ID '../evil' is not valid" in done.stderr
    assert "URI scheme of 'http://example.com/x.mp3' is not supported" in done.stderr
    allowed = run_cli(
        "add", "--manifest", str(manifest), "--allow-root", str(tmp_path), home=cli_home
    )
    assert "registered 2 new tracks (1 already registered)" in allowed.stdout


def test_symlink_out_of_an_added_folder_is_refused(cli_home, tmp_path, catalog_tracks):
    folder = tmp_path / "music"
    folder.mkdir()
    shutil.copyfile(catalog_tracks["wav44"].path, folder / "in.wav")
    os.symlink(catalog_tracks["flac48"].path, folder / "link.flac")
    done = run_cli("add", str(folder), home=cli_home)
    assert done.returncode == 1 and "registered 1 new track " in done.stdout
    assert "symlink to" in done.stderr and "--follow-symlinks" in done.stderr


def test_same_track_id_for_another_file_is_a_conflict(cli_home, tmp_path, catalog_tracks):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copyfile(catalog_tracks["wav44"].path, a / "song.wav")
    shutil.copyfile(catalog_tracks["flac48"].path, b / "song.flac")
    run_cli("add", str(a), home=cli_home, check=True)
    # A name-derived ID taken by another file: the extension goes on (the README's rule).
    named = run_cli("add", str(b), home=cli_home, check=True)
    assert "registered 1 new track " in named.stdout
    # An ID given explicitly is not renamed: the same ID for another file is a conflict.
    manifest = tmp_path / "tracks.csv"
    manifest.write_text("track_id,path\nsong,b/song.flac\n")
    done = run_cli("add", "--manifest", str(manifest), home=cli_home)
    assert done.returncode == 1 and "is already registered for" in done.stderr


def test_commands_and_entry_points_stay():
    """The command names are a contract, and every documented entry point reaches the same group."""
    import sys

    import klio_assets.cli
    import klio_assets.cli.main
    from klio_assets.cli.app import main

    # klio_assets.cli:main and klio_assets.cli.main:main (the console script runs it through
    # klio_assets.cli.main:console_main)
    assert klio_assets.cli.main is main and sys.modules["klio_assets.cli.main"].main is main
    assert set(main.commands) == {
        "add",
        "tracks",
        "remove",
        "run",
        "status",
        "show",
        "profile",
        "automation",
        "dev",
        "demo",
    }


def test_loading_the_cli_imports_no_dagster():
    """Dagster is imported inside the commands that need it: `run`'s all-done answer does not."""
    import subprocess
    import sys

    code = (
        "import sys, klio_assets.cli.main; print(sorted(m for m in sys.modules if m == 'dagster'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_automation_backfill_launches_the_schedules_runs_now(cli_home, tmp_path, catalog_tracks):
    """`automation backfill` (no --dry-run) runs the schedule's tick here; the next has nothing."""
    folder = tmp_path / "new"
    folder.mkdir()
    for key in ("wav44", "flac48"):
        shutil.copyfile(
            catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path)
        )
    run_cli("add", str(folder), home=cli_home, check=True)
    env = {"KLIO_ASSETS_AUTO_ANALYSES": "downsampled_audio"}
    done, _ = cli_json("automation", "backfill", home=cli_home, env=env)
    assert (done["mode"], done["dry_run"]) == ("backfill", False)
    assert [r["tracks"] for r in done["requests"]] == [2]
    # downsampled_audio with what it depends on in the lineage: source_audio
    assert done["requests"][0]["would_compute"] == {"source_audio": 2, "downsampled_audio": 2}
    [launched] = done["runs"]
    assert launched["success"]
    assert launched["assets"] == {
        "source_audio": {"computed": 2},
        "downsampled_audio": {"computed": 2},
    }
    again, _ = cli_json("automation", "backfill", home=cli_home, env=env)
    assert again["requests"] == [] and again["runs"] == []
    assert again["reasons"]["downsampled_audio"]["missing"] == 0
    human = run_cli("automation", "backfill", home=cli_home, env=env, check=True)
    assert human.stdout.startswith("backfill\n") and "  nothing to request" in human.stdout


def test_run_against_an_unreachable_gs_root_fails_in_one_line_within_seconds(tmp_path):
    """No credentials or a refused connection once cost 5+ minutes and 2,222 lines of gcsfs
    retries; `run` now probes the root first and says so in one line."""
    started = time.monotonic()
    done = run_cli(
        "run",
        "downsampled_audio",
        home=str(tmp_path / "home"),
        env={
            "KLIO_ASSETS_STORAGE": "gs://nobucket/out",
            "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
        },
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "klio-assets: storage gs://nobucket/out: no answer within 15 s (check the network, "
        "the credentials and the bucket name)"
    ]
    assert time.monotonic() - started < 60


def test_escape_sequences_in_file_names_are_never_printed_raw(tmp_path):
    """A file name carrying terminal escape sequences (set the title, clear the screen) and Rich
    markup appears in failure reasons: `run` and `status` show it escaped."""
    library = tmp_path / "library"
    library.mkdir()
    hostile = library / "\x1b]0;pwned\x07[bold]x\x1b[2J.wav"
    hostile.write_text("not audio at all\n")
    home = str(tmp_path / "home")
    run_cli("add", str(library), home=home, check=True)
    ran = run_cli("run", "source_audio", home=home)
    status = run_cli("status", home=home)
    assert ran.returncode == 1
    for out in (ran.stderr, status.stdout):
        assert "\x1b" not in out and "\x07" not in out
        unwrapped = out.replace("\n", "")  # Rich folds long lines at the console width
        assert "\\x1b]0;pwned\\x07[bold]x\\x1b[2J.wav" in unwrapped
