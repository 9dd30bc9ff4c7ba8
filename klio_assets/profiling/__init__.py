"""Profiling one analysis in this process: ``klio-assets profile ASSET --tracks ID...``.

Klio's ``klio job profile``, for one analysis and a few tracks: the worker's
:class:`~klio_assets.worker.execution.Engine` runs here, with no Dagster run and no Beam, and
writes into a temporary storage root (deleted afterwards unless kept). Nothing is read from or
written to the deployment's storage, and nothing is recorded in Dagster or the catalog.

How each figure is obtained:

* **Steps.** An analysis that reads others (``Upstream``) needs their outputs: its upstream
  chain is computed here too, into the temporary root, one analysis at a time, before it.
  Each analysis runs alone, as a Beam worker runs it for one track: check (probe and hash the
  source), decode and resample if it reads the source, load its upstream outputs, call the
  function, write the output. Upstream steps are reported apart from the asset's own.
* **CPU seconds**: ``time.process_time()`` of this process (every thread) plus the CPU time of
  child processes that ended during the step (ffmpeg for Opus/M4A, ``fpcalc``).
* **Peak memory**: the kernel's peak resident set size of this process (``VmHWM``), reset to
  the current size before each step by writing ``5`` to ``/proc/self/clear_refs``: per step,
  and nothing falls between samples. Where that is not allowed, a thread samples the resident size every 5 ms (short
  peaks can be missed); the method is reported. Child processes are not included.
* **Function vs framework**: the analysis function is wrapped; time inside it counts as the
  function's, except the time its input streams spend producing blocks (decoding, resampling,
  reading an upstream file), which is the framework's, like everything outside the call.
  Work a function hands back lazily (a stream it returns is written after it returns) counts
  as the framework's too.
* **Warm-up**: first-use costs (importing the analysis' libraries, loading or compiling
  librosa's numba functions: 2-3 s with a warm cache, 20-30 s cold) would land on the first
  track. Unless turned off, the whole chain first runs once on a generated 8-s clip; that cost
  is reported on its own and no track carries it.
* **Profiles** come from separate passes over the tracks whose figures succeeded, so the
  figures carry no profiler overhead: ``cProfile`` while the analysis function runs (wall
  time, callees included), then optionally ``line_profiler`` over the function and the other
  functions of its module (the ``profile`` extra).

This module imports nothing from Dagster.
"""

from __future__ import annotations

import cProfile
import dataclasses
import importlib.util
import inspect
import os
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from klio_assets.catalog.trackids import track_id_from_name, validate_track_id
from klio_assets.errors import CatalogError, ParameterError
from klio_assets.profiling.measure import (
    PeakMemory,
    ProfiledFunction,
    StepFigures,
    TimedFunction,
    cpu_seconds,
    round_or_none,
)
from klio_assets.profiling.tables import line_table, top_functions
from klio_assets.settings import Settings
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.execution import COMPUTED, FAILED, Engine, track_result
from klio_assets.worker.plan import PlannedAnalysis, RunPlan, planned_for

#: Track ID of the generated warm-up clip (never a catalog track's output: a temporary root).
WARMUP_TRACK = "klio-profile-warmup"
WARMUP_SECONDS = 8.0
#: Beam options that set decode limits (as in :mod:`klio_assets.worker.pipeline`), by field.
_LIMIT_OPTIONS = {
    "track_timeout_s": "timeout_s",
    "max_duration_s": "max_duration_s",
    "max_channels": "max_channels",
    "max_sample_rate": "max_sample_rate",
}


