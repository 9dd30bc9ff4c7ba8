"""The landing sensor's Pub/Sub path against the real Pub/Sub emulator (gcloud's
``pubsub-emulator`` component) with the real ``google.cloud.pubsub_v1`` client: messages
become registered tracks and one ranged run request, and are acknowledged (not redelivered).

Where gcloud or its emulator is not installed the test is skipped and says so; the same code
path up to the client (hostile messages included) is covered everywhere by test_sensors.py
with an in-memory subscriber."""

import json
import os
import shutil
import socket
import subprocess
import time

import dagster as dg
import pytest

from klio_assets.definitions import build_definitions
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.settings import Settings
from klio_assets_tests.automation.test_sensors import drop
from klio_assets_tests.support.services import stop_process_group

pytestmark = pytest.mark.e2e
PROJECT = "klio-test"


def _emulator_available() -> str | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "gcloud CLI not installed: the Pub/Sub emulator ships with it"
    root = os.path.dirname(os.path.dirname(os.path.realpath(gcloud)))
    if not os.path.isdir(os.path.join(root, "platform", "pubsub-emulator")):
        return f"gcloud at {gcloud} has no pubsub-emulator component (gcloud components install pubsub-emulator)"
    try:
        import google.cloud.pubsub_v1  # noqa: F401
    except ImportError:
        return "google-cloud-pubsub is not installed (pip install 'klio-assets[gcp]')"
    return None


@pytest.fixture
def emulator(monkeypatch):
    reason = _emulator_available()
    if reason:
        pytest.skip(f"Pub/Sub emulator test not run: {reason}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            f"--project={PROJECT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the Pub/Sub emulator did not listen within 90 s")
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
        yield port
    finally:
        stop_process_group(proc, grace_s=20)


def test_pubsub_landing_against_the_emulator(home, tmp_path, emulator, monkeypatch):
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "new-tracks")
    subscription = subscriber.subscription_path(PROJECT, "klio-landing")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "ack_deadline_seconds": 60}
    )
    folder = str(tmp_path / "incoming")
    for name in ("e1.wav", "e2.wav"):
        drop(folder, name)
        publisher.publish(topic, json.dumps({"uri": os.path.join(folder, name)}).encode()).result(
            30
        )
    publisher.publish(topic, b"not a track!").result(30)
    # Outside the allowed roots: refused, acknowledged, never registered.
    publisher.publish(topic, json.dumps({"uri": "/etc/passwd"}).encode()).result(30)

    empty_landing = tmp_path / "landing"
    empty_landing.mkdir()
    monkeypatch.setenv("KLIO_ASSETS_LANDING", str(empty_landing))
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SUBSCRIPTION", subscription)
    monkeypatch.setenv("KLIO_ASSETS_LANDING_ROOTS", folder)  # messages may name files there
    defs = build_definitions(Settings.from_env())
    instance = dg.DagsterInstance.get()
    result = None
    deadline = time.monotonic() + 30  # the emulator may need a moment before a pull sees them
    while time.monotonic() < deadline:
        result = defs.resolve_sensor_def("landing_sensor")(
            dg.build_sensor_context(instance=instance, definitions=defs)
        )
        if result.run_requests:
            break
        time.sleep(1)
    assert sorted(instance.get_dynamic_partitions(TRACKS)) == ["e1", "e2"]
    assert len(result.run_requests) == 1
    tags = result.run_requests[0].tags
    assert {
        tags["dagster/asset_partition_range_start"],
        tags["dagster/asset_partition_range_end"],
    } == {"e1", "e2"}
    # Acknowledged: nothing comes back, not even the refused messages.
    time.sleep(1)
    again = subscriber.pull(
        request={"subscription": subscription, "max_messages": 10, "return_immediately": True},
        timeout=10,
    )
    assert list(again.received_messages) == []
