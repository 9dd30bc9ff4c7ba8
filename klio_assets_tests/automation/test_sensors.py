"""Landing and propagation sensors, evaluated with ``build_sensor_context`` on a real instance
(SQLite home), a real catalog and, where a run is needed, the real Beam local runner."""

import json
import os
import time
from types import SimpleNamespace

import dagster as dg
import pytest

from klio_assets.automation.landing import CLOCK_MARGIN_S
from klio_assets.automation.landing import listing as landing_module
from klio_assets.catalog.database import get_catalog
from klio_assets.definitions import JOB_NAME, build_definitions
from klio_assets.errors import CatalogError, StorageError
from klio_assets.orchestration import launch
from klio_assets.orchestration.lineage import parents
from klio_assets.orchestration.partitions import TRACKS
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import synth

ALL = [
    "source_audio",
    "downsampled_audio",
    "loudness",
    "beats",
    "spectrogram",
    "mel_spectrogram",
    "mfcc",
    "mel_spectrogram_plot",
    "waveform_plot",
    "stems",
    "fingerprint",
    "key",
    "speech_segments",
    "note_events",
    "note_midi",
    "piano_roll_plot",
]


def drop(folder, name, *, seconds=0.5, rate=8000, freq=440.0, old_mtime=False):
    """Write a short WAV into ``folder`` the way writers should: a hidden name, then a rename."""
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "." + name + ".part")
    synth.write(tmp, synth.sine(freq, seconds, rate, channels=1), rate, format="WAV")
    if old_mtime:  # as `mv` or `cp -p` of an old file: the mtime says 2001
        os.utime(tmp, (1e9, 1e9))
    os.rename(tmp, os.path.join(folder, name))


@pytest.fixture
def landing(home, tmp_path, monkeypatch):
    folder = str(tmp_path / "landing")
    os.makedirs(folder)
    monkeypatch.setenv("KLIO_ASSETS_LANDING", folder)
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SETTLE_S", "0")
    return folder


def evaluate(sensor_name, cursor=None, *, subscriber=None):
    time.sleep(2 * CLOCK_MARGIN_S)  # files just dropped are older than the listing's margin
    settings = Settings.from_env()
    defs = build_definitions(settings)
    if subscriber is not None:
        from klio_assets.sensors import build_automation

        from klio_assets.analyses import load_analyses

        sensors, _ = build_automation(
            settings, load_analyses(), job_name=JOB_NAME, subscriber=subscriber
        )
        sensor = next(s for s in sensors if s.name == sensor_name)
    else:
        sensor = defs.resolve_sensor_def(sensor_name)
    instance = dg.DagsterInstance.get()
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor(context), instance


def registered(instance):
    return list(instance.get_dynamic_partitions(TRACKS))


def ranges_of(result):
    return [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]


def test_landing_sensor_registers_new_files_and_requests_one_ranged_run(landing):
    for name in ("b.wav", "a.wav", "c.wav"):
        drop(landing, name)
        time.sleep(0.01)
    result, instance = evaluate("landing_sensor")
    assert registered(instance) == ["b", "a", "c"]  # arrival order, one batch
    assert set(get_catalog(Settings.from_env().catalog_url).resolve(["a", "b", "c"])) == {
        "a",
        "b",
        "c",
    }
    assert ranges_of(result) == [("b", "c")]  # one run (one Beam job) for the tick's batch
    request = result.run_requests[0]
    assert [k.to_user_string() for k in request.asset_selection] == ALL  # fused: the whole graph
    assert request.tags["klio/trigger"] == "landing"
    assert request.run_key
    assert json.loads(result.cursor)["after"][1].endswith("c.wav")


def test_landing_sensor_cursor_survives_restart_without_loss_or_double(landing):
    drop(landing, "one.wav")
    first, instance = evaluate("landing_sensor")
    # Sensor down: a file moved in keeping an old mtime, and a new one.
    drop(landing, "moved.wav", old_mtime=True)
    drop(landing, "two.wav")
    second, _ = evaluate("landing_sensor", first.cursor)
    assert ranges_of(second) == [("moved", "two")]
    third, _ = evaluate("landing_sensor", second.cursor)
    assert (
        third.run_requests == []
        and json.loads(third.cursor)["after"] == json.loads(second.cursor)["after"]
    )
    assert registered(instance) == ["one", "moved", "two"]  # none lost, none twice


