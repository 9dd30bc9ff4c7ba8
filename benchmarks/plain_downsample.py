"""Baseline: downsample files with a plain soundfile + soxr loop in a process pool.

The same work as ``downsampled_audio`` (block-wise decode, ``(L + R) * 0.5`` downmix, soxr
HQ to 22.05 kHz, 16-bit FLAC written block-wise, skip if the output exists), with none of
the framework: what "the decoder's limit" means on this machine.

Usage: python benchmarks/plain_downsample.py --out DIR [--workers 2] FILE...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf
import soxr

TARGET = 22050


def downsample(job: tuple[str, str]) -> float:
    src, dst = job
    if os.path.exists(dst):
        return 0.0
    with sf.SoundFile(src) as f:
        stream = soxr.ResampleStream(f.samplerate, TARGET, 1, dtype="float32", quality="HQ")
        seconds = f.frames / f.samplerate
        with sf.SoundFile(dst + ".tmp", "w", TARGET, 1, format="FLAC", subtype="PCM_16") as out:
            for block in f.blocks(blocksize=65536, dtype="float32", always_2d=True):
                mono = (
                    (block[:, 0] + block[:, 1]) * np.float32(0.5)
                    if block.shape[1] == 2
                    else block[:, 0]
                )
                y = stream.resample_chunk(mono)
                if len(y):
                    out.write(np.clip(y, -1.0, 1.0))
            out.write(np.clip(stream.resample_chunk(np.zeros(0, np.float32), last=True), -1.0, 1.0))
    os.replace(dst + ".tmp", dst)
    return seconds


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jobs = [
        (f, os.path.join(args.out, hashlib.sha1(f.encode()).hexdigest()[:16] + ".flac"))
        for f in args.files
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        audio_s = sum(pool.map(downsample, jobs))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "files": len(jobs),
                "audio_s": audio_s,
                "pool_wall_s": wall,
                "pool_cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
