"""Model analyses (issue 14): loads per job, throughput against a plain onnxruntime loop, memory
in track length, decodes when fused with the DSP analyses.

1. **Loads per Beam job**: ``speech_segments`` and ``note_events`` over ``--tracks`` tracks in
   one job with two worker processes (``multi_processing``); the job's ``model_loads`` counter
   (summed over its workers) against models x processes. Target: loads <= models x processes,
   not one per track.
2. **Throughput**: ``klio-assets run speech_segments`` and ``klio-assets run note_events`` on a
   fresh home (wall from process start, Dagster and Beam start-up included; the Beam job's own
   seconds beside it) against a plain loop over the same files on the same cores
   (a ``multiprocessing`` pool of one process per core): soundfile + soxr decode, onnxruntime
   with the same batch size (Silero 1, Basic Pitch 8), the same post-processing. Target:
   klio >= 0.9x the plain loop's audio-seconds per second. The batch is ``--batch-minutes``
   of corpus music (120 by default: 34 tracks, the corpus's music of 30-600 s): a run's
   fixed cost (process start, imports, Dagster, planning: the run's wall less its Beam job)
   is printed apart, and is amortised over a batch of this size as in real use.
   ``windows``: Silero's CPU per window by rows per call (what batching several tracks'
   recurrent states into one call would save; both sides above use one row).
3. **Peak RSS per worker** of a standalone worker job (one process) computing each model
   analysis on a 1-minute cut and on joined tracks ``--long-minutes`` long (15 and 60 by
   default). Target: the longest track's peak within 1.5x the short one's. ``note_events``
   keeps Basic Pitch's activations in files and makes its notes chunk by chunk
   (``klio_assets.analyses.note_creation``).
4. **Decodes**: ``loudness``, ``downsampled_audio``, ``key``, ``speech_segments`` and
   ``note_events`` fused, each track's decodes counted. Target: 1 per track.

Usage (from the repo root)::

    python benchmarks/models.py [--tracks 4] [--max-seconds 200] [--long-minutes 15,60]
                                [--batch-minutes 120] [--models speech_segments,note_events]
                                [--parts loads,throughput,windows,rss,decodes]

Prints figures and the load average (the machine is shared), then one JSON line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness

MODELS = ("speech_segments", "note_events")
THROUGHPUT_TARGET = 0.9
RSS_TARGET = 1.5


def pick_tracks(count: int, max_s: float) -> list[tuple[str, str, float]]:
    chosen = [(p, d) for p, d in harness.music_tracks() if 30 <= d <= max_s][:count]
    if len(chosen) < count:
        sys.exit(f"need {count} corpus music tracks of 30-{max_s:g} s, found {len(chosen)}")
    return [(f"m{i:02d}", p, d) for i, (p, d) in enumerate(chosen)]


# -- 1. loads per job ----------------------------------------------------------------------------


def loads_per_job(tracks: list[tuple[str, str, float]], scratch: str) -> dict[str, object]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from klio_assets.analyses import note_events, source_audio, speech_segments
    from klio_assets.worker.pipeline import build_pipeline
    from klio_assets.worker.plan import RunPlan, plan_analyses

    processes = 2
    plan = RunPlan(
        run_id="loads",
        storage_root=os.path.join(scratch, "loads"),
        analyses=plan_analyses([source_audio, speech_segments, note_events]),
        selected=list(MODELS),
        force=True,
        lanes=processes,
    )
    options = PipelineOptions(
        [
            "--runner=FnApiRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={processes}",
        ]
    )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan, [{"track_id": t, "uri": p} for t, p, _ in tracks])
    started = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.perf_counter() - started
    query = result.metrics().query(beam.metrics.MetricsFilter().with_name("model_loads"))
    loads = int(sum(c.committed for c in query["counters"]))
    bound = len(MODELS) * processes
    print(
        f"1. loads: {loads} model loads in one job of {len(tracks)} tracks, {processes} worker "
        f"processes, {len(MODELS)} models (bound {bound}; per track would be "
        f"{len(MODELS) * len(tracks)}); job {wall:.1f} s; load {harness.load_average()}"
    )
    return {
        "model_loads": loads,
        "worker_processes": processes,
        "models": len(MODELS),
        "tracks": len(tracks),
        "verdict": "met" if 1 <= loads <= bound else "missed",
    }


# -- 2. throughput -------------------------------------------------------------------------------


def _decode(path: str, rate: int):
    import numpy as np
    import soundfile as sf
    import soxr

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = (y[:, 0] + y[:, 1]) * 0.5 if y.shape[1] == 2 else y.mean(axis=1)
    return np.ascontiguousarray(soxr.resample(mono, sr, rate, quality="HQ"), dtype=np.float32)


def _session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _plain_speech(path: str) -> int:
    """Silero VAD over one file, one window per call, as a plain loop would."""
    import numpy as np

    from klio_assets.analyses.speech_segments import MODEL, speech_timestamps
    from klio_assets.worker.models import resolve_weights

    session = _session(resolve_weights(MODEL.path))
    y = _decode(path, 16000)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    sr = np.array(16000, dtype=np.int64)
    probs = []
    for start in range(0, len(y), 512):
        chunk = y[start : start + 512]
        if len(chunk) < 512:
            chunk = np.pad(chunk, (0, 512 - len(chunk)))
        x = np.concatenate([context, chunk[None, :]], axis=1)
        out, state = session.run(None, {"input": x, "state": state, "sr": sr})
        probs.append(float(out[0, 0]))
        context = x[:, -64:]
    return len(speech_timestamps(probs, samples=len(y)))


def _plain_notes(path: str) -> int:
    """Basic Pitch over one file: windows in batches of 8, the package's note creation."""
    import importlib

    import numpy as np

    from klio_assets.worker.models import resolve_weights

    # the module (``from klio_assets.analyses import note_events`` gives the analysis)
    module = importlib.import_module("klio_assets.analyses.note_events")

    session = _session(resolve_weights(module.MODEL.path))
    y = np.concatenate([np.zeros(module.OVERLAP // 2, np.float32), _decode(path, 22050)])
    windows = [
        np.pad(y[i : i + module.WINDOW], (0, max(0, module.WINDOW - len(y[i : i + module.WINDOW]))))
        for i in range(0, len(y), module.HOP)
    ]
    note, onset = [], []
    for i in range(0, len(windows), module.MODEL.batch):
        batch = np.stack(windows[i : i + module.MODEL.batch])[:, :, None]
        n, o = session.run(list(module.OUTPUTS), {"serving_default_input_2:0": batch})
        note.append(n[:, 15:-15])
        onset.append(o[:, 15:-15])
    frames = int(np.floor((len(y) - module.OVERLAP // 2) * module.FPS / 22050))
    note_array = np.concatenate(note).reshape(-1, 88)[:frames]
    onset_array = np.concatenate(onset).reshape(-1, 88)[:frames]
    # the package's own note creation, as a plain loop would call it
    _, events = module.note_creation().model_output_to_notes(
        {"note": note_array, "onset": onset_array, "contour": np.empty((frames, 0), np.float32)},
        onset_thresh=0.5, frame_thresh=0.3,
        min_note_len=int(np.round(module.MIN_NOTE_MS / 1000 * (22050 / module.FFT_HOP))),
        include_pitch_bends=False, melodia_trick=True,
    )  # fmt: skip
    return len(events)


def batch_tracks(minutes: float, max_s: float = 600) -> list[tuple[str, str, float]]:
    """Corpus music tracks of 30 s to ``max_s``, in manifest order, until ``minutes`` of audio:
    a batch in which a run's fixed cost is amortised as it is in real use."""
    chosen: list[tuple[str, str, float]] = []
    for p, d in harness.music_tracks():
        if 30 <= d <= max_s and sum(c[2] for c in chosen) < minutes * 60:
            chosen.append((f"b{len(chosen):02d}", p, d))
    return chosen


def silero_windows() -> dict[str, float]:
    """CPU per Silero window by rows per call: what batching the recurrent state of several
    tracks into one call would save (the klio run and the plain loop both use one row)."""
    import numpy as np

    from klio_assets.analyses.speech_segments import MODEL
    from klio_assets.worker.models import resolve_weights

    session = _session(resolve_weights(MODEL.path))
    sr = np.array(16000, dtype=np.int64)
    out: dict[str, float] = {}
    for rows in (1, 2, 4, 8, 16):
        x = np.random.default_rng(0).random((rows, 576), np.float32)
        state = np.zeros((2, rows, 128), np.float32)
        for _ in range(20):
            session.run(None, {"input": x, "state": state, "sr": sr})
        calls = 2000 // rows
        started = time.process_time()
        for _ in range(calls):
            _, state = session.run(None, {"input": x, "state": state, "sr": sr})
        out[str(rows)] = round((time.process_time() - started) / (calls * rows) * 1e6, 1)
    print(
        "2. Silero CPU per 512-sample window (us) by rows per call: "
        + ", ".join(f"{k}: {v}" for k, v in out.items())
        + f"; load {harness.load_average()}"
    )
    return out


def throughput(
    tracks: list[tuple[str, str, float]], scratch: str, names: tuple[str, ...] = MODELS
) -> dict[str, object]:
    audio_s = sum(d for _, _, d in tracks)
    harness.warm_page_cache([p for _, p, _ in tracks])
    figures: dict[str, object] = {
        "audio_s": round(audio_s, 1),
        "tracks": len(tracks),
        "cores": harness.cores(),
    }
    plains = {"speech_segments": _plain_speech, "note_events": _plain_notes}
    for name in names:
        plain = plains[name]
        load_before = harness.load_average()
        started = time.perf_counter()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        pool = multiprocessing.get_context("spawn").Pool(harness.cores())
        pool.map(plain, [p for _, p, _ in tracks], chunksize=1)
        pool.close()
        pool.join()  # the workers are waited for: their CPU is in RUSAGE_CHILDREN
        plain_wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        plain_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
            cpu_after.ru_stime - cpu_before.ru_stime
        )
        env = harness.klio_home(
            os.path.join(scratch, f"home-{name}"), [(t, p) for t, p, _ in tracks]
        )
        wall, cpu, done = harness.klio_run([name], env)
        computed = done["assets"].get(name, {}).get("computed", 0)
        ratio = plain_wall / wall
        job_ratio = plain_wall / done["beam_seconds"] if done.get("beam_seconds") else None
        # what the run spends besides the Beam job: process start, imports, Dagster, planning
        fixed = wall - done["beam_seconds"] if done.get("beam_seconds") else None
        print(
            f"2. {name}: plain loop {audio_s / plain_wall:6.1f} audio-s/s ({plain_wall:.1f} s); "
            f"klio-assets run {audio_s / wall:6.1f} audio-s/s ({wall:.1f} s from start, Beam job "
            f"{done.get('beam_seconds', 0):.1f} s, {computed} computed) -> {ratio:.2f}x "
            f"(Beam job alone {job_ratio or 0:.2f}x); fixed cost {fixed or 0:.1f} s; "
            f"CPU-s plain {plain_cpu:.1f}, klio {cpu:.1f} -> {plain_cpu / cpu:.2f}x per CPU-s; "
            f"load {load_before} before, {harness.load_average()} after"
        )
        figures[name] = {
            "plain_wall_s": round(plain_wall, 2),
            "klio_wall_s": round(wall, 2),
            "klio_cpu_s": round(cpu, 2),
            "beam_s": done.get("beam_seconds"),
            "klio_over_plain": round(ratio, 3),
            "beam_job_over_plain": round(job_ratio, 3) if job_ratio else None,
            "fixed_cost_s": round(fixed, 2) if fixed is not None else None,
            "plain_cpu_s": round(plain_cpu, 2),
            "klio_over_plain_per_cpu_s": round(plain_cpu / cpu, 3),
            "load_average": harness.load_average(),
            "verdict": "met" if ratio >= THROUGHPUT_TARGET else "missed",
        }
    return figures


# -- 3. peak RSS in track length ----------------------------------------------------------------


def peak_rss(short: str, longs: list[str], scratch: str) -> dict[str, object]:
    """Peak RSS of a one-process worker job per model analysis, short track against long
    ones (the longest decides the verdict)."""
    import soundfile as sf

    out: dict[str, object] = {}
    for name in MODELS:
        figures: dict[str, dict[str, float]] = {}
        cases = [("short", short)] + [
            (f"long{i}" if i < len(longs) - 1 else "long", p) for i, p in enumerate(longs)
        ]
        for label, path in cases:
            plan, tracks, _ = harness.worker_plan(
                os.path.join(scratch, f"rss-{name}-{label}"), [(label, path)],
                run_id=f"rss-{name}-{label}", selected=(name,),
            )  # fmt: skip
            child = harness.run_child(
                [sys.executable, "-m", "klio_assets.worker.pipeline", "--plan", plan,
                 "--tracks", tracks, "--runner=FnApiRunner"],
                env=harness.clean_env(),
            )  # fmt: skip
            if child["returncode"]:
                sys.exit(f"worker job failed: {child['stderr'][-2000:]}")
            minutes = sf.info(path).duration / 60
            figures[label] = {
                "minutes": round(minutes, 1),
                "peak_rss_mb": round(child["peak_rss_mb"], 1),
            }
            print(
                f"3. peak RSS of one worker process, {name}, {minutes:5.1f} min track: "
                f"{child['peak_rss_mb']:.0f} MB ({child['wall_s']:.1f} s)"
            )
        ratio = figures["long"]["peak_rss_mb"] / figures["short"]["peak_rss_mb"]
        per_minute = (figures["long"]["peak_rss_mb"] - figures["short"]["peak_rss_mb"]) / (
            figures["long"]["minutes"] - figures["short"]["minutes"]
        )
        out[name] = {
            **figures,
            "long_over_short": round(ratio, 3),
            "mb_per_audio_minute": round(per_minute, 1),
            "verdict": "met" if ratio <= RSS_TARGET else "missed",
        }
    return out


# -- 4. decodes when fused ---------------------------------------------------------------------


def decodes(tracks: list[tuple[str, str, float]], scratch: str) -> dict[str, object]:
    from klio_assets.analyses import load_analyses
    from klio_assets.worker import execution
    from klio_assets.worker.plan import RunPlan, plan_analyses, planned_for

    counts: dict[str, int] = {}
    real = execution.SourceDecoder

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, path, info, *, track_id, **kw):
            counts[track_id] = counts.get(track_id, 0) + 1
            super().__init__(path, info, track_id=track_id, **kw)

    execution.SourceDecoder = Counting  # type: ignore[misc]
    try:
        selected = ["loudness", "downsampled_audio", "key", *MODELS]
        analyses = load_analyses()
        graph = {a.name: a for a in analyses}
        plan = RunPlan(
            run_id="decodes",
            storage_root=os.path.join(scratch, "decodes"),
            analyses=planned_for(selected, plan_analyses(analyses), graph),
            selected=selected,
            force=True,
        )
        engine = execution.Engine(plan)
        statuses = []
        for i, (track_id, path, _) in enumerate(tracks[:2]):
            task = engine.check({"track_id": track_id, "uri": path, "order": i})
            for result in engine.analyze([task]):
                statuses += [o.status.value for o in result.analyses.values()]
        engine.close()
    finally:
        execution.SourceDecoder = real  # type: ignore[misc]
    per_track = sorted(set(counts.values()))
    print(
        f"4. decodes per track, {len(selected)} analyses fused: {counts} ({statuses.count('computed')} computed)"
    )
    return {"decodes_per_track": per_track, "verdict": "met" if per_track == [1] else "missed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=200)
    parser.add_argument(
        "--long-minutes", default="15,60", help="comma-separated lengths of the long tracks"
    )
    parser.add_argument(
        "--parts",
        default="loads,throughput,windows,rss,decodes",
        help="comma-separated parts to run",
    )
    parser.add_argument(
        "--batch-minutes", type=float, default=120, help="audio in the throughput batch"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="throughput: which analyses")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    tracks = pick_tracks(args.tracks, args.max_seconds)
    print(f"{len(tracks)} tracks, {sum(d for *_, d in tracks) / 60:.1f} min of audio; "
          f"{harness.cores()} cores; load {harness.load_average()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="klio-models-") as scratch:
        figures: dict[str, object] = {}
        if "loads" in parts:
            figures["loads"] = loads_per_job(tracks, scratch)
        if "throughput" in parts:
            batch = batch_tracks(args.batch_minutes)
            print(
                f"throughput batch: {len(batch)} tracks, {sum(d for *_, d in batch) / 60:.1f} min"
            )
            names = tuple(args.models.split(","))
            figures["throughput"] = throughput(batch, scratch, names)
        if "windows" in parts:
            figures["silero_us_per_window"] = silero_windows()
        if "rss" in parts:
            short = harness.short_cuts(1, 60)[0]
            longs = [harness.joined_track(float(m)) for m in args.long_minutes.split(",")]
            figures["peak_rss"] = peak_rss(short, longs, scratch)
        if "decodes" in parts:
            figures["decodes"] = decodes(tracks, scratch)
    figures["load_average"] = harness.load_average()
    figures["targets"] = {
        "model_loads": "<= models x worker processes",
        "klio_over_plain": THROUGHPUT_TARGET,
        "rss_long_over_short": RSS_TARGET,
        "decodes_per_track": 1,
    }
    harness.final_json("models", figures)


if __name__ == "__main__":
    main()