# -- what to profile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One track to profile.

    Attributes
    ----------
    track_id : str
    uri : str
        The source audio (from the catalog, or a local file given with ``--file``).
    registered : bool
        Whether it came from the track catalog.
    """

    track_id: str
    uri: str
    registered: bool = True


def resolve_targets(
    settings: Settings, track_ids: Sequence[str], files: Sequence[str] = ()
) -> list[Target]:
    """The tracks to profile: registered IDs looked up in the catalog, local files as given.

    Parameters
    ----------
    settings : Settings
    track_ids : sequence of str
        Registered track IDs (untrusted: validated here).
    files : sequence of str
        Local audio files not registered; their IDs are derived from their names.

    Raises
    ------
    TrackIdError
        An ID is not valid.
    CatalogError
        An ID is not registered, or there is no catalog to look it up in.
    ParameterError
        A file is not a regular local file, or two targets get the same ID.
    """
    targets: list[Target] = []
    ids = list(dict.fromkeys(validate_track_id(t) for t in track_ids))
    if ids:
        from klio_assets.catalog.database import get_catalog  # noqa: PLC0415 - SQLAlchemy

        url = settings.catalog_url
        if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
            raise CatalogError(
                f"no track catalog at {url[len('sqlite:///') :]}: register tracks with "
                "`klio-assets add`, or profile local files with --file"
            )
        uris = get_catalog(url).resolve(ids)
        unknown = [t for t in ids if t not in uris]
        if unknown:
            raise CatalogError(
                f"tracks not registered: {', '.join(unknown)} (klio-assets add registers them)"
            )
        targets.extend(Target(t, uris[t]) for t in ids)
    for given in dict.fromkeys(files):
        if "://" in given:
            raise ParameterError(f"--file takes a local file, not a URI: {given!r}")
        path = os.path.abspath(given)
        if not os.path.isfile(path):  # a FIFO or a device would block a decoder
            raise ParameterError(f"--file {given!r} is not a regular file")
        track_id = track_id_from_name(os.path.basename(path))
        targets.append(Target(track_id, path, registered=False))
    seen: dict[str, str] = {}
    for target in targets:
        if target.track_id in seen:
            raise ParameterError(
                f"two tracks would be profiled as {target.track_id!r}: {seen[target.track_id]} and {target.uri}"
            )
        seen[target.track_id] = target.uri
    return targets


def decode_limits(settings: Settings) -> dict[str, Any]:
    """The decode limits a Beam worker of this deployment would apply (from its Beam options)."""
    limits: dict[str, Any] = {}
    options = list(settings.beam_options)
    for i, option in enumerate(options):
        name, _, value = option.lstrip("-").partition("=")
        if name in _LIMIT_OPTIONS:
            if not value and i + 1 < len(options):
                value = options[i + 1]
            field_name = _LIMIT_OPTIONS[name]
            try:
                limits[field_name] = (
                    int(value)
                    if field_name in ("max_channels", "max_sample_rate")
                    else float(value)
                )
            except ValueError as exc:
                raise ParameterError(f"Beam option --{name}={value!r} is not a number") from exc
    return limits


# -- running -----------------------------------------------------------------------------------


@dataclass
class ProfileReport:
    """The outcome of :func:`profile_analysis` (see :meth:`to_json` for the contract)."""

    asset: str
    version: str
    upstream: list[str]
    storage_root: str
    kept: bool
    memory_method: str
    warmup: dict[str, Any] | None
    repeat: int = 1
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    lines: dict[str, Any] | None = None
    output: str | None = None

    @property
    def failed(self) -> list[str]:
        """Track IDs whose asset step failed."""
        return [t for t, r in self.tracks.items() if r["status"] == FAILED]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data; the field names are a contract.

        Returns
        -------
        dict
            ``asset``, ``version``, ``upstream`` (analyses computed before it, in order),
            ``storage_root``, ``kept``, ``memory_method``, ``repeat``, ``warmup`` (cost of the
            generated clip, or null), ``tracks`` (track ID to ``uri``, ``registered``, step
            figures of the asset, ``wall_s_runs``, and ``upstream``: analysis to its step
            figures), ``totals``, ``profile``
            (cProfile top functions, or null), ``lines`` (line_profiler, or null), ``output``
            (the pstats file written, or null).
        """
        done = [r for r in self.tracks.values() if r["status"] == COMPUTED]
        audio = sum(r["audio_s"] or 0.0 for r in done)
        wall = sum(r["wall_s"] for r in done)
        cpu = sum(r["cpu_s"] for r in done)
        upstream_wall = sum(u["wall_s"] for r in done for u in r["upstream"].values())
        return {
            "asset": self.asset,
            "version": self.version,
            "upstream": self.upstream,
            "storage_root": self.storage_root,
            "kept": self.kept,
            "memory_method": self.memory_method,
            "repeat": self.repeat,
            "warmup": self.warmup,
            "tracks": self.tracks,
            "totals": {
                "tracks": len(self.tracks),
                "computed": len(done),
                "failed": len(self.failed),
                "audio_s": round(audio, 4),
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "upstream_wall_s": round(upstream_wall, 4),
                "x_realtime": round(audio / wall, 1) if wall > 0 else None,
                "x_realtime_cpu": round(audio / cpu, 1) if cpu > 0 else None,
            },
            "profile": self.profile,
            "lines": self.lines,
            "output": self.output,
        }


