"""``klio-assets profile``: one analysis run here on registered tracks, nothing of the deployment touched."""

import json
import os
import pstats

import pytest
from click.testing import CliRunner

from klio_assets_tests.conftest import run_cli

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tree(folder):
    """Every file under ``folder`` with its size and modification time, but SQLite's
    shared-memory index and an empty write-ahead log (what a reader leaves while connected)."""
    tree = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            if not (name.endswith("-shm") or (name.endswith("-wal") and size == 0)):
                tree[os.path.relpath(path, folder)] = (size, os.stat(path).st_mtime_ns)
    return tree


def test_profile_reports_figures_profile_and_failures_without_touching_the_deployment(
    tmp_path, catalog_tracks
):
    home = str(tmp_path / "home")
    # Registered in the catalog, which is all `profile` reads (`klio-assets add` also creates
    # the Dagster instance: 3-4 s more, and test_cli covers it). So the home holds nothing
    # else, and must hold nothing else afterwards.
    from klio_assets.catalog.database import get_catalog
    from klio_assets.settings import Settings

    catalog = get_catalog(Settings.from_env({"KLIO_ASSETS_HOME": home}).catalog_url)
    catalog.register([(key, catalog_tracks[key].path) for key in ("wav44", "broken")])
    catalog.engine.dispose()
    before = _tree(home)
    assert list(before) == ["catalog.db"]
    # peak_frequency reads downsampled_audio: the upstream chain is computed too
    env = {"KLIO_ASSETS_ANALYSES": "klio_assets_tests.support.sample_analyses", "PYTHONPATH": REPO}
    prof = tmp_path / "peak.prof"

    done = run_cli(
        "profile",
        "peak_frequency",
        "--tracks",
        "wav44",
        "--tracks",
        "broken",
        "--top",
        "5",
        "--output",
        str(prof),
        "--json",
        home=home,
        env=env,
    )
    assert done.returncode == 1, done.stderr  # one track failed
    data = json.loads(done.stdout)

    good = data["tracks"]["wav44"]
    assert good["status"] == "computed" and good["reason"] is None
    assert good["audio_s"] == pytest.approx(2.0, abs=0.01)
    for key in (
        "wall_s",
        "cpu_s",
        "x_realtime",
        "peak_rss_mb",
        "function_wall_s",
        "function_cpu_s",
    ):
        assert good[key] > 0, key
    assert (
        good["function_wall_s"] < good["wall_s"] and good["framework_wall_s"] > 0
    )  # decode, load, write
    assert good["peak_rss_mb"] >= good["rss_before_mb"] > 10
    upstream = good["upstream"]["downsampled_audio"]
    assert (
        upstream["status"] == "computed"
        and upstream["wall_s"] > 0
        and upstream["audio_s"] == good["audio_s"]
    )
    assert data["upstream"] == ["downsampled_audio"]
    assert data["warmup"]["status"] == "computed" and data["warmup"]["cpu_s"] > 0

    bad = data["tracks"]["broken"]
    assert bad["status"] == "failed" and bad["wall_s"] is None
    assert "'broken'" in bad["reason"] and catalog_tracks["broken"].path in bad["reason"]
    assert bad["reason"].startswith(
        "upstream 'downsampled_audio' failed: track 'broken': cannot decode "
    )
    assert data["totals"]["computed"] == 1 and data["totals"]["failed"] == 1

    profile = data["profile"]
    top = profile["functions"][0]
    assert (top["function"], os.path.basename(top["file"])) == (
        "peak_frequency",
        "sample_analyses.py",
    )
    assert top["calls"] == 1 and profile["function_s"] == top["cumulative_s"] > 0
    assert len(profile["functions"]) == 5
    names = {name for (_, _, name) in pstats.Stats(str(prof)).stats}  # type: ignore[attr-defined]
    assert "peak_frequency" in names and data["output"] == str(prof)

    # the deployment is untouched: no outputs, no Dagster instance, the catalog unchanged
    assert _tree(home) == before
    assert data["kept"] is False and not os.path.exists(os.path.dirname(data["storage_root"]))

    # the human form, in this process (imports already paid): a table, the reason, the
    # profile, and the per-line profile (line_profiler: the `profile` extra, in `test`)
    from klio_assets.cli.main import main

    shown = CliRunner().invoke(
        main,
        [
            "profile",
            "peak_frequency",
            "--tracks",
            "broken",
            "--tracks",
            "wav44",
            "--no-warmup",
            "--lines",
        ],
        env={"KLIO_ASSETS_HOME": home, **env, "COLUMNS": "200"},
    )
    assert shown.exit_code == 1, shown.output
    assert "no warm-up" in shown.stdout and "wav44" in shown.stdout
    assert "failed broken: upstream 'downsampled_audio' failed: track 'broken'" in shown.stdout
    assert "peak_frequency sample_analyses.py" in shown.stdout
    fft_line = next(
        line for line in shown.stdout.splitlines() if "np.fft.rfft(audio.samples" in line
    )
    hits, _, percent = fft_line.split()[1:4]  # line, hits, time s, %, code
    assert int(hits) == 1 and float(percent) > 50, fft_line  # the function's work is this line
    assert _tree(home) == before
