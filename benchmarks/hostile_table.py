"""Hostile inputs and kill -9: the figures of issues 7 and 17.

1. The hostile corpus (``klio_assets_tests/support/hostile.py``: ~30 broken, odd and good files, a
   stalled decoder) in ONE mixed batch through ``klio-assets add`` and ``klio-assets run``:
   the table of inputs and outcomes, and the number of good tracks lost (target 0).
2. ``--kill-rounds N``: a run over 30 one-minute FLAC tracks killed with SIGKILL at
   different points (after 10 %, 30 %, 50 %, 70 %, 90 % of outputs), then run again; counts
   outputs that are partial, corrupt or unreadable (target 0), temporary files visible as
   outputs (target 0), temporary files left next to outputs after the rerun (target 0) and
   tracks computed twice (target 0).

Usage: ``python benchmarks/hostile_table.py [--kill-rounds 3]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from klio_assets_tests.support import hostile, synth

ANALYSES = ("source_audio", "downsampled_audio")
_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}


def cli(*args: str, home: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**_CLEAN_ENV, **(env or {}), "KLIO_ASSETS_HOME": home}
    return subprocess.run([sys.executable, "-m", "klio_assets.cli", *args], env=full,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


def hostile_batch(base: str) -> dict:
    folder = os.path.join(base, "library")
    cases = hostile.make_corpus(folder, outside=os.path.join(base, "outside"))
    env = {
        "PATH": hostile.hanging_ffmpeg(os.path.join(base, "bin")) + os.pathsep + os.environ["PATH"],
        "KLIO_ASSETS_TRACK_TIMEOUT": str(hostile.TRACK_TIMEOUT_S),
        "KLIO_ASSETS_MAX_DURATION": str(hostile.MAX_DURATION_S),
    }
    home = os.path.join(base, "home")
    added = cli("add", folder, home=home, env=env)
    started = time.perf_counter()
    done = cli("run", *ANALYSES, "--json", home=home, env=env)
    wall = time.perf_counter() - started
    run = json.loads(done.stdout)
    outcomes = hostile.judge(
        cases, folder=folder, add_stderr=added.stderr, run=run, analyses=ANALYSES
    )
    for number, title in ((1, "first round (issue 7)"), (2, "second round (issue 17)")):
        print(f"\n### Hostile inputs, {title}\n")
        print(hostile.markdown_table([o for o in outcomes if o.case.round == number]))
    good = [o for o in outcomes if o.case.expect == "computed"]
    return {
        "inputs": len(outcomes),
        "as_expected": sum(o.ok for o in outcomes),
        "good_tracks": len(good),
        "good_tracks_lost": sum(not o.ok for o in good),
        "failed_with_reason": sum(o.ok and o.case.expect == "failed" for o in outcomes),
        "refused_at_add": sum(o.ok and o.case.expect == "refused" for o in outcomes),
        "run_wall_s": round(wall, 1),
        "track_timeout_s": hostile.TRACK_TIMEOUT_S,
    }


def _outputs(root: str) -> list[str]:
    return [p for p in glob.glob(os.path.join(root, "*", "v*", "[0-9a-f][0-9a-f]", "*"))
            if not os.path.basename(p).startswith(".")]  # fmt: skip


def _corrupt(path: str, frames: int, rate: int) -> bool:
    import soundfile as sf

    from klio_assets.worker.audio import exact_length

    try:
        if path.endswith(".flac"):
            y, sr = sf.read(path, dtype="float32")
            return sr != 22050 or len(y) != exact_length(frames, rate, 22050)
        with open(path) as fh:
            return json.load(fh)["frames"] != frames
    except Exception:  # unreadable is what is being counted
        return True


def kill_rounds(base: str, rounds: int) -> dict:
    n, seconds, rate = 30, 60.0, 48000
    library = os.path.join(base, "kill-library")
    for i in range(n):
        synth.write(
            os.path.join(library, f"t{i:03d}.flac"), synth.sine(200 + 13 * i, seconds, rate), rate
        )
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
    totals = {"rounds": 0, "killed_midway": 0, "outputs_after_kill": 0, "corrupt_after_kill": 0,
              "corrupt_after_rerun": 0, "temporaries_visible": 0, "temporaries_left": 0,
              "recomputed_after_kill": 0, "tracks_failed": 0}  # fmt: skip
    for r in range(rounds):
        home = os.path.join(base, f"kill-home-{r}")
        outputs = os.path.join(home, "outputs")
        cli("add", library, home=home)
        proc = subprocess.Popen([sys.executable, "-m", "klio_assets.cli", "run", *ANALYSES, "--json"],
                                env={**_CLEAN_ENV, "KLIO_ASSETS_HOME": home}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        target = max(1, int(fractions[r % len(fractions)] * 2 * n))
        while len(_outputs(outputs)) < target and proc.poll() is None:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        survivors = _outputs(outputs)
        stamps = {p: os.stat(p).st_mtime_ns for p in survivors}
        totals["rounds"] += 1
        totals["killed_midway"] += proc.returncode == -signal.SIGKILL and len(survivors) < 2 * n
        totals["outputs_after_kill"] += len(survivors)
        totals["corrupt_after_kill"] += sum(
            _corrupt(p, int(seconds * rate), rate) for p in survivors
        )
        rerun = json.loads(cli("run", *ANALYSES, "--json", home=home).stdout)
        final = _outputs(outputs)
        totals["corrupt_after_rerun"] += sum(_corrupt(p, int(seconds * rate), rate) for p in final)
        totals["corrupt_after_rerun"] += 2 * n - len(final)  # a missing output counts as lost
        totals["temporaries_visible"] += sum(".tmp-" in p for p in final)
        totals["temporaries_left"] += sum(  # next to outputs; the killed run's _runs/ scratch aside
            "/_runs/" not in p
            for p in glob.glob(os.path.join(outputs, "**", ".*.tmp-*"), recursive=True)
        )
        totals["recomputed_after_kill"] += sum(
            os.stat(p).st_mtime_ns != t for p, t in stamps.items()
        )
        totals["tracks_failed"] += sum(c.get("failed", 0) for c in rerun["assets"].values())
        print(f"round {r + 1}: killed after {len(survivors)}/{2 * n} outputs; rerun "
              f"{rerun['assets']}")  # fmt: skip
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kill-rounds", type=int, default=0, help="SIGKILL rounds (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="klio-hostile-") as base:
        figures = {"hostile": hostile_batch(base)}
        if args.kill_rounds:
            figures["kill9"] = kill_rounds(base, args.kill_rounds)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
