"""What the benchmarks share: the real-audio corpus and files built from it, timing of child
processes, the load average, and the final JSON line.

Files built from the corpus (joins of whole tracks, short cuts) are cached under
``<repo>/.cache/bench`` (gitignored; ``--cache`` in each benchmark moves it), written to a
temporary name and renamed, so an interrupted build never leaves a file that looks done.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "dev-corpus")
CACHE = os.path.join(REPO, ".cache", "bench")
BUILD_CORPUS = os.path.join(REPO, "..", "shared", "corpus", "build_dev_corpus.sh")
PLAIN_FORMATS = (".wav", ".flac", ".ogg", ".mp3")


def corpus_rows(corpus: str = CORPUS) -> list[dict[str, str]]:
    """The corpus manifest (built with ``build_dev_corpus.sh`` if missing), paths made absolute."""
    manifest = os.path.join(corpus, "manifest.csv")
    if not os.path.exists(manifest):
        if not os.path.exists(BUILD_CORPUS):
            sys.exit(f"no corpus at {corpus} and no {BUILD_CORPUS} to build one")
        subprocess.run(["bash", BUILD_CORPUS, corpus], check=True)
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["path"] = os.path.join(os.path.abspath(corpus), row["path"])
    return rows


def corpus_files(corpus: str, limit: int | None) -> list[str]:
    """Corpus files in formats libsndfile reads completely (WAV, FLAC, Ogg Vorbis, MP3)."""
    files = [r["path"] for r in corpus_rows(corpus) if r["path"].lower().endswith(PLAIN_FORMATS)]
    return files[:limit] if limit else files


def music_tracks(corpus: str = CORPUS) -> list[tuple[str, float]]:
    """The original music tracks (Ogg Vorbis, 44.1 kHz stereo) with their durations in seconds,
    in manifest order; transcodes and joins are left out so that no content repeats."""
    rows = [r for r in corpus_rows(corpus) if r["kind"] == "music" and r["origin"] == "original"]
    return [(r["path"], sf.info(r["path"]).duration) for r in rows]


def _write_atomically(out: str, write: Callable[[str], None]) -> str:
    """``write(temporary path)``, then rename it to ``out``; returns ``out``."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    part = f"{out}.part{os.getpid()}{os.path.splitext(out)[1]}"
    try:
        write(part)
        os.replace(part, out)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return out


#: Frames per block when copying audio (libsndfile's Vorbis writer overflows its stack on
#: one-shot writes of >= 50 s; memory stays bounded for 2-hour joins).
_BLOCK = 1 << 16


def joined_track(
    minutes: float, *, rotation: int = 0, cache: str = CACHE, corpus: str = CORPUS
) -> str:
    """A FLAC (44.1 kHz stereo, 16-bit) of whole corpus music tracks played one after the
    other, cut at ``minutes``; ``rotation`` starts from another track, so that joins of the
    same length differ in content. Cached.

    Decoded and re-encoded track by track (libsndfile): ffmpeg's concat demuxer would decode
    every Ogg Vorbis file with the first file's codebooks.
    """
    out = os.path.join(cache, f"join-{minutes:g}min-r{rotation}.flac")
    if os.path.exists(out):
        return out
    tracks = music_tracks(corpus)
    start = rotation % len(tracks)
    order = tracks[start:] + tracks[:start]
    wanted = round(minutes * 60 * 44100)

    def write(part: str) -> None:
        left = wanted
        with sf.SoundFile(part, "w", 44100, 2, format="FLAC", subtype="PCM_16") as dst:
            while left > 0:  # longer than the whole corpus: go round again
                for path, _ in order:
                    with sf.SoundFile(path) as src:
                        if (src.samplerate, src.channels) != (44100, 2):
                            continue
                        for block in src.blocks(_BLOCK, dtype="float32"):
                            block = block[:left]
                            dst.write(block)
                            left -= len(block)
                            if left <= 0:
                                return

    print(f"building {out}...", file=sys.stderr, flush=True)
    return _write_atomically(out, write)


