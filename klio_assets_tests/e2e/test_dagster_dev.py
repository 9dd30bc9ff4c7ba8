"""End to end through the UI's path: ``klio-assets dev`` (webserver + daemon), a run launched over
GraphQL exactly as the UI launches one, executed by the daemon in its own process."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from klio_assets_tests.conftest import cli_json, run_cli
from klio_assets_tests.support.services import stop_process_group

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = 'query { runOrError(runId: "%s") { __typename ... on Run { status tags { key value } } } }'
GRAPH = "{ assetNodes { assetKey { path } dependencyKeys { path } partitionDefinition { name } } }"


def graphql(port, query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_ui(home):
    """``klio-assets dev`` serving ``home`` on a free port, once its GraphQL answers; yields
    the port and stops the server's process group afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env["KLIO_ASSETS_HOME"] = home
    proc = subprocess.Popen(
        [sys.executable, "-m", "klio_assets.cli", "dev", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(1)
        else:
            raise AssertionError("klio-assets dev did not come up in 120 s")
        yield port
    finally:
        stop_process_group(proc)


@pytest.fixture
def dev_server(tmp_path, catalog_tracks):
    home = str(tmp_path / "home")
    folder = tmp_path / "music"
    folder.mkdir()
    for key in ("wav44", "flac48", "ogg32"):
        os.symlink(catalog_tracks[key].path, folder / os.path.basename(catalog_tracks[key].path))
    run_cli("add", str(folder), "--follow-symlinks", home=home, check=True)
    with serve_ui(home) as port:
        yield port, home


def test_ui_launched_run_materializes_a_partition_range(dev_server):
    port, home = dev_server
    nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(port, GRAPH)["data"]["assetNodes"]}
    assert nodes[("downsampled_audio",)]["dependencyKeys"] == [{"path": ["source_audio"]}]
    assert nodes[("downsampled_audio",)]["partitionDefinition"]["name"] == "tracks"

    params = {
        "selector": {
            "repositoryLocationName": "klio_assets",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["downsampled_audio"]}],
        },
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {
            "tags": [
                {"key": "dagster/asset_partition_range_start", "value": "flac48"},
                {"key": "dagster/asset_partition_range_end", "value": "wav44"},
            ]
        },
    }
    launched = graphql(port, LAUNCH, {"params": params})["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = graphql(port, STATUS % run_id)["data"]["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["klio/computed"] == "3"

    status, _ = cli_json("status", home=home)
    assert status["assets"]["downsampled_audio"]["materialized"] == 3
    assert status["assets"]["source_audio"]["materialized"] == 0
