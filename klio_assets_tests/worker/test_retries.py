"""Transient storage errors are retried with backoff and a bounded number of tries; permanent
ones and bad audio are not; the final reason is recorded per track. A real Beam pipeline over
an object store (``memory://``) that resets connections, throttles and answers 5xx and 403."""

from __future__ import annotations

import shutil

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from klio_assets.analyses import downsampled_audio, source_audio
from klio_assets.worker.pipeline import build_pipeline
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage, retry_transient
from klio_assets_tests.support import flaky_storage
from klio_assets_tests.support.flaky_storage import HttpError


def test_transient_errors_are_retried_and_permanent_ones_recorded_per_track(
    tmp_path, monkeypatch, catalog_tracks
):
    fs = flaky_storage.install(monkeypatch, [
        ("put", "/wav44.flac", lambda: ConnectionResetError("Connection reset by peer"), 2),
        ("put", "/flac48.flac", lambda: HttpError(429, "SlowDown: please reduce your request rate"), None),
        ("put", "/ogg32.flac", lambda: HttpError(403, "Forbidden: no storage.objects.create access"), None),
        ("get", "klio-src/remote.wav", lambda: HttpError(503, "Service Unavailable"), 2),
    ])  # fmt: skip
    source = Storage("memory://klio-src")
    local = tmp_path / "remote.wav"
    shutil.copyfile(catalog_tracks["wav8k"].path, local)
    source.fs.put_file(str(local), "memory://klio-src/remote.wav")
    fs.calls.clear()

    planned = plan_analyses([source_audio, downsampled_audio])
    plan = RunPlan(run_id="r", storage_root="memory://klio-out", analyses=planned,
                   selected=list(planned), lanes=2)  # fmt: skip
    refs = [
        {"track_id": t, "uri": catalog_tracks[t].path}
        for t in ("wav44", "flac48", "ogg32", "broken")
    ]
    refs.append({"track_id": "remote", "uri": "memory://klio-src/remote.wav"})
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=multi_threading",
                               "--direct_num_workers=2"])  # fmt: skip
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, plan, refs)
    out = Storage("memory://klio-out")
    folder = Layout(out).results_folder("r")
    results = {n[:-5]: out.read_json(f"{folder}/{n}")["analyses"] for n in out.list_names(folder)}

    def puts(track_id: str) -> int:
        uri = Layout(out).output_uri(planned["downsampled_audio"], track_id)
        return fs.calls[("put", fs._strip_protocol(uri))]

    status = {t: {n: r["status"] for n, r in a.items()} for t, a in results.items()}
    assert (
        status["wav44"]
        == status["remote"]
        == {"source_audio": "computed", "downsampled_audio": "computed"}
    )
    # throttled every time: a bounded number of tries, then the track fails saying so
    throttled = results["flac48"]["downsampled_audio"]
    assert throttled["status"] == "failed" and puts("flac48") == 5
    assert throttled["reason"].startswith(
        f"track 'flac48': {catalog_tracks['flac48'].path}: upload memory://"
    )
    assert (
        "429 SlowDown" in throttled["reason"] and "gave up after 5 attempts" in throttled["reason"]
    )
    # a permanent answer is not retried
    forbidden = results["ogg32"]["downsampled_audio"]
    assert (
        forbidden["status"] == "failed"
        and puts("ogg32") == 1
        and "403 Forbidden" in forbidden["reason"]
    )
    assert "attempts" not in forbidden["reason"]
    assert (
        results["flac48"]["source_audio"]["status"]
        == results["ogg32"]["source_audio"]["status"]
        == "computed"
    )
    # bad audio is not a storage error: failed once, nothing uploaded, nothing retried
    assert results["broken"]["source_audio"]["reason"].endswith(
        "not audio: the file looks like text"
    )
    assert puts("broken") == 0
    # two connection resets on an upload and two 503s on a source download, absorbed by retries
    assert puts("wav44") == 3
    # 2 failed + 1 download to probe and hash, 1 more to decode (the engine fetches it twice)
    assert fs.calls[("get", "/klio-src/remote.wav")] == 4


def test_backoff_grows_exponentially_with_jitter_and_is_capped(monkeypatch):
    slept = []
    monkeypatch.setattr("klio_assets.worker.storage.time.sleep", slept.append)

    def always():
        raise HttpError(503, "Service Unavailable")

    try:
        retry_transient(always, what="read x", tries=6, base_delay=1.0, max_delay=8.0)
    except Exception as exc:
        assert "gave up after 6 attempts" in str(exc)
    assert len(slept) == 5
    for attempt, delay in enumerate(slept):
        nominal = min(8.0, 2.0**attempt)
        assert nominal * 0.5 <= delay < nominal
    assert len(set(slept)) == len(slept)  # jittered