def short_cuts(
    count: int, seconds: float, *, cache: str = CACHE, corpus: str = CORPUS
) -> list[str]:
    """``count`` Ogg Vorbis cuts of ``seconds`` each from corpus music tracks, every one from
    a different place (track, offset), so that no two share content. Cached."""
    tracks = [(p, d) for p, d in music_tracks(corpus) if d >= seconds]
    places: list[tuple[str, float]] = []
    offset = 0.0
    while len(places) < count:
        fitting = [(p, offset) for p, d in tracks if offset + seconds <= d]
        if not fitting:
            sys.exit(f"the corpus has no room for {count} distinct {seconds:g}-s cuts")
        places.extend(fitting)
        offset += seconds
    out = []
    for path, start in places[:count]:
        name = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(cache, "cuts", f"{name}-{start:g}s-{seconds:g}s.ogg")

        def write(part: str, path: str = path, start: float = start) -> None:
            with sf.SoundFile(path) as src:
                src.seek(round(start * src.samplerate))
                frames = round(seconds * src.samplerate)
                with sf.SoundFile(
                    part, "w", src.samplerate, src.channels, format="OGG", subtype="VORBIS"
                ) as dst:
                    for block in src.blocks(_BLOCK, frames=frames, dtype="float32"):
                        dst.write(block)

        if not os.path.exists(target):
            _write_atomically(target, write)
        out.append(target)
    return out


def warm_page_cache(paths: Sequence[str]) -> None:
    """Read files once so that no measured run pays the disk."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass


def timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (the process and its children) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


#: Runs a command and writes its ``wait4`` figures to a file. Measured commands are started
#: from this small process, not from the benchmark: Linux carries a process's peak RSS over
#: ``fork`` + ``exec`` (``ru_maxrss`` of a child started by a 300 MB parent is at least 300 MB).
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"returncode": os.waitstatus_to_exitcode(status),
               "wall_s": time.perf_counter() - started,
               "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}, fh)
"""


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one process; its wall and CPU seconds, peak RSS in MB, and output.

    CPU is that of the process and its descendants; peak RSS that of the largest single
    process among them (``wait4``), from a small launcher process (see ``_LAUNCHER``).
    """
    with tempfile.TemporaryDirectory(prefix="klio-child-") as folder:
        figures = os.path.join(folder, "figures.json")
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, figures, *cmd],
            env=env,
            capture_output=True,
            text=True,
        )
        if not os.path.exists(figures):
            sys.exit(f"launcher failed ({done.returncode}): {done.stderr[-2000:]}")
        with open(figures) as fh:
            return {**json.load(fh), "stdout": done.stdout, "stderr": done.stderr}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without KLIO_ASSETS_*/DAGSTER_* settings, one BLAS thread, a
    persistent numba cache, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_ASSETS_", "DAGSTER_"))}
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(REPO, ".cache", "numba"))
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (other jobs share this machine: note them with figures)."""
    return [round(x, 2) for x in os.getloadavg()]


def cores() -> int:
    """Usable cores."""
    return len(os.sched_getaffinity(0))


def final_json(benchmark: str, figures: dict[str, Any]) -> None:
    """The benchmark's last line: every figure, as one JSON object."""
    print(json.dumps({"benchmark": benchmark, **figures}, sort_keys=True, default=str))


