"""Peak memory of one worker computing ``source_audio`` + ``downsampled_audio`` on one long track.

Each duration runs in a fresh process (the engine the Beam workers run, without Beam), so the
peak RSS is that of one track's decode, resample and write; it should not grow with duration.

Usage (from the repo root)::

    python benchmarks/memory.py [--minutes 1 30 120]

Prints one line per duration, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

_CHILD = """
import json, resource, sys, time
from klio_assets.analyses import load_analyses
from klio_assets.worker.execution import Engine
from klio_assets.worker.plan import RunPlan, plan_analyses
path, out = sys.argv[1], sys.argv[2]
planned = plan_analyses(load_analyses())
engine = Engine(RunPlan(run_id="memory", storage_root=out, analyses=planned,
                        selected=["source_audio", "downsampled_audio"], force=True))
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = engine.analyze([engine.check({"track_id": "long", "uri": path, "order": 0})])[0]
print(json.dumps({"statuses": {k: v["status"] for k, v in result["analyses"].items()},
                  "seconds": time.perf_counter() - started,
                  "rss_after_imports_mb": after_imports / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_flac(path: str, minutes: float) -> None:
    """A stereo 44.1 kHz FLAC of a slowly sweeping tone, written block by block."""
    rate, total = 44100, int(44100 * 60 * minutes)
    with sf.SoundFile(path, "w", rate, 2, format="FLAC", subtype="PCM_16") as fh:
        for start in range(0, total, rate * 10):
            t = np.arange(start, min(total, start + rate * 10)) / rate
            y = (0.3 * np.sin(2 * np.pi * (220 + 20 * np.sin(t / 30)) * t)).astype(np.float32)
            fh.write(np.stack([y, y], axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 30, 120])
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="klio-memory-") as work:
        for minutes in args.minutes:
            path = os.path.join(work, f"long-{minutes:g}min.flac")
            make_flac(path, minutes)
            done = subprocess.run([sys.executable, "-c", _CHILD, path, os.path.join(work, "out")],
                                  capture_output=True, text=True, check=True)
            out = json.loads(done.stdout.strip().splitlines()[-1])
            figures[f"{minutes:g}min"] = out
            print(f"{minutes:6g} min: peak RSS {out['peak_rss_mb']:6.0f} MB "
                  f"({out['rss_after_imports_mb']:.0f} MB after imports), {out['seconds']:.1f} s, {out['statuses']}")
            os.remove(path)
    peaks = [f["peak_rss_mb"] for f in figures.values()]
    figures["peak_spread_mb"] = round(max(peaks) - min(peaks), 1)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
