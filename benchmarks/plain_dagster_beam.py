"""Baseline (b): ``downsampled_audio`` hand-written as a plain Dagster asset + a plain Beam pipeline.

What an engineer writes without klio-assets for the same result: a dynamically partitioned
asset whose ranged run launches one Beam pipeline (FnApiRunner, multi-threaded, a Reshuffle
before the heavy step) that skips tracks whose output exists, decodes block-wise, downmixes,
resamples with soxr and writes 16-bit FLAC atomically. It has none of klio-assets' per-track
reporting, content dedup, versions, retries or failure isolation: one broken file fails the
whole run. The code between the ``user code`` markers is what ``throughput.py`` counts as its
lines of code.

Usage (``throughput.py`` calls it)::

    python benchmarks/plain_dagster_beam.py --home DIR --out DIR [--workers 2] FILE...

Prints one JSON line: files, audio seconds, computed, skipped, wall seconds of the run.
"""

import argparse
import json
import os
import sys
import time

# --- user code ---
import apache_beam as beam
import dagster as dg
import numpy as np
import soundfile as sf
import soxr
from apache_beam.options.pipeline_options import PipelineOptions

TARGET_RATE = 22050
tracks = dg.DynamicPartitionsDefinition(name="tracks")


class Downsample(beam.DoFn):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def process(self, element):
        track_id, path = element
        dst = os.path.join(self.out_dir, track_id + ".flac")
        if os.path.exists(dst):
            yield track_id, "skipped", 0.0
            return
        tmp = dst + ".tmp.flac"
        with sf.SoundFile(path) as src:
            stream = soxr.ResampleStream(
                src.samplerate, TARGET_RATE, 1, dtype="float32", quality="HQ"
            )
            with sf.SoundFile(tmp, "w", TARGET_RATE, 1, format="FLAC", subtype="PCM_16") as out:
                for block in src.blocks(blocksize=65536, dtype="float32", always_2d=True):
                    mono = (
                        (block[:, 0] + block[:, 1]) * np.float32(0.5)
                        if block.shape[1] == 2
                        else block[:, 0]
                    )
                    out.write(np.clip(stream.resample_chunk(mono), -1.0, 1.0))
                out.write(
                    np.clip(stream.resample_chunk(np.zeros(0, np.float32), last=True), -1.0, 1.0)
                )
            seconds = src.frames / src.samplerate
        os.replace(tmp, dst)
        yield track_id, "computed", seconds


class DownsampleConfig(dg.Config):
    paths_json: str
    out_dir: str
    workers: int = 2


@dg.asset(partitions_def=tracks, backfill_policy=dg.BackfillPolicy.single_run())
def plain_downsampled_audio(context: dg.AssetExecutionContext, config: DownsampleConfig):
    with open(config.paths_json) as fh:
        paths = json.load(fh)
    os.makedirs(config.out_dir, exist_ok=True)
    elements = [(t, paths[t]) for t in context.partition_keys]
    options = PipelineOptions(
        runner="FnApiRunner",
        direct_running_mode="multi_threading",
        direct_num_workers=config.workers,
    )
    with beam.Pipeline(options=options) as p:
        results = (
            p
            | beam.Create(elements)
            | beam.Reshuffle()
            | beam.ParDo(Downsample(config.out_dir))
            | beam.combiners.ToList()
        )
        results | beam.Map(
            lambda rows: json.dump(rows, open(os.path.join(config.out_dir, "_results.json"), "w"))
        )
    with open(os.path.join(config.out_dir, "_results.json")) as fh:
        rows = json.load(fh)
    computed = sum(1 for _, status, _ in rows if status == "computed")
    return dg.MaterializeResult(
        metadata={
            "computed": computed,
            "skipped": len(rows) - computed,
            "audio_s": sum(s for *_, s in rows),
        }
    )


defs = dg.Definitions(assets=[plain_downsampled_audio])
# --- end of user code ---


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    os.makedirs(args.home, exist_ok=True)
    paths = {f"t{i:05d}": os.path.abspath(p) for i, p in enumerate(args.files)}
    paths_json = os.path.join(args.home, "paths.json")
    with open(paths_json, "w") as fh:
        json.dump(paths, fh)
    instance = (
        dg.DagsterInstance.local_temp(args.home)
        if not os.path.exists(os.path.join(args.home, "history"))
        else dg.DagsterInstance.from_config(args.home)
    )
    keys = list(paths)
    if not instance.has_dynamic_partition("tracks", keys[0]):
        instance.add_dynamic_partitions("tracks", keys)
    job = dg.define_asset_job("downsample", selection=[plain_downsampled_audio]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )
    result = job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        run_config={
            "ops": {
                "plain_downsampled_audio": {
                    "config": {
                        "paths_json": paths_json,
                        "out_dir": args.out,
                        "workers": args.workers,
                    }
                }
            }
        },
    )
    mats = result.asset_materializations_for_node("plain_downsampled_audio")
    meta = mats[0].metadata if mats else {}
    print(
        json.dumps(
            {
                "files": len(keys),
                "success": result.success,
                "computed": meta["computed"].value if "computed" in meta else None,
                "skipped": meta["skipped"].value if "skipped" in meta else None,
                "audio_s": meta["audio_s"].value if "audio_s" in meta else None,
                "materialized_partitions": len(
                    instance.get_materialized_partitions(dg.AssetKey("plain_downsampled_audio"))
                ),
                "wall_s": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
