"""Per-track limits: configurable, checked before anything is sized from a header, and a
decoder that takes too long is stopped (real processes: a stalled ffprobe and ffmpeg)."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from klio_assets.errors import DecodeError, DecodeTimeoutError, ParameterError
from klio_assets.settings import Settings
from klio_assets.worker import audio
from klio_assets.worker.pipeline import with_limit_options
from klio_assets.worker.plan import RunPlan
from klio_assets_tests.support import hostile, synth


def test_limits_come_from_the_environment_through_beam_options(tmp_path):
    settings = Settings.from_env({
        "KLIO_ASSETS_HOME": str(tmp_path), "KLIO_ASSETS_BEAM_OPTIONS": "--direct_num_workers=1",
        "KLIO_ASSETS_TRACK_TIMEOUT": "30", "KLIO_ASSETS_MAX_DURATION": "3600", "KLIO_ASSETS_MAX_CHANNELS": "8",
    })  # fmt: skip
    assert settings.beam_options == [
        "--direct_num_workers=1",
        "--track_timeout_s=30.0",
        "--max_duration_s=3600.0",
        "--max_channels=8",
    ]
    plan = RunPlan(
        run_id="r",
        storage_root=str(tmp_path),
        analyses={},
        selected=[],
        limits={"max_sample_rate": 96000},
    )
    applied = with_limit_options(plan, PipelineOptions(settings.beam_options))
    assert applied.decode_limits() == audio.DecodeLimits(
        max_duration_s=3600.0, max_channels=8, max_sample_rate=96000, timeout_s=30.0
    )
    assert with_limit_options(plan, PipelineOptions([])) is plan


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KLIO_ASSETS_TRACK_TIMEOUT", "soon"),
        ("KLIO_ASSETS_TRACK_TIMEOUT", "0"),
        ("KLIO_ASSETS_MAX_DURATION", "-1"),
        ("KLIO_ASSETS_MAX_DURATION", "nan"),
        ("KLIO_ASSETS_MAX_CHANNELS", "2.5"),
    ],
)
def test_bad_limit_settings_are_refused_naming_the_variable(tmp_path, name, value):
    with pytest.raises(ParameterError, match=name):
        Settings.from_env({"KLIO_ASSETS_HOME": str(tmp_path), name: value})


def test_decode_limits_must_be_positive():
    with pytest.raises(ParameterError, match="timeout_s=0"):
        audio.DecodeLimits(timeout_s=0)


def test_a_header_claiming_gigabytes_allocates_nothing_from_it(tmp_path):
    # 4 GB announced at 44.1 kHz stereo is 6.8 h: within the default limits, so it is decoded
    # block by block and fails as truncated, with memory bounded by the block size
    path = str(tmp_path / "liar.wav")
    hostile._wav_claiming(path, data_bytes=0xFFFFFFF0, actual_frames=44100, sample_rate=44100)
    tracemalloc.start()
    try:
        info = audio.probe(path, track_id="liar", uri=path)
        assert info.frames == 0xFFFFFFF0 // 2
        with pytest.raises(DecodeError, match=r"truncated: audio stops after 1\.00 s"):
            list(audio.SourceDecoder(path, info, track_id="liar", uri=path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_soundfile_decode_past_its_deadline_is_stopped(tmp_path):
    path = synth.write(str(tmp_path / "long.wav"), synth.sine(440, 30.0, 44100), 44100)
    limits = audio.DecodeLimits(timeout_s=0.05)
    info = audio.probe(path, track_id="slow", uri=path, limits=limits)
    decoder = audio.SourceDecoder(
        path, info, track_id="slow", uri=path, limits=limits, block_frames=4096
    )
    with pytest.raises(
        DecodeTimeoutError, match=r"decoding did not finish within 0.05 s \(soundfile"
    ):
        for _ in decoder:
            time.sleep(0.01)  # a slow consumer: the track's time runs out


def _stalling(tmp_path, name: str) -> str:
    """A fake ``name`` whose grandchild holds its pipes open, as a stalled decoder does."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\nsleep 600 & echo $! > {folder}/{name}.pid\nwait\n")
    script.chmod(0o755)
    return str(folder)


def test_stalled_ffprobe_is_killed_with_its_children(tmp_path, monkeypatch, catalog_tracks):
    folder = _stalling(tmp_path, "ffprobe")
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    path = catalog_tracks["m4a"].path  # libsndfile cannot read it: ffprobe is asked
    started = time.monotonic()
    with pytest.raises(
        DecodeTimeoutError, match=r"ffprobe did not answer within 1 s and was stopped"
    ):
        audio.probe(path, track_id="m4a", uri=path, limits=audio.DecodeLimits(timeout_s=1.0))
    assert time.monotonic() - started < 10
    pid = int(open(os.path.join(folder, "ffprobe.pid")).read())
    time.sleep(0.2)
    assert (
        not os.path.exists(f"/proc/{pid}")
        or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    )


def test_stalled_ffmpeg_decode_is_killed_at_the_deadline(tmp_path, monkeypatch, catalog_tracks):
    path = catalog_tracks["m4a"].path
    info = audio.probe(path, track_id="m4a", uri=path)  # the real ffprobe
    folder = _stalling(tmp_path, "ffmpeg")
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    decoder = audio.SourceDecoder(
        path, info, track_id="m4a", uri=path, limits=audio.DecodeLimits(timeout_s=1.0)
    )
    started = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match=r"within 1 s \(ffmpeg, stopped after 0.00 s"):
        list(decoder)
    assert time.monotonic() - started < 10
    pid = int(open(os.path.join(folder, "ffmpeg.pid")).read())
    time.sleep(0.2)
    assert (
        not os.path.exists(f"/proc/{pid}")
        or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    )


def test_an_analysis_that_never_returns_fails_its_track_and_the_batch_goes_on(
    tmp_path, catalog_tracks
):
    import apache_beam as beam

    from klio_assets.analyses import source_audio
    from klio_assets.worker.pipeline import build_pipeline
    from klio_assets.worker.plan import Layout, plan_analyses
    from klio_assets.worker.storage import Storage
    from klio_assets_tests.support import sample_analyses

    stalled = synth.write(str(tmp_path / "stall.wav"), synth.sine(523, 1.0, 44100), 44100)
    planned = plan_analyses([source_audio, sample_analyses.hangs_on_stall])
    root = str(tmp_path / "out")
    plan = RunPlan(run_id="r", storage_root=root, analyses=planned, selected=list(planned), lanes=2,
                   limits={"timeout_s": 1.5})  # fmt: skip
    refs = [{"track_id": "stall-1", "uri": stalled}] + [
        {"track_id": t, "uri": catalog_tracks[t].path} for t in ("wav44", "flac48", "ogg32", "mp3")
    ]
    started = time.monotonic()
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=multi_threading",
                               "--direct_num_workers=2"])  # fmt: skip
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, plan, refs)
    assert time.monotonic() - started < 60
    storage = Storage(root)
    folder = Layout(storage).results_folder("r")
    results = {
        n[:-5]: storage.read_json(f"{folder}/{n}")["analyses"] for n in storage.list_names(folder)
    }
    reason = results["stall-1"]["hangs_on_stall"]["reason"]
    assert results["stall-1"]["hangs_on_stall"]["status"] == "failed"
    assert reason == (f"track 'stall-1': {stalled}: analyses did not finish within 3 s (2 x timeout_s); "
                      "the worker gave up on them")  # fmt: skip
    for t in ("wav44", "flac48", "ogg32", "mp3"):
        assert {r["status"] for r in results[t].values()} == {"computed"}, results[t]
