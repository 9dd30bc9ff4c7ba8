"""Dataflow, up to the cloud call: real Dagster runs, Beam's real ``DataflowRunner`` building the
real job request, and a fake in place of the Dataflow API client only.

The fake replaces ``apiclient.DataflowApplicationClient`` (the object that stages files and
calls the Dataflow REST API: create, get, update job). Everything before it runs: our resource
turns ``KLIO_ASSETS_DATAFLOW`` into Beam options, Beam validates them (the temp bucket is checked
in a GCS emulator started here), translates the pipeline and builds the ``Job`` message the
service would receive; everything after it runs too: ``DataflowPipelineResult`` polls the
job's state, and cancels it through ``modify_job_state`` when the Dagster run is interrupted.
Google credentials are the one other thing that cannot exist here: Beam's lookup is set to
"anonymous" (what it falls back to after ~25 s of retries without credentials).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import dagster as dg
import pytest
from klio_assets.resources.beam import (
    CONSOLE_URL_TAG,
    JOB_ID_TAG,
    BeamRunnerResource,
    DataflowConfig,
    gcp_label,
    gcp_labels,
)

from klio_assets.catalog.database import get_catalog
from klio_assets.errors import ParameterError
from klio_assets.orchestration import launch
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import services

JOB_ID = "2026-11-24_03_00_00-1234567890"
DATAFLOW = {
    "project": "klio-test-project",
    "region": "europe-west1",
    "temp_location": "gs://klio-temp/tmp",
    "sdk_container_image": "europe-docker.pkg.dev/klio-test-project/klio/beam-worker:0.1.0",
    "machine_type": "n2-standard-4",
    "max_num_workers": 7,
    "autoscaling_algorithm": "THROUGHPUT_BASED",
    "service_account_email": "beam-workers@klio-test-project.iam.gserviceaccount.com",
    "network": "klio-vpc",
    "subnetwork": "regions/europe-west1/subnetworks/beam",
    "use_public_ips": False,
    "labels": {"Team": "Audio ML"},
}


def test_labels_follow_gcp_rules():
    assert gcp_label("Audio ML/Team") == "audio-ml-team"
    assert gcp_label("9lives", key=True) == "k9lives"
    long = gcp_label("downsampled_audio-" * 10)
    assert len(long) == 63 and long != gcp_label(
        "downsampled_audio-" * 11
    )  # digest keeps them apart
    with pytest.raises(ParameterError, match="at most 64"):
        gcp_labels({f"k{i}": "v" for i in range(65)})


def test_dataflow_settings_become_beam_options():
    resource = BeamRunnerResource(
        dataflow=DataflowConfig(**DATAFLOW), pipeline_args=["--experiments=foo"]
    )
    assert (
        resource.runner == "DataflowRunner" and resource.lanes() == 0
    )  # Dataflow rebalances itself
    args = resource.pipeline_options_args(job_name="klio-x", labels={"dagster-run-id": "ABC"})
    for expected in (
        "--runner=DataflowRunner",
        "--project=klio-test-project",
        "--region=europe-west1",
        "--temp_location=gs://klio-temp/tmp",
        f"--sdk_container_image={DATAFLOW['sdk_container_image']}",
        "--machine_type=n2-standard-4",
        "--max_num_workers=7",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--service_account_email={DATAFLOW['service_account_email']}",
        "--network=klio-vpc",
        "--no_use_public_ips",
        "--labels=team=audio-ml",
        "--labels=dagster-run-id=abc",
        "--experiments=foo",
        "--job_name=klio-x",
    ):
        assert expected in args
    assert args.index("--experiments=foo") > args.index(
        "--project=klio-test-project"
    )  # raw args last


class FakeDataflowClient:
    """Stands in for ``apiclient.DataflowApplicationClient``: records calls, plays states."""

    instances: list[FakeDataflowClient] = []
    states: list[str] = []

    def __init__(self, options, root_staging_location=None):
        from google.cloud import dataflow

        self.dataflow = dataflow
        self.options = options
        self.jobs = []
        self.requested: list[str] = []
        self.polls = 0
        self.submitted = threading.Event()
        FakeDataflowClient.instances.append(self)

    def _job(self, state):
        return self.dataflow.Job(
            id=JOB_ID, current_state=getattr(self.dataflow.JobState, f"JOB_STATE_{state}")
        )

    def create_job(self, job):
        self.jobs.append(job)
        self.submitted.set()
        return self._job("PENDING")

    def get_job(self, job_id):
        assert job_id == JOB_ID
        self.polls += 1
        if self.requested:
            return self._job("CANCELLED")
        states = FakeDataflowClient.states
        return self._job(states[min(self.polls - 1, len(states) - 1)])

    def modify_job_state(self, job_id, new_state):
        assert job_id == JOB_ID
        self.requested.append(new_state)
        return True


@pytest.fixture
def dataflow_home(home, tmp_path, monkeypatch, catalog_tracks):
    """A home whose runs go to Dataflow (fake client), with three tracks registered."""
    from apache_beam.internal.gcp import auth
    from apache_beam.runners.dataflow.internal import apiclient

    FakeDataflowClient.instances = []
    monkeypatch.setattr(apiclient, "DataflowApplicationClient", FakeDataflowClient)
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    monkeypatch.setenv("KLIO_ASSETS_DATAFLOW", json.dumps(DATAFLOW))
    with services.gcs_emulator(tmp_path / "gcs", bucket="klio-temp") as endpoint:
        for key, value in services.gcs_emulator_env(endpoint).items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_env()
        instance = dg.DagsterInstance.get()
        order = ["wav44", "flac48", "ogg32"]
        register_tracks(
            instance,
            get_catalog(settings.catalog_url),
            [(t, catalog_tracks[t].path) for t in order],
        )
        try:
            yield instance, settings, order
        finally:
            instance.dispose()


def _run(instance, settings, order):
    return launch.execute_range(
        instance,
        selected=["source_audio", "downsampled_audio"],
        track_ids=order,
        storage=Storage(settings.storage),
    )


def _step_failure(instance, run_id) -> str:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return records[0].dagster_event.step_failure_data.error.message


def test_dataflow_run_submits_the_configured_job_and_records_it(dataflow_home):
    instance, settings, order = dataflow_home
    FakeDataflowClient.states = ["PENDING", "RUNNING", "DONE"]
    outcome = _run(instance, settings, order)

    (client,) = FakeDataflowClient.instances
    (job,) = client.jobs
    proto = job.proto
    assert proto.name == f"klio-{outcome.run_id}"
    assert dict(proto.labels) == {
        "dagster-run-id": outcome.run_id,
        "dagster-asset": "downsampled_audio-source_audio",
        "klio-batch-size": "3",
        "team": "audio-ml",
    }
    options = job.options.get_all_options()
    assert options["machine_type"] == "n2-standard-4" and options["max_num_workers"] == 7
    assert options["sdk_container_image"] == DATAFLOW["sdk_container_image"]
    assert options["service_account_email"] == DATAFLOW["service_account_email"]
    assert options["subnetwork"] == DATAFLOW["subnetwork"] and options["use_public_ips"] is False
    from apache_beam.portability.api import beam_runner_api_pb2

    environments = job.proto_pipeline.components.environments.values()
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
        for e in environments
    }
    assert images == {DATAFLOW["sdk_container_image"]}  # the workers run our image
    assert client.polls >= 3  # polled until DONE

    run = instance.get_run_by_id(outcome.run_id)
    assert run.tags[JOB_ID_TAG] == JOB_ID
    assert run.tags[CONSOLE_URL_TAG] == (
        f"https://console.cloud.google.com/dataflow/jobs/europe-west1/{JOB_ID}?project=klio-test-project"
    )
    assert outcome.summary["beam_job_id"] == JOB_ID
    # The fake ran nothing: every track is reported failed with a reason, none materialized.
    assert not outcome.success
    reason = outcome.summary["tracks_detail"]["wav44"]["downsampled_audio"]["reason"]
    assert "no result from the Beam job" in reason


def test_failed_dataflow_job_fails_the_run_with_job_id_and_state(dataflow_home):
    instance, settings, order = dataflow_home
    FakeDataflowClient.states = ["RUNNING", "FAILED"]
    outcome = _run(instance, settings, order)
    assert not outcome.success
    message = _step_failure(instance, outcome.run_id)
    assert f"Beam job {JOB_ID} ended in state FAILED" in message
    assert f"dataflow/jobs/europe-west1/{JOB_ID}" in message  # where to look


def test_interrupted_run_cancels_its_dataflow_job(dataflow_home):
    instance, settings, order = dataflow_home
    FakeDataflowClient.states = ["RUNNING"]  # never ends by itself

    def interrupt_once_submitted():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if FakeDataflowClient.instances and FakeDataflowClient.instances[0].submitted.is_set():
                time.sleep(1.5)  # let the run poll the job once
                # What `dagster` does to a run worker it terminates: an interrupt to the process.
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=interrupt_once_submitted, daemon=True)
    killer.start()
    outcome = _run(instance, settings, order)
    killer.join(timeout=5)

    (client,) = FakeDataflowClient.instances
    assert client.requested == ["JOB_STATE_CANCELLED"]
    assert not outcome.success
    run = instance.get_run_by_id(outcome.run_id)
    assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    assert run.tags[JOB_ID_TAG] == JOB_ID