def write_warmup_clip(path: str, seconds: float = WARMUP_SECONDS) -> str:
    """A stereo 44.1 kHz WAV with a tone, clicks at 120 BPM and a little noise.

    Enough for onset and beat trackers, spectrograms and resamplers to take their usual code
    paths (and numba to load or compile its functions) without a real track.
    """
    rate = 44100
    t = np.arange(int(seconds * rate)) / rate
    y = 0.2 * np.sin(2 * np.pi * 220.0 * t) + 0.01 * np.random.default_rng(0).standard_normal(
        len(t)
    )
    clicks = (t % 0.5) < 0.01
    y[clicks] += 0.5 * np.sin(2 * np.pi * 2000.0 * t[clicks])
    frames = np.stack([y, y * 0.9], axis=1).astype(np.float32)
    sf.write(path, frames, rate, subtype="PCM_16")
    return path


class Profiler:
    """Runs one analysis and its upstream chain on tracks, here, into a temporary root.

    Parameters
    ----------
    asset : str
        The analysis to profile.
    planned : mapping of str to PlannedAnalysis
        Every analysis of the deployment (:func:`~klio_assets.worker.plan.plan_analyses`).
    graph : mapping of str to Analysis
        The same analyses by name.
    storage_root : str
        A local folder of this run only.
    limits : dict
        Decode limits (:class:`~klio_assets.worker.audio.DecodeLimits` fields).
    """

    def __init__(
        self,
        asset: str,
        *,
        planned: Mapping[str, PlannedAnalysis],
        graph: Mapping[str, Analysis],
        storage_root: str,
        limits: Mapping[str, Any] | None = None,
    ):
        if asset not in planned:
            raise ParameterError(f"unknown analysis {asset!r}; known: {', '.join(planned)}")
        self.asset = asset
        self.chain = planned_for([asset], planned, graph)
        self.steps = list(self.chain)  # topological: upstreams first, the asset last
        self.storage_root = storage_root
        self.engines = {
            name: Engine(
                RunPlan(
                    run_id="profile",
                    storage_root=storage_root,
                    analyses=self.chain,
                    selected=[name],
                    force=True,
                    limits=dict(limits or {}),
                )
            )
            for name in self.steps
        }
        self.originals = {name: self.engines[name].analyses[name] for name in self.steps}
        self.analysis = self.originals[asset]
        self.timers = {name: TimedFunction(a.fn) for name, a in self.originals.items()}
        self.memory = PeakMemory()

    def _use(self, name: str, fn: Callable[..., Any]) -> None:
        """Make the engine of step ``name`` call ``fn`` in place of the analysis function."""
        self.engines[name].analyses[name] = dataclasses.replace(self.originals[name], fn=fn)

    def _step(self, name: str, target: Target) -> StepFigures:
        engine = self.engines[name]
        timer = self.timers[name]
        timer.reset()
        rss_before = self.memory.start()
        cpu0, child0 = cpu_seconds()
        wall0 = time.perf_counter()
        try:
            task = engine.check({"track_id": target.track_id, "uri": target.uri, "order": 0})
            result = engine.analyze([task])[0] if task["pending"] else track_result(task)
        finally:
            wall = time.perf_counter() - wall0
            cpu1, child1 = cpu_seconds()
            peak = self.memory.stop()
        record = result.analyses[name]
        info = task.get("info") or {}
        audio = record.duration_s
        if audio is None and info.get("sample_rate"):
            audio = info.get("frames", 0) / info["sample_rate"]
        computed = record.status == COMPUTED
        timed = computed and self.engines[name].analyses[name].fn is timer
        return StepFigures(
            status=COMPUTED if computed else FAILED,
            reason=None if computed else record.reason,
            audio_s=audio,
            wall_s=wall,
            cpu_s=(cpu1 - cpu0) + (child1 - child0),
            child_cpu_s=child1 - child0,
            rss_before_mb=rss_before,
            peak_rss_mb=peak,
            function_wall_s=timer.wall_s if timed else None,
            function_cpu_s=timer.cpu_s if timed else None,
        )

    def _chain(self, target: Target) -> tuple[dict[str, StepFigures], StepFigures]:
        """Every step for one track, upstreams first; the asset is not run if one fails."""
        upstream: dict[str, StepFigures] = {}
        for name in self.steps[:-1]:
            figures = upstream[name] = self._step(name, target)
            if figures.status != COMPUTED:
                return upstream, StepFigures(
                    status=FAILED,
                    reason=f"upstream {name!r} failed: {figures.reason}",
                    audio_s=figures.audio_s,
                    wall_s=None,
                    cpu_s=None,
                    child_cpu_s=None,
                )
        return upstream, self._step(self.asset, target)

    def _time_functions(self) -> None:
        for name in self.steps:
            self._use(name, self.timers[name])

    def warm_up(self, folder: str) -> dict[str, Any]:
        """Run the whole chain once on a generated clip: its status and cost, all steps together."""
        clip = write_warmup_clip(os.path.join(folder, f"{WARMUP_TRACK}.wav"))
        self._time_functions()
        cpu0, child0 = cpu_seconds()
        wall0 = time.perf_counter()
        _, own = self._chain(Target(WARMUP_TRACK, clip, registered=False))
        cpu1, child1 = cpu_seconds()
        return {
            "status": own.status,
            "reason": own.reason,
            "audio_s": round_or_none(own.audio_s, 4),
            "wall_s": round(time.perf_counter() - wall0, 4),
            "cpu_s": round((cpu1 - cpu0) + (child1 - child0), 4),
        }

    def measure(self, targets: Sequence[Target], *, repeat: int = 1) -> dict[str, dict[str, Any]]:
        """Figures per track: the asset's step, with its upstream steps under ``upstream``.

        With ``repeat`` > 1 the asset's step runs that many times per track (its upstream
        outputs stay in place) and the run of median wall time is reported; the wall times of
        all runs are in ``wall_s_runs``. A run that fails is reported instead.
        """
        self._time_functions()
        out: dict[str, dict[str, Any]] = {}
        for target in targets:
            upstream, own = self._chain(target)
            runs = [own]
            while own.status == COMPUTED and len(runs) < repeat and runs[-1].status == COMPUTED:
                runs.append(self._step(self.asset, target))
            failed = [r for r in runs if r.status != COMPUTED]
            chosen = (
                failed[0]
                if failed
                else sorted(runs, key=lambda r: r.wall_s or 0.0)[(len(runs) - 1) // 2]
            )
            out[target.track_id] = {
                "uri": target.uri,
                "registered": target.registered,
                **chosen.to_dict(),
                "wall_s_runs": [round_or_none(r.wall_s, 4) for r in runs if r.wall_s is not None],
                "upstream": {name: figures.to_dict() for name, figures in upstream.items()},
            }
        return out

    def _rerun(self, targets: Sequence[Target], fn: Callable[..., Any]) -> int:
        """Run the asset's step again on ``targets`` (upstream outputs are in place)."""
        self._use(self.asset, fn)
        for target in targets:
            self._step(self.asset, target)
        return len(targets)

    def profile_functions(
        self, targets: Sequence[Target], *, top: int, output: str | None = None
    ) -> dict[str, Any]:
        """cProfile over the analysis function on ``targets``: the ``top`` by cumulative time."""
        profiler = cProfile.Profile()
        self._rerun(targets, ProfiledFunction(self.analysis.fn, profiler.enable, profiler.disable))
        stats = pstats.Stats(profiler)
        if output:
            try:
                stats.dump_stats(output)
            except OSError as exc:
                raise ParameterError(f"cannot write the profile to {output}: {exc}") from exc
        return top_functions(stats, self.analysis.fn, top=top, tracks=len(targets))

    def profile_lines(self, targets: Sequence[Target]) -> dict[str, Any]:
        """line_profiler over the analysis function and the other functions of its module."""
        from line_profiler import LineProfiler  # noqa: PLC0415 - optional extra

        profiler = LineProfiler()
        fn = self.analysis.fn
        profiler.add_function(fn)
        module = inspect.getmodule(fn)
        for value in vars(module).values() if module else ():
            if inspect.isfunction(value) and value.__module__ == fn.__module__ and value is not fn:
                profiler.add_function(value)
        self._rerun(
            targets, ProfiledFunction(fn, profiler.enable_by_count, profiler.disable_by_count)
        )
        return line_table(profiler.get_stats(), tracks=len(targets))


def profile_analysis(
    asset: str,
    targets: Sequence[Target],
    *,
    planned: Mapping[str, PlannedAnalysis],
    graph: Mapping[str, Analysis],
    limits: Mapping[str, Any] | None = None,
    warmup: bool = True,
    functions: bool = True,
    lines: bool = False,
    top: int = 20,
    output: str | None = None,
    keep: bool = False,
    repeat: int = 1,
    on_progress: Callable[[str], None] | None = None,
) -> ProfileReport:
    """Profile ``asset`` on ``targets`` in this process (see the module docstring).

    Parameters
    ----------
    asset : str
    targets : sequence of Target
    planned, graph : mapping
        The deployment's analyses, planned and by name.
    limits : dict, optional
        Decode limits (:func:`decode_limits`).
    warmup : bool
        Run the chain once on a generated clip first, reported apart.
    functions : bool
        Profile the analysis function with cProfile (a second pass).
    lines : bool
        Profile it line by line with line_profiler (a further pass).
    top : int
        Functions kept in the cProfile table.
    output : str, optional
        Write the cProfile statistics there (pstats format, for snakeviz or ``pstats``).
    keep : bool
        Keep the temporary root (its path is in the report).
    repeat : int
        Runs of the asset's step per track for the figures; the median run is reported.
    on_progress : callable, optional
        Called with a short description before each phase.

    Returns
    -------
    ProfileReport
    """
    if top < 1 or repeat < 1:
        raise ParameterError(f"top={top} and repeat={repeat} must be at least 1")
    if lines and importlib.util.find_spec("line_profiler") is None:
        raise ParameterError(
            "a per-line profile needs line_profiler: pip install 'klio-assets[profile]'"
        )
    if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise ParameterError(f"cannot write the profile to {output}: its folder does not exist")
    say = on_progress or (lambda _message: None)
    work = tempfile.mkdtemp(prefix="klio-profile-")
    root = os.path.join(work, "outputs")
    try:
        profiler = Profiler(asset, planned=planned, graph=graph, storage_root=root, limits=limits)
        report = ProfileReport(
            asset=asset,
            version=planned[asset].version,
            upstream=profiler.steps[:-1],
            storage_root=root,
            kept=keep,
            memory_method=profiler.memory.method,
            warmup=None,
            repeat=repeat,
        )
        if warmup:
            say(f"warm-up on a generated {WARMUP_SECONDS:g}-s clip")
            report.warmup = profiler.warm_up(work)
        say(f"measuring {len(targets)} track(s)" + (f", {repeat} runs each" if repeat > 1 else ""))
        report.tracks = profiler.measure(targets, repeat=repeat)
        done = [t for t in targets if report.tracks[t.track_id]["status"] == COMPUTED]
        if functions and done:
            say(f"cProfile pass over {len(done)} track(s)")
            report.profile = profiler.profile_functions(done, top=top, output=output)
            report.output = os.path.abspath(output) if output else None
        if lines and done:
            say(f"line_profiler pass over {len(done)} track(s)")
            report.lines = profiler.profile_lines(done)
        return report
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