def klio_home(home: str, tracks: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A fresh ``KLIO_ASSETS_HOME`` with ``(track_id, path)`` registered by ``klio-assets add``;
    returns the environment that uses it."""
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    env = clean_env(KLIO_ASSETS_HOME=home)
    manifest = os.path.join(home, "tracks.csv")
    with open(manifest, "w") as fh:
        fh.write("track_id,path\n")
        fh.writelines(f"{track_id},{path}\n" for track_id, path in tracks)
    cli = [sys.executable, "-m", "klio_assets.cli"]
    added = subprocess.run(
        [*cli, "add", "--manifest", manifest, "--allow-root", "/"],
        env=env,
        capture_output=True,
        text=True,
    )
    if added.returncode:
        sys.exit(f"klio-assets add failed:\n{added.stderr[-3000:]}")
    return env


def fused_vs_separate(
    tracks: Sequence[tuple[str, str]], names: Sequence[str], scratch: str
) -> dict[str, Any]:
    """One ``klio-assets run`` of every analysis in ``names`` at once, against one run per
    analysis in dependency order, each on a fresh home with the same tracks.

    Returns, per mode, wall and CPU seconds from process start (the commands and their
    children), cores busy, the Beam jobs' seconds, and the number of commands; plus
    ``fused_over_separate`` (wall).
    """
    cli = [sys.executable, "-m", "klio_assets.cli"]
    figures: dict[str, Any] = {}
    for mode in ("fused", "separate"):
        env = klio_home(os.path.join(scratch, f"home-{mode}"), tracks)
        commands = [[*cli, "run", *names, "--json"]]
        if mode == "separate":
            commands = [[*cli, "run", name, "--json"] for name in names]
        wall = cpu = beam = 0.0
        for command in commands:
            w, c, done = timed(command, env)
            if done.returncode != 0:
                sys.exit(
                    f"{' '.join(command[2:])} failed:\n{done.stderr[-2000:]}\n{done.stdout[-2000:]}"
                )
            wall, cpu = wall + w, cpu + c
            beam += json.loads(done.stdout)["beam_seconds"]
        figures[mode] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "cores_busy": round(cpu / wall, 2),
            "beam_s": round(beam, 2),
            "commands": len(commands),
            "load_after": load_average(),
        }
        print(
            f"  {mode:8s} {wall:7.1f} s wall, {cpu:7.1f} CPU-s, {cpu / wall:.2f} cores busy, "
            f"Beam jobs {beam:.1f} s ({len(commands)} run(s)); load {load_average()}"
        )
    ratio = figures["fused"]["wall_s"] / figures["separate"]["wall_s"]
    figures["fused_over_separate"] = round(ratio, 3)
    return figures


def worker_plan(
    folder: str,
    tracks: Sequence[tuple[str, str]],
    *,
    run_id: str,
    selected: Sequence[str] = ("downsampled_audio",),
) -> tuple[str, str, list[str]]:
    """What ``klio-assets run`` hands its Beam job, written to files for
    ``python -m klio_assets.worker.pipeline``: the plan (``force``, outputs under
    ``folder/out``), the track list, and the local Beam options.

    Returns
    -------
    (plan path, tracks path, Beam arguments)
    """
    from klio_assets.resources.beam import BeamRunnerResource

    from klio_assets.analyses import load_analyses
    from klio_assets.worker.plan import RunPlan, plan_analyses, planned_for

    beam = BeamRunnerResource()
    analyses = load_analyses()
    graph = {a.name: a for a in analyses}
    plan = RunPlan(
        run_id=run_id,
        storage_root=os.path.join(folder, "out"),
        analyses=planned_for(list(selected), plan_analyses(analyses), graph),
        selected=list(selected),
        force=True,
        lanes=beam.lanes(),
    )
    os.makedirs(folder, exist_ok=True)
    plan_path, tracks_path = os.path.join(folder, "plan.json"), os.path.join(folder, "tracks.jsonl")
    with open(plan_path, "w") as fh:
        fh.write(plan.to_json())
    with open(tracks_path, "w") as fh:
        fh.writelines(json.dumps({"track_id": t, "uri": p}) + "\n" for t, p in tracks)
    return plan_path, tracks_path, beam.pipeline_options_args(job_name=run_id)


PYTHON = sys.executable
CLI = [PYTHON, "-m", "klio_assets.cli"]


def klio_run(args: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """``klio-assets run ARGS --json`` timed from process start: wall, CPU (with children), its JSON."""
    wall, cpu, done = timed([*CLI, "run", *args, "--json"], env)
    if done.returncode not in (0, 1):  # 1: some track failed, reported in the JSON
        sys.exit(
            f"klio-assets run {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    try:
        return wall, cpu, json.loads(done.stdout)
    except ValueError:
        sys.exit(
            f"klio-assets run {' '.join(args)} exited {done.returncode} without its JSON:\n"
            f"{done.stderr[-3000:]}"
        )


def code_lines(path: str, start: str | None = None, end: str | None = None) -> int:
    """Lines of code of a Python file (or between two marker lines): no blanks, comments, docstrings."""
    import ast
    import io
    import tokenize

    with open(path) as fh:
        text = fh.read()
    if start:
        text = text.split(start, 1)[1]
    if end:
        text = text.split(end, 1)[0]
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = (
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    )
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return len(code - docstrings)
