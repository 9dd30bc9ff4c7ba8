"""What the Dagster UI shows of the window (``klio-assets dev``, the GraphQL the UI queries):
after the retention, only the tracks left in it (none), with no leftover counts; a track run
again is back in it, fresh; the CLI answers for all of them from the catalog."""

import os

import pytest

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.e2e.test_dagster_dev import graphql, serve_ui

pytestmark = pytest.mark.e2e
CHAIN = ["source_audio", "downsampled_audio"]
ENV = {"KLIO_ASSETS_AUTO_ANALYSES": "downsampled_audio", "KLIO_ASSETS_WINDOW_RETAIN_S": "0"}

STATS = """
query Stats($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionKeysByDimension { partitionKeys }
    partitionStats { numPartitions numMaterialized numFailed }
    assetPartitionStatuses {
      ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
    }
  }
}"""


def _stats(port):
    answer = graphql(port, STATS, {"keys": [{"path": [name]} for name in CHAIN]})
    assert "errors" not in answer, answer
    out = {}
    for node in answer["data"]["assetNodes"]:
        statuses = node["assetPartitionStatuses"]
        out[node["assetKey"]["path"][0]] = {
            "partitions": sorted(node["partitionKeysByDimension"][0]["partitionKeys"]),
            "stats": node["partitionStats"],
            "materialized": sorted(statuses["materializedPartitions"]),
            "failed": sorted(statuses["failedPartitions"]),
        }
    return out


def test_the_ui_shows_the_window_and_the_cli_the_catalog(tmp_path, catalog_tracks):
    home = str(tmp_path / "home")
    folder = tmp_path / "music"
    folder.mkdir()
    for key in ("wav44", "flac48", "broken", "ogg32"):
        os.symlink(catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path))
    run_cli("add", str(folder), "--follow-symlinks", home=home, env=ENV, check=True)
    listed, _ = cli_json("tracks", home=home, env=ENV)
    ids = [t["track_id"] for t in listed["tracks"]]
    good = [t for t in ids if t != "broken"]
    for track in good:  # one run per good track: the retention can delete each one
        run_cli("run", *CHAIN, "--tracks", track, home=home, env=ENV, check=True)
    broken = run_cli("run", *CHAIN, "--tracks", "broken", home=home, env=ENV)
    assert broken.returncode == 1, broken.stderr

    with serve_ui(home) as port:
        before = _stats(port)
    assert before["downsampled_audio"]["stats"] == {
        "numPartitions": 4,
        "numMaterialized": 3,
        "numFailed": 1,
    }

    # the retention, now: the good tracks leave, and the broken one: its failure is for good
    # (a broken file; it would keep its run and all its events); their runs go
    done, _ = cli_json("automation", "retention", home=home, env=ENV)
    window = done["window"]
    assert sorted(window["leave"]) == sorted(ids) and window["leave_failed"] == 1
    assert len(window["runs_deleted"]) == 4
    with serve_ui(home) as port:
        after = _stats(port)
    for name in CHAIN:  # the UI shows the window as it is: empty
        assert after[name]["partitions"] == [] and after[name]["failed"] == []
        assert after[name]["stats"] == {"numPartitions": 0, "numMaterialized": 0, "numFailed": 0}
    # the CLI answers for every track from the catalog, the broken one's reason too
    status, _ = cli_json("status", home=home, env=ENV)
    assert status["tracks"] == 4
    assert status["assets"]["downsampled_audio"]["materialized"] == 3
    assert list(status["assets"]["downsampled_audio"]["failed"]) == ["broken"]
    shown, _ = cli_json("show", "downsampled_audio", good[0], home=home, env=ENV)
    assert shown["status"] == "materialized" and shown["source"] == "catalog"
    failed, _ = cli_json("tracks", "--failed", home=home, env=ENV)
    assert [t["track_id"] for t in failed["tracks"]] == ["broken"]

    # a forced run of one track brings it back into the window, fresh in the UI
    run_cli("run", *CHAIN, "--tracks", good[0], "--force", home=home, env=ENV, check=True)
    with serve_ui(home) as port:
        back = _stats(port)
    for name in CHAIN:
        assert back[name]["partitions"] == [good[0]] and back[name]["materialized"] == [good[0]]
        assert back[name]["stats"] == {"numPartitions": 1, "numMaterialized": 1, "numFailed": 0}
