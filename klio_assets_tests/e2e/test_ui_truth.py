"""What the Dagster UI shows after a CLI run, read through the GraphQL the UI itself queries
(``klio-assets dev``): nothing unsynced after a clean run, a failed track as a failed
partition with its reason, plots rendered in the materialization's description."""

import os

import pytest

from klio_assets_tests.conftest import run_cli
from klio_assets_tests.e2e.test_dagster_dev import graphql, serve_ui

pytestmark = pytest.mark.e2e
CHAIN = ["source_audio", "downsampled_audio", "loudness", "waveform_plot"]

NODES = """
query Nodes($keys: [AssetKeyInput!], $partitions: [String!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    staleStatusByPartition(partitions: $partitions)
    staleCausesByPartition(partitions: $partitions) { reason dependency { path } }
    partitionStats { numMaterialized numFailed }
    assetPartitionStatuses {
      ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
    }
  }
}"""
EVENTS = """
query Events($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetObservations(partitions: [$partition]) {
        description
        metadataEntries { label ... on TextMetadataEntry { text } }
      }
      assetMaterializations(partitions: [$partition]) { description }
    }
  }
}"""


@pytest.fixture
def ui_after_run(tmp_path, catalog_tracks):
    """A home where the CLI ran a chain over three good tracks and a broken one, and
    ``klio-assets dev`` serving it."""
    home = str(tmp_path / "home")
    folder = tmp_path / "music"
    folder.mkdir()
    for key in ("wav44", "flac48", "ogg32", "broken"):
        os.symlink(catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path))
    run_cli("add", str(folder), "--follow-symlinks", home=home, check=True)
    done = run_cli("run", *CHAIN, home=home)
    assert done.returncode in (0, 1), done.stderr
    with serve_ui(home) as port:
        yield port


def test_ui_shows_fresh_tracks_fresh_and_the_broken_one_failed_with_its_reason(ui_after_run):
    port = ui_after_run
    partitions = ["wav44", "flac48", "ogg32", "broken"]
    keys = [{"path": [name]} for name in CHAIN]
    answer = graphql(port, NODES, {"keys": keys, "partitions": partitions})
    assert "errors" not in answer, answer["errors"]
    nodes = {n["assetKey"]["path"][0]: n for n in answer["data"]["assetNodes"]}
    for name in CHAIN:
        node = nodes[name]
        statuses = dict(zip(partitions, node["staleStatusByPartition"], strict=True))
        causes = dict(zip(partitions, node["staleCausesByPartition"], strict=True))
        # nothing "Unsynced" after a clean run (the broken track is missing, not stale)
        assert statuses == {
            "wav44": "FRESH",
            "flac48": "FRESH",
            "ogg32": "FRESH",
            "broken": "MISSING",
        }, (name, causes)
        assert all(not c for c in causes.values()), (name, causes)
        # the partition bar: "Failed (1)", the broken track red
        assert node["partitionStats"] == {"numMaterialized": 3, "numFailed": 1}, name
        assert node["assetPartitionStatuses"]["failedPartitions"] == ["broken"], name

        events = graphql(port, EVENTS, {"path": [name], "partition": "broken"})
        observations = events["data"]["assetOrError"]["assetObservations"]
        entries = {e["label"]: e.get("text") for e in observations[0]["metadataEntries"]}
        assert entries["status"] == "failed"
        assert "'broken'" in entries["reason"] and "broken.mp3" in entries["reason"]

    plot = graphql(port, EVENTS, {"path": ["waveform_plot"], "partition": "wav44"})
    description = plot["data"]["assetOrError"]["assetMaterializations"][0]["description"]
    assert description.startswith("![wav44](data:image/png;base64,")