def test_landing_sensor_caps_first_tick(landing, monkeypatch):
    for i in range(5):
        drop(landing, f"t{i}.wav")
        time.sleep(0.01)
    monkeypatch.setenv("KLIO_ASSETS_LANDING_MAX_TRACKS", "2")
    cursor = None
    for expected in (["t0", "t1"], ["t0", "t1", "t2", "t3"], ["t0", "t1", "t2", "t3", "t4"]):
        result, instance = evaluate("landing_sensor", cursor)
        cursor = result.cursor
        assert registered(instance) == expected
        assert ranges_of(result) == [
            (expected[-2] if len(expected) % 2 == 0 else expected[-1], expected[-1])
        ]
    result, _ = evaluate("landing_sensor", cursor)
    assert (
        result.run_requests == []
        and json.loads(result.cursor)["after"] == json.loads(cursor)["after"]
    )


def test_landing_listing_derives_ids_only_for_the_files_it_takes(landing, monkeypatch):
    for i in range(5):
        drop(landing, f"t{i}.wav")
        time.sleep(0.01)
    time.sleep(CLOCK_MARGIN_S + 0.05)
    named = []
    derive = landing_module.track_id_from_name
    monkeypatch.setattr(
        landing_module, "track_id_from_name", lambda name: named.append(name) or derive(name)
    )
    listing = landing_module.scan_landing(landing, settle_s=0, max_files=2)
    assert [f.track_id for f in listing.files] == ["t0", "t1"]
    assert listing.pending == 5 and named == [
        "t0.wav",
        "t1.wav",
    ]  # a backlog is not named every tick


