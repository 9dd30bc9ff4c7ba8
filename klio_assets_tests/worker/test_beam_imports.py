"""What a local worker process and a run's Dagster side import (their memory is mostly imports)."""

import json
import subprocess
import sys

_PROBE = """
import json, sys
{setup}
print(json.dumps(sorted(m for m in ("pandas", "pyarrow", "google.cloud.storage",
      "apache_beam.io.gcp.gcsio", "apache_beam.io.gcp.bigquery", "boto3", "pymongo",
      "google.cloud.dataflow", "google.cloud.pubsub", "google.pubsub_v1", "google.auth")
      if m in sys.modules)))
"""


def _imported(setup: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to import" not in done.stderr and "not found" not in done.stderr, done.stderr
    assert "Could not find" not in done.stderr, done.stderr  # a refused module, warned about
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_worker_imports_beam_without_pandas_pyarrow_or_cloud_clients():
    """Nor boto3, pymongo or the Dataflow API client: Beam's S3, MongoDB and Dataflow parts."""
    setup = (
        "from klio_assets.worker.beam_imports import import_beam_without_extras\n"
        "import_beam_without_extras()\n"
        "import klio_assets.worker.pipeline\n"
        "from apache_beam.runners.portability.fn_api_runner import FnApiRunner\n"
    )
    assert _imported(setup) == []


def test_a_job_in_the_local_worker_imports_no_pubsub_client_and_nothing_of_beams_at_its_start():
    """Beam's direct runner imports its Pub/Sub module when it runs a job; with the client
    there that is ~360 modules (google.auth, cryptography, requests) and 0.13 s on the
    job's critical path. The lean import takes Beam's module without the client, and the
    runner's own modules, ahead of the job."""
    setup = (
        "from klio_assets.worker.beam_imports import import_beam_without_extras\n"
        "import_beam_without_extras()\n"
        "import apache_beam as beam\n"
        "from apache_beam.options.pipeline_options import PipelineOptions\n"
        "before = {m for m in sys.modules if m.startswith('apache_beam')}\n"
        "options = PipelineOptions(['--direct_running_mode=multi_threading',\n"
        "                           '--direct_num_workers=2'])\n"
        "with beam.Pipeline(options=options) as p:\n"
        "    _ = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: (x % 2, x)) | beam.GroupByKey()\n"
        "late = sorted(m for m in sys.modules if m.startswith('apache_beam.runners') \n"
        "              and m not in before)\n"
        "print(json.dumps(late))\n"
    )
    assert _imported(setup) == []
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-2]) == []


def test_after_the_lean_beam_import_an_analysis_can_still_import_pandas():
    setup = (
        "from klio_assets.worker.beam_imports import import_beam_without_extras\n"
        "import_beam_without_extras()\n"
        "import pandas\n"
    )
    assert "pandas" in _imported(setup)
