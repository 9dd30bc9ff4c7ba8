"""Every committed output is a valid file of its declared format, or its track fails with a
reason: sources of 0-3 frames at 8-192 kHz through the real engine (the Beam local runner).

A source so short that resampling leaves no frame (one frame at 48 kHz to 22.05 kHz) used to
be committed as a 0-byte FLAC that no reader opens, and counted done.
"""

import os

import apache_beam as beam
import numpy as np
import soundfile as sf
from apache_beam.options.pipeline_options import PipelineOptions

from klio_assets.analyses import downsampled_audio, source_audio
from klio_assets.worker.audio import exact_length
from klio_assets.worker.pipeline import build_pipeline
from klio_assets.worker.plan import Layout, RunPlan, plan_analyses
from klio_assets.worker.storage import Storage

RATES = (8000, 16000, 22050, 44100, 48000, 96000, 192000)
FRAMES = (0, 1, 2, 3)


def _run(tmp_path, refs, run_id):
    planned = plan_analyses([source_audio, downsampled_audio])
    root = str(tmp_path / "out")
    plan = RunPlan(
        run_id=run_id,
        storage_root=root,
        analyses=planned,
        selected=["source_audio", "downsampled_audio"],
        lanes=2,
    )
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, plan, refs)
    storage = Storage(root)
    folder = Layout(storage).results_folder(run_id)
    return {n[:-5]: storage.read_json(f"{folder}/{n}") for n in storage.list_names(folder)}, root


def test_tiny_sources_commit_readable_audio_or_fail_with_a_reason(tmp_path):
    refs, expected = [], {}
    for rate in RATES:
        for frames in FRAMES:
            track_id = f"t{rate}-{frames}"
            path = str(tmp_path / "src" / f"{track_id}.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sf.write(path, np.full((frames, 2), 0.25, np.float32), rate, subtype="PCM_16")
            refs.append({"track_id": track_id, "uri": path})
            expected[track_id] = exact_length(frames, rate, 22050)
    results, root = _run(tmp_path, refs, "tiny")
    assert set(results) == set(expected)

    for track_id, want in expected.items():
        record = results[track_id]["analyses"]["downsampled_audio"]
        if want == 0:
            assert record["status"] == "failed", (track_id, record)
            assert track_id in record["reason"] and record["reason"].strip(), record
        else:
            assert record["status"] == "computed", (track_id, record)
            data, rate = sf.read(record["uri"], dtype="float32")
            assert (len(data), rate) == (want, 22050), track_id
    # The zero-frame case itself (one frame at 48 kHz) and its neighbours.
    assert expected["t48000-1"] == 0 and expected["t44100-1"] == 1
    assert "no audio frames" in results["t48000-1"]["analyses"]["downsampled_audio"]["reason"]

    # Nothing unreadable was left anywhere under the root: every audio file opens.
    audio = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith((".flac", ".wav", ".ogg", ".aiff"))
    ]
    assert audio, "no audio output was committed at all"
    for path in audio:
        assert sf.info(path).frames > 0, path
    committed = {os.path.basename(p).split(".")[0] for p in audio}
    assert committed == {t for t, want in expected.items() if want > 0}
