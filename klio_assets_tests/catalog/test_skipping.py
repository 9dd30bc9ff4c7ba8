"""An all-skipped ``klio-assets run`` answers from the catalog's ledger without starting Dagster,
and falls back to Dagster's records whenever the ledger or the storage disagree."""

import os
import shutil
import sqlite3

import pytest

from klio_assets.analyses import load_analyses
from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.ledger import all_done
from klio_assets.settings import Settings
from klio_assets.worker.plan import plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e

TRACKS = ("wav44", "flac48", "ogg32")


def _run(home, *args, expect_code=0):
    """``klio-assets run downsampled_audio ARGS --json``, and whether it imported Dagster."""
    out, done = cli_json(
        "run",
        "downsampled_audio",
        *args,
        home=home,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
        expect_code=expect_code,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert (
        "klio_assets.catalog.ledger" in imported
    )  # the import trace works: its absence below means something
    return out, "dagster" in imported


def test_rerun_answers_from_the_ledger_without_dagster_unless_it_may_be_wrong(
    tmp_path, catalog_tracks
):
    folder = tmp_path / "library"
    folder.mkdir()
    for key in TRACKS:
        shutil.copyfile(
            catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path)
        )
    home = str(tmp_path / "home")
    run_cli("add", str(folder), home=home, check=True)
    first, used_dagster = _run(home)
    assert (
        first["assets"]["downsampled_audio"] == {"computed": 3}
        and len(first["runs"]) == 1
        and used_dagster
    )

    again, used_dagster = _run(home)
    assert not used_dagster
    assert again["runs"] == [] and again["assets"]["downsampled_audio"] == {"skipped": 3}
    assert sorted(again["already_materialized"]["downsampled_audio"]) == sorted(first["tracks"])
    one, victim = sorted(first["tracks"])[:2]
    chosen, used_dagster = _run(home, "--tracks", one)
    assert not used_dagster and chosen["already_materialized"] == {"downsampled_audio": [one]}
    checked, used_dagster = _run(home, "--tracks", one, "--check-dagster")
    assert (
        used_dagster
        and checked["runs"] == []
        and checked["assets"]["downsampled_audio"] == {"skipped": 1}
    )

    settings = Settings.from_env({"KLIO_ASSETS_HOME": home})
    catalog, storage = get_catalog(settings.catalog_url), Storage(settings.storage)
    analyses = load_analyses(settings.analysis_modules)
    current = plan_analyses(analyses, settings.params)
    assert all_done(catalog, storage, current, ["downsampled_audio"], None) is not None
    other_rate = plan_analyses(analyses, {"downsampled_audio": {"sample_rate": 16000}})
    pending: list[str] = []
    assert (
        all_done(catalog, storage, other_rate, ["downsampled_audio"], None, pending=pending) is None
    )  # a new version
    assert pending == catalog.track_ids()  # the likely work, prehashed by a waiting worker
    pending.clear()
    assert (
        all_done(
            catalog,
            storage,
            current,
            ["downsampled_audio"],
            [one, "not-registered"],
            pending=pending,
        )
        is None
    )
    assert pending == ["not-registered"]

    os.remove(first["tracks"][victim]["downsampled_audio"]["uri"])
    redone, used_dagster = _run(home)
    assert used_dagster and len(redone["runs"]) == 1
    assert redone["assets"]["downsampled_audio"] == {"computed": 1, "skipped": 2}
    assert list(redone["tracks"]) == [victim]

    with sqlite3.connect(
        os.path.join(home, "catalog.db")
    ) as db:  # a catalog from before the ledger
        db.execute("DELETE FROM klio_materialized")
    refilled, used_dagster = _run(home)
    assert (
        used_dagster
        and refilled["runs"] == []
        and refilled["assets"]["downsampled_audio"] == {"skipped": 3}
    )
    fast, used_dagster = _run(home)  # the full check entered them in the ledger
    assert not used_dagster and fast["assets"]["downsampled_audio"] == {"skipped": 3}