def test_landing_sensor_skips_unchanged_folders_and_still_finds_every_new_file(
    landing, monkeypatch
):
    drop(os.path.join(landing, "sub"), "s1.wav")
    first, instance = evaluate("landing_sensor")
    scanned = []
    real_scandir = os.scandir

    def counting(path="."):
        if str(path).startswith(landing):
            scanned.append(os.path.relpath(path, landing))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    idle, _ = evaluate("landing_sensor", first.cursor)
    assert idle.run_requests == [] and scanned == []  # nothing changed: no folder listed again
    # A file written in place (no rename) in a known folder, and a folder tree moved in whose
    # inner folder keeps its old ctime: both are found.
    with open(os.path.join(landing, "sub", "inplace.wav"), "wb") as fh:
        fh.write(b"RIFF")
    outside = os.path.join(os.path.dirname(landing), "album")
    drop(os.path.join(outside, "disc1"), "deep.wav")
    os.rename(outside, os.path.join(landing, "album"))
    result, _ = evaluate("landing_sensor", idle.cursor)
    assert sorted(
        k
        for r in result.run_requests
        for k in (
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
    ) == ["deep", "inplace"]
    assert sorted(scanned) == sorted([".", "album", os.path.join("album", "disc1"), "sub"])
    assert registered(instance) == ["s1", "inplace", "deep"] or registered(instance) == [
        "s1",
        "deep",
        "inplace",
    ]


def test_landing_sensor_splits_runs_where_other_tracks_interleave(landing):
    drop(landing, "x.wav")
    first, instance = evaluate("landing_sensor")
    instance.add_dynamic_partitions(TRACKS, ["added_by_cli"])
    # x is seen again (its ctime changed: chmod) together with a new file: two ranges, not
    # one range x..y spanning the track registered in between.
    os.chmod(os.path.join(landing, "x.wav"), 0o600)
    drop(landing, "y.wav")
    second, _ = evaluate("landing_sensor", first.cursor)
    assert sorted(ranges_of(second)) == [("x", "x"), ("y", "y")]


def test_a_new_home_has_its_default_landing_folder_and_the_sensor_idles(home):
    """A home nobody drops files into: its landing sensor has nothing to do, it does not fail
    every tick (the UI showed a failing sensor on every new home run with automation)."""
    assert os.path.isdir(os.path.join(home, "landing"))
    result, instance = evaluate("landing_sensor")
    assert result.run_requests == [] and registered(instance) == []


def test_landing_sensor_error_fails_the_tick(landing, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_LANDING", landing + "-missing")
    with pytest.raises(StorageError, match="does not exist"):
        evaluate("landing_sensor")


class FakeSubscriber:
    """Implements the three calls of ``pubsub_v1.SubscriberClient`` the sensor makes (the
    emulator test in test_automation_e2e.py drives the real client)."""

    def __init__(self, messages, catalog_url):
        self.queue = list(messages)
        self.acked: list[str] = []
        self.released: list[str] = []
        self.catalog_url = catalog_url
        self.registered_at_ack: dict[str, str] = {}

    def pull(self, *, request, timeout=None):
        batch, self.queue = (
            self.queue[: request["max_messages"]],
            self.queue[request["max_messages"] :],
        )
        return SimpleNamespace(
            received_messages=[
                SimpleNamespace(
                    ack_id=f"ack-{i}-{len(self.queue)}",
                    message=SimpleNamespace(data=data, attributes=attrs),
                )
                for i, (data, attrs) in enumerate(batch)
            ]
        )

    def acknowledge(self, *, request):
        self.registered_at_ack = get_catalog(self.catalog_url).resolve(["p1", "p2", "p3"])
        self.acked.extend(request["ack_ids"])

    def modify_ack_deadline(self, *, request):
        self.released.extend(request["ack_ids"])


def test_pubsub_messages_are_acknowledged_after_registration(landing, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SUBSCRIPTION", "projects/p/subscriptions/s")
    catalog_url = Settings.from_env().catalog_url
    messages = [
        (json.dumps({"track_id": "p1", "uri": "gs://bucket/in/p1.flac"}).encode(), {}),
        (b"gs://bucket/in/p2.mp3", {}),
        (b"{}", {"bucketId": "bucket", "objectId": "in/p3.wav", "eventType": "OBJECT_FINALIZE"}),
        (b"never-registered", {}),
    ]
    fake = FakeSubscriber(messages, catalog_url)
    result, instance = evaluate("landing_sensor", subscriber=fake)
    assert registered(instance) == ["p1", "p2", "p3"]
    assert fake.registered_at_ack == {
        "p1": "gs://bucket/in/p1.flac",
        "p2": "gs://bucket/in/p2.mp3",
        "p3": "gs://bucket/in/p3.wav",
    }
    assert (
        len(fake.acked) == 4
    )  # the unknown ID is refused for good (and logged), not redelivered forever
    assert ranges_of(result) == [("p1", "p3")]


def test_pubsub_hostile_messages_are_refused_acknowledged_and_logged_while_good_ones_register(
    landing, tmp_path, monkeypatch, caplog
):
    """The production path: the Definitions' landing sensor, one pull mixing good messages
    and hostile ones. Only the good tracks are registered; every message is acknowledged; each
    refusal is logged with its reason."""
    from klio_assets.catalog.discovery import MAX_MESSAGE_BYTES

    allowed = str(tmp_path / "allowed")
    outside = str(tmp_path / "outside")
    drop(allowed, "ok2.wav")
    drop(outside, "secret.wav")
    os.symlink(os.path.join(outside, "secret.wav"), os.path.join(allowed, "link.wav"))
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SUBSCRIPTION", "projects/p/subscriptions/s")
    monkeypatch.setenv("KLIO_ASSETS_LANDING_ROOTS", allowed)
    good = [
        (json.dumps({"track_id": "ok1", "uri": "gs://bucket/in/ok1.flac"}).encode(), {}),
        (json.dumps({"uri": os.path.join(allowed, "ok2.wav")}).encode(), {}),
        (b"", {"bucketId": "bucket", "objectId": "in/ok3.wav", "eventType": "OBJECT_FINALIZE"}),
    ]
    hostile = {
        "passwd-json": (json.dumps({"uri": "/etc/passwd"}).encode(), {}, "leads outside"),
        "passwd-text": (b"/etc/passwd", {}, "leads outside"),
        "outside": (
            json.dumps({"track_id": "evil", "uri": os.path.join(outside, "secret.wav")}).encode(),
            {},
            "leads outside",
        ),
        "symlink": (
            json.dumps({"track_id": "link", "uri": os.path.join(allowed, "link.wav")}).encode(),
            {},
            "leads outside",
        ),
        "dotdot": (b"gs://bucket/../../other/z.wav", {}, "must not contain '..'"),
        "dotdot-gcs": (
            b"",
            {"bucketId": "bucket", "objectId": "in/../../z.wav", "eventType": "OBJECT_FINALIZE"},
            "must not contain '..'",
        ),
        "huge": (
            b'{"track_id": "big", "uri": "gs://b/' + b"x" * MAX_MESSAGE_BYTES + b'.wav"}',
            {},
            "over the limit",
        ),
        "nested": (b"[" * 30000 + b"]" * 30000, {}, "nests JSON"),
        "nested-object": (b'{"uri": ' * 5000 + b"1" + b"}" * 5000, {}, "nests JSON"),
        "control": (
            json.dumps({"track_id": "cc", "uri": "gs://bucket/in/a\u0000.wav"}).encode(),
            {},
            "control characters",
        ),
        "not-audio": (
            b"",
            {"bucketId": "bucket", "objectId": "in/notes.txt", "eventType": "OBJECT_FINALIZE"},
            "not an audio file name",
        ),
    }
    fake = FakeSubscriber(
        [good[0], *[(d, a) for d, a, _ in hostile.values()], good[1], good[2]],
        Settings.from_env().catalog_url,
    )
    caplog.set_level("WARNING")
    result, instance = evaluate("landing_sensor", subscriber=fake)
    assert registered(instance) == ["ok1", "ok2", "ok3"]
    resolved = get_catalog(Settings.from_env().catalog_url).resolve(["ok1", "ok2", "ok3"])
    assert resolved == {
        "ok1": "gs://bucket/in/ok1.flac",
        "ok2": os.path.join(allowed, "ok2.wav"),
        "ok3": "gs://bucket/in/ok3.wav",
    }
    assert ranges_of(result) == [("ok1", "ok3")]
    assert len(fake.acked) == len(good) + len(hostile)  # refused for good: not redelivered
    refusals = [r.getMessage() for r in caplog.records if "refused message" in r.getMessage()]
    for name, (_, _, reason) in hostile.items():
        assert any(reason in line for line in refusals), (name, reason, refusals)
    assert len({line for line in refusals if "landing: refused" in line}) == len(hostile)


def test_pubsub_message_is_not_acknowledged_when_registration_fails(landing, monkeypatch):
    monkeypatch.setenv("KLIO_ASSETS_LANDING_SUBSCRIPTION", "projects/p/subscriptions/s")
    fake = FakeSubscriber([(b"gs://bucket/in/p1.flac", {})], Settings.from_env().catalog_url)

    def broken(*args, **kwargs):
        raise CatalogError("catalog is down")

    monkeypatch.setattr("klio_assets.automation.landing.tick.register_tracks", broken)
    with pytest.raises(CatalogError, match="catalog is down"):
        evaluate("landing_sensor", subscriber=fake)
    assert fake.acked == []


def test_propagation_sensor_runs_descendants_of_an_upstream_only_run(home):
    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    folder = os.path.join(home, "music")
    for name in ("u1.wav", "u2.wav"):
        drop(folder, name)
    from klio_assets.catalog.discovery import discover
    from klio_assets.orchestration.registration import register_tracks

    register_tracks(instance, get_catalog(settings.catalog_url), discover([folder]).tracks)
    idle, _ = evaluate("propagation_sensor")  # first tick: starts after history
    storage = Storage(settings.storage)
    assert launch.execute_range(
        instance, selected=["downsampled_audio"], track_ids=["u1", "u2"], storage=storage
    ).success
    assert launch.execute_range(
        instance,
        selected=["downsampled_audio"],
        track_ids=["u1", "u2"],
        storage=storage,
        dry_run=True,
    ).success
    result, _ = evaluate("propagation_sensor", idle.cursor)
    assert len(result.run_requests) == 1  # the dry run propagates nothing
    request = result.run_requests[0]
    assert ranges_of(result) == [("u1", "u2")]
    selected = {k.to_user_string() for k in request.asset_selection}
    assert selected == {
        "beats",
        "spectrogram",
        "mel_spectrogram",
        "mfcc",
        "mel_spectrogram_plot",
        "waveform_plot",
    }
    assert request.tags["klio/trigger"] == "propagation"
    again, _ = evaluate("propagation_sensor", result.cursor)
    assert again.run_requests == []


def test_lineage_matches_the_asset_graph(home):
    from klio_assets.analyses import load_analyses

    graph = build_definitions(Settings.from_env()).resolve_asset_graph()
    for name, deps in parents(load_analyses()).items():
        observed = {"source_files"} if name == "source_audio" else set()  # the external files
        assert {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys} == {
            *deps,
            *observed,
        }


def test_propagation_sensor_leaves_out_tracks_whose_descendants_failed_earlier(home):
    from klio_assets.catalog.discovery import discover
    from klio_assets.catalog.failures import remember_failures
    from klio_assets.orchestration.registration import register_tracks
    from klio_assets.orchestration.selection import planned_analyses
    from klio_assets.worker.records import AnalysisOutcome, TrackResult
    from klio_assets.worker.storage import source_stat

    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    catalog = get_catalog(settings.catalog_url)
    folder = os.path.join(home, "music")
    for name in ("u1.wav", "u2.wav"):
        drop(folder, name)
    register_tracks(instance, catalog, discover([folder]).tracks)
    # An earlier run found u2's beats deterministic failure (a bug in the analysis): every
    # analysis downstream of downsampled_audio reads beats or failed the same way.
    planned = planned_analyses(settings)
    path = os.path.join(folder, "u2.wav")
    downstream = ["beats", "spectrogram", "mel_spectrogram", "mfcc"]
    downstream += ["mel_spectrogram_plot", "waveform_plot"]
    for name in downstream:
        remember_failures(
            catalog,
            name,
            version=planned[name].version,
            run_id="earlier",
            results=[
                TrackResult(
                    "u2",
                    path,
                    {name: AnalysisOutcome.failed("track 'u2': bug", ValueError("bug"))},
                    source_stat=source_stat(path),
                )
            ],
        )
    idle, _ = evaluate("propagation_sensor")
    assert launch.execute_range(
        instance,
        selected=["downsampled_audio"],
        track_ids=["u1", "u2"],
        storage=Storage(settings.storage),
    ).success
    result, _ = evaluate("propagation_sensor", idle.cursor)
    assert ranges_of(result) == [("u1", "u1")]
