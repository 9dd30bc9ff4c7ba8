"""Local runner vs portable runner with external SDK workers, same tracks.

For each runner, in a fresh ``KLIO_ASSETS_HOME``: register ``--tracks`` generated tracks
(``--seconds`` long each, stereo 44.1 kHz FLAC), then run ``source_audio`` +
``downsampled_audio`` over them with ``execute_range`` (the CLI's code path), timing the whole
run and the Beam job alone:

* ``local``: Beam's FnApiRunner, multi-threaded over every core (the default);
* ``portable``: ``PortableRunner`` against Beam's local job service, SDK workers started by a
  worker pool in another process (``--environment_type=EXTERNAL``); the job service and the
  pool are started before timing (a cluster's are always up).

Usage, from the repository root::

    /tmp/venv/bin/python benchmarks/portable.py [--tracks 8] [--seconds 60] [--repeat 2]

Human-readable figures go to stdout; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _tracks(folder: Path, n: int, seconds: float) -> list[tuple[str, str]]:
    from klio_assets_tests.support import synth

    out = []
    for i in range(n):
        frames = synth.sine(220.0 + 55 * i, seconds, 44100, channels=2)
        path = synth.write(str(folder / f"t{i:03d}.flac"), frames, 44100)
        out.append((f"t{i:03d}", path))
    return out


def _run_once(home: Path, tracks, beam_options: str) -> dict:
    """One fresh home, one run over every track; returns timings."""
    os.environ["KLIO_ASSETS_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["KLIO_ASSETS_BEAM_OPTIONS"] = beam_options
    import dagster as dg

    from klio_assets.catalog.database import get_catalog
    from klio_assets.orchestration import launch
    from klio_assets.orchestration.registration import register_tracks
    from klio_assets.settings import Settings
    from klio_assets.worker.storage import Storage

    settings = Settings.from_env()
    launch.prepare_environment(settings)
    instance = dg.DagsterInstance.get()
    try:
        register_tracks(instance, get_catalog(settings.catalog_url), tracks)
        ids = [t for t, _ in tracks]
        started = time.perf_counter()
        outcome = launch.execute_range(
            instance,
            selected=["source_audio", "downsampled_audio"],
            track_ids=ids,
            storage=Storage(settings.storage),
        )
        wall = time.perf_counter() - started
    finally:
        instance.dispose()
    counts = outcome.summary["assets"]["downsampled_audio"] if outcome.summary else {}
    if not outcome.success or counts.get("computed") != len(tracks):
        raise SystemExit(f"run failed or incomplete: {outcome.error or counts}")
    return {
        "wall_s": round(wall, 3),
        "beam_s": round(outcome.summary["beam_seconds"], 3)
        if "beam_seconds" in outcome.summary
        else None,
        "job_id": outcome.summary["beam_job_id"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=2, help="runs per runner (best is reported)")
    args = parser.parse_args()

    from klio_assets_tests.support import services

    with tempfile.TemporaryDirectory(prefix="klio-portable-") as tmp:
        root = Path(tmp)
        tracks = _tracks(root / "audio", args.tracks, args.seconds)
        audio_s = args.tracks * args.seconds
        results: dict[str, list[dict]] = {"local": [], "portable": []}
        with services.portable_beam(root / "beam") as beam:
            portable_options = " ".join(beam.pipeline_args())
            for i in range(args.repeat):
                for runner, options in (("local", ""), ("portable", portable_options)):
                    timing = _run_once(root / f"home-{runner}-{i}", tracks, options)
                    results[runner].append(timing)
                    print(
                        f"{runner:9s} run {i + 1}: wall {timing['wall_s']:.1f} s, "
                        f"Beam job {timing['beam_s']} s ({timing['job_id']})"
                    )
    best = {r: min(results[r], key=lambda t: t["wall_s"]) for r in results}
    ratio = best["portable"]["wall_s"] / best["local"]["wall_s"]
    beam_ratio = (
        best["portable"]["beam_s"] / best["local"]["beam_s"]
        if best["local"]["beam_s"] and best["portable"]["beam_s"]
        else None
    )
    print(f"{args.tracks} tracks, {audio_s:.0f} s of audio; best of {args.repeat}:")
    print(f"  local    {best['local']['wall_s']:.1f} s wall")
    print(f"  portable {best['portable']['wall_s']:.1f} s wall")
    print(
        f"  portable / local = {ratio:.2f} (wall)"
        + (f", {beam_ratio:.2f} (Beam job)" if beam_ratio else "")
    )
    print(
        json.dumps(
            {
                "tracks": args.tracks,
                "seconds_each": args.seconds,
                "cores": len(os.sched_getaffinity(0)),
                "runs": results,
                "ratio_wall": round(ratio, 3),
                "ratio_beam": round(beam_ratio, 3) if beam_ratio else None,
            }
        )
    )


if __name__ == "__main__":
    main()
