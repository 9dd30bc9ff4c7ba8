"""Bottom-up: ``klio-assets run ASSET --tracks T`` computes the missing upstreams of ASSET for T
first, in the same run, and nothing else (no sibling analyses)."""

import os
import shutil

import dagster as dg
import pytest

from klio_assets.analyses import load_analyses
from klio_assets.orchestration import launch
from klio_assets.orchestration.lineage import inputs
from klio_assets.settings import Settings
from klio_assets.worker.plan import plan_analyses
from klio_assets.worker.storage import Storage
from klio_assets_tests.conftest import cli_json, run_cli

pytestmark = pytest.mark.e2e


def test_run_beats_computes_missing_upstreams_and_no_siblings(home, catalog_tracks, tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    for key in ("wav44", "flac48"):
        shutil.copyfile(
            catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path)
        )
    run_cli("add", str(folder), home=home, check=True)

    done, _ = cli_json("run", "beats", "--tracks", "wav44", home=home)
    assert done["assets"] == {"downsampled_audio": {"computed": 1}, "beats": {"computed": 1}}
    assert len(done["runs"]) == 1  # upstreams first, in the same Beam job
    status, _ = cli_json("status", home=home)
    counts = {name: a["materialized"] for name, a in status["assets"].items()}
    assert counts["beats"] == counts["downsampled_audio"] == 1  # wav44 only
    # Siblings are not run; nor is source_audio, a lineage parent whose output nothing reads.
    siblings = (
        "source_audio",
        "loudness",
        "spectrogram",
        "mel_spectrogram",
        "mfcc",
        "mel_spectrogram_plot",
        "waveform_plot",
    )
    assert all(counts[name] == 0 for name in siblings)

    # The same selection in-process: only upstreams missing for the asked tracks are added.
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    analyses = load_analyses()
    planned, graph, storage = plan_analyses(analyses), inputs(analyses), Storage(settings.storage)
    assert launch.with_missing_upstreams(
        instance, storage, planned, graph, ["mfcc"], ["wav44"]
    ) == (
        ["mel_spectrogram", "mfcc"],
        ["mel_spectrogram"],
    )
    assert launch.with_missing_upstreams(
        instance, storage, planned, graph, ["beats"], ["flac48"]
    ) == (
        ["downsampled_audio", "beats"],
        ["downsampled_audio"],
    )
    assert launch.with_missing_upstreams(
        instance, storage, planned, graph, ["beats"], ["wav44"]
    ) == (["beats"], [])
