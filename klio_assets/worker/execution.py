"""Per-track execution: existence checks, content sharing, one decode feeding every analysis.

The Beam transforms in :mod:`klio_assets.worker.pipeline` are thin; the work happens here,
in plain Python that can be tested and profiled without Beam or Dagster:

* :meth:`Engine.check` (every track): which selected outputs already exist for their
  version; for the others, the source's header and content hash.
* :meth:`Engine.analyze` (tracks with work left, grouped by content hash): compute once for
  the group's first track, reuse for the rest; decode the source once and feed every
  analysis that reads it, in lockstep, through bounded queues.
* :meth:`Engine.plan_group` (dry runs): the same decisions, nothing computed or written.

Every outcome is an :class:`~klio_assets.worker.records.AnalysisOutcome` per analysis and
track, gathered in one :class:`~klio_assets.worker.records.TrackResult` per track:
``computed``, ``skipped`` or ``failed`` (``would_compute``/``would_skip`` in a dry run). No
exception escapes for one track: a broken file costs only its own records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from klio_assets.errors import KlioAssetsError, MissingInputError, TrackError
from klio_assets.worker import audio as audio_io
from klio_assets.worker import models as model_cache
from klio_assets.worker import prehash
from klio_assets.worker.analysis import (
    Analysis,
    Audio,
    AudioStream,
    SourceAudio,
    TrackContext,
    Upstream,
)
from klio_assets.worker.audio import SourceDecoder, SourceInfo
from klio_assets.worker.done import done_analyses, source_record
from klio_assets.worker.plan import SOURCE_ASSET, Layout, RunPlan, import_analysis
from klio_assets.worker.records import AnalysisOutcome, SourceStat, Status, TrackResult
from klio_assets.worker.storage import Storage, open_source, source_stat

# The statuses under their former names (profiling and benchmarks import these).
COMPUTED, SKIPPED, FAILED = Status.COMPUTED, Status.SKIPPED, Status.FAILED
WOULD_COMPUTE, WOULD_SKIP = Status.WOULD_COMPUTE, Status.WOULD_SKIP
#: Blocks buffered per analysis fed from a shared decode (2 x 256k frames: 4 MiB of stereo,
#: as 8 x 64k frames were before the blocks grew).
FEED_DEPTH = 2
#: Audio-seconds decoded per CPU-second (44.1 kHz stereo, measured): used to balance lanes so
#: that one long or slow track does not leave a core idle. FLAC is looked up by container (its
#: codec reads ``PCM_16``, like WAV's, but it decodes at half the speed); the rest by codec.
_DECODE_SPEED = {"FLAC": 750.0, "PCM": 1340.0, "VORBIS": 520.0, "MPEG": 800.0, "OPUS": 150.0}
_FFMPEG_SPEED = {"OPUS": 230.0}
_FFMPEG_DEFAULT_SPEED = 450.0
#: CPU-seconds per audio minute of one analysis' own work past the decode (downsampling: ~0.1;
#: most built-in analyses 0.1-0.3, stems 5).
_ANALYSIS_CPU_PER_MINUTE = 0.1
#: CPU-seconds a track costs whatever its length (probe, hash, opening and committing outputs,
#: its record). With the above, measured for downsampled_audio: a 10-second Ogg Vorbis track
#: 0.045 CPU-s (estimate 0.051), a 60-minute FLAC 8.5-10 (estimate 10.8).
_TRACK_OVERHEAD_S = 0.015


def estimate_cost(info: dict[str, Any], *, analyses: int = 1) -> float:
    """Rough CPU-seconds of a track, from its header (for balancing only).

    Parameters
    ----------
    info : dict
        :meth:`SourceInfo.to_dict`.
    analyses : int
        Analyses to compute for the track.
    """
    codec = str(info.get("codec", "")).upper()
    key = "FLAC" if str(info.get("container", "")).upper() == "FLAC" else codec
    if info.get("decoder") == "ffmpeg":
        speeds, default = _FFMPEG_SPEED, _FFMPEG_DEFAULT_SPEED
    else:
        speeds, default = _DECODE_SPEED, 700.0
    speed = next((v for k, v in speeds.items() if key.startswith(k)), default)
    rate, channels = int(info.get("sample_rate", 44100)), int(info.get("channels", 2))
    duration = float(info.get("frames", 0)) / rate if rate else 0.0
    decode = duration * (rate * channels) / (44100 * 2) / speed
    return decode + duration / 60 * _ANALYSIS_CPU_PER_MINUTE * max(1, analyses) + _TRACK_OVERHEAD_S


def _reason(exc: BaseException, track_id: str, uri: str, analysis: str) -> str:
    """One line naming the track, the file and the problem."""
    if isinstance(exc, TrackError):
        return str(exc)
    if isinstance(exc, KlioAssetsError):
        return f"track {track_id!r}: {uri}: {exc}"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""
    return (
        f"track {track_id!r}: {uri}: analysis {analysis!r} raised "
        f"{type(exc).__name__}: {exc}{where}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _failed(reason: str, error: BaseException | None = None) -> AnalysisOutcome:
    return AnalysisOutcome.failed(reason, error)


def _one_blas_thread() -> None:
    """Keep numpy's BLAS to one thread: workers already run one track per core, and BLAS
    threads on top of that cost 45-85 % more CPU for ~7 % less wall time (measured)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(limits=1, user_api="blas")


class _Feed:
    """A bounded queue of native blocks feeding one analysis running in its own thread."""

    _END = object()

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=FEED_DEPTH)
        self.detached = threading.Event()

    def put(self, item: Any) -> None:
        while not self.detached.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def end(self, error: BaseException | None = None) -> None:
        self.put(error if error is not None else self._END)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Engine:
    """Runs a :class:`RunPlan` track by track (one per Beam DoFn instance).

    Parameters
    ----------
    plan : RunPlan
    """

    def __init__(self, plan: RunPlan):
        _one_blas_thread()
        self.plan = plan
        self.storage = Storage(plan.storage_root, plan.storage_options)
        self.layout = Layout(self.storage)
        self.limits = plan.decode_limits()
        self.analyses: dict[str, Analysis] = {
            n: import_analysis(p) for n, p in plan.analyses.items()
        }
        self.params = {n: self.analyses[n].params(p.params) for n, p in plan.analyses.items()}
        self.inputs = {
            n: {k: a.resolve_input(spec, self.params[n]) for k, spec in a.inputs.items()}
            for n, a in self.analyses.items()
        }
        #: Models this engine holds a lease on (loaded on first use, see :meth:`close`).
        self._models: dict[str, model_cache.LoadedModel] = {}
        self._models_lock = threading.Lock()
        if not plan.dry_run:
            self._sweep_content_indexes()

    def model(self, name: str) -> model_cache.LoadedModel | None:
        """Analysis ``name``'s model, loaded once per process and shared (None if it has
        none)."""
        handler = self.analyses[name].model
        if handler is None:
            return None
        with self._models_lock:
            if name not in self._models:
                self._models[name] = model_cache.acquire(handler, self.plan.model_device)
            return self._models[name]

    def close(self) -> None:
        """Release the models this engine holds (the last lease in the process drops them)."""
        with self._models_lock:
            for name in self._models:
                handler = self.analyses[name].model
                assert handler is not None
                model_cache.release(handler, self.plan.model_device)
            self._models.clear()

    def _sweep_content_indexes(self) -> None:
        """Remove index entries half-written by a killed run. A track whose output was
        committed just before the kill is skipped from then on, so no later write would ever
        sweep the index folder its entry was going to."""
        for name in self.plan.selected:
            if self.analyses[name].share_by_content:
                folder = self.layout.content_folder(self.plan.analyses[name])
                self.storage.sweep_stale_temporaries_below(folder)

    # -- paths ---------------------------------------------------------------------------------

    def output_uri(self, name: str, track_id: str) -> str:
        """Where analysis ``name`` writes ``track_id``'s output."""
        return self.layout.output_uri(self.plan.analyses[name], track_id)

    # -- stage 1: existence checks and probing --------------------------------------------------

    def check(self, ref: dict[str, Any]) -> dict[str, Any]:
        """Check one track's selected outputs; probe and hash its source if work is left.

        Parameters
        ----------
        ref : dict
            ``{"track_id", "uri", "order"}``.

        Returns
        -------
        dict
            A task: ``analyses`` (name to :class:`AnalysisOutcome`, for those decided),
            ``pending`` analyses (empty: nothing left to do, see :func:`track_result`) and,
            when work is left, ``content_hash``, ``info`` (header) and ``cost``.
        """
        track_id, uri = ref["track_id"], ref["uri"]
        task: dict[str, Any] = {**ref, "analyses": {}, "pending": []}
        skip_status = WOULD_SKIP if self.plan.dry_run else SKIPPED
        try:
            # one stat, no read: outputs of a source that changed since are not done
            task["source_stat"] = source_stat(uri, self.plan.source_options)
            unrecorded: list[str] = []
            done = (
                []
                if self.plan.force
                else done_analyses(
                    self.storage,
                    self.plan.analyses,
                    self.plan.selected,
                    track_id,
                    current=task["source_stat"],
                    unrecorded=unrecorded,
                )
            )
            if not self.plan.dry_run:
                self._record_stat(track_id, unrecorded, task["source_stat"])
            for name in self.plan.selected:
                if name in done:
                    task["analyses"][name] = AnalysisOutcome(
                        skip_status, uri=self.output_uri(name, track_id)
                    )
                else:
                    task["pending"].append(name)
            if task["pending"]:
                with open_source(uri, self.plan.source_options) as path:
                    task["size_bytes"] = os.path.getsize(path)
                    task["content_hash"] = prehash.content_hash(path)
                    info = audio_io.probe(
                        path,
                        track_id=track_id,
                        uri=uri,
                        limits=self.limits,
                        header=prehash.header(path),
                    )
                task["info"] = info.to_dict()
                task["cost"] = estimate_cost(task["info"], analyses=len(task["pending"]))
        except FileNotFoundError:
            self._fail_pending(task, f"track {track_id!r}: {uri}: source file not found")
        except Exception as exc:  # one track's problem, recorded on the track
            self._fail_pending(task, _reason(exc, track_id, uri, "probe"), exc)
        if not self.plan.dry_run:
            self._describe_skipped(task)
        return task

    def _record_sources(self, task: dict[str, Any]) -> None:
        """Record, next to each output written for ``task``, the source it was computed from.

        The content hash lets the content index check that an owner's output still comes
        from the bytes looked up; the stat lets the next run notice a changed source.
        """
        if "content_hash" not in task:
            return
        stat: SourceStat | None = task.get("source_stat")
        entry = {"content_hash": task["content_hash"], **(stat.to_dict() if stat else {})}
        for name in task["pending"]:
            record = task["analyses"].get(name)
            if record is None or not (
                record.status == COMPUTED or (record.status == SKIPPED and record.shared_from)
            ):
                continue
            uri = self.layout.source_record_uri(self.plan.analyses[name], task["track_id"])
            with contextlib.suppress(KlioAssetsError):  # a lost record costs a recomputation
                self.storage.write_json(uri, entry, durable=False)

    def _record_stat(self, track_id: str, names: Sequence[str], stat: SourceStat | None) -> None:
        """Record the source's stat for outputs that have no record (written before records
        were kept, or by a writer killed before it): from now on a change is noticed. Without
        a content hash, such a record never lets the content index share the output."""
        if stat is None:
            return
        for name in names:
            uri = self.layout.source_record_uri(self.plan.analyses[name], track_id)
            with contextlib.suppress(KlioAssetsError):
                self.storage.write_json(uri, stat.to_dict(), durable=False)

    def _owner_holds(self, name: str, owner: str, content_hash: str) -> bool:
        """Whether ``owner``'s output of ``name`` was computed from ``content_hash``'s bytes.

        An index entry outlives what it names: the owner's source may have been overwritten
        and its output recomputed (``--force``) from other bytes since.
        """
        record = source_record(self.storage, self.plan.analyses[name], owner)
        return record is not None and record.get("content_hash") == content_hash

    def _fail_pending(
        self, task: dict[str, Any], reason: str, error: BaseException | None = None
    ) -> None:
        for name in task["pending"]:
            task["analyses"][name] = _failed(reason, error)
        task["pending"] = []

    def _describe_skipped(self, task: dict[str, Any]) -> None:
        """Fill the metadata of outputs that already existed (cheap header reads)."""
        facts: dict[str, Any] | None = None
        for name, record in task["analyses"].items():
            if record.status != SKIPPED or record.duration_s is not None:
                continue
            analysis = self.analyses[name]
            record.version = self.plan.analyses[name].version
            record.seconds = 0.0
            try:
                assert record.uri is not None
                described = analysis.output.describe_at(self.storage, record.uri)
                if "sample_rate" not in described:
                    if facts is None:
                        facts = self._source_facts(task)
                    described = {**facts, **described}
                record.describe(described)
            except Exception as exc:  # the output exists but cannot be described: say so
                record.metadata = {"describe_error": f"{type(exc).__name__}: {exc}"}

    def _source_facts(self, task: dict[str, Any]) -> dict[str, Any]:
        """Duration, rate and channels of a track's source, as cheaply as possible."""
        if "info" in task:
            info = task["info"]
            return {
                "duration_s": info["frames"] / info["sample_rate"],
                "sample_rate": info["sample_rate"],
                "channels": info["channels"],
            }
        if SOURCE_ASSET in self.plan.analyses:
            probe_uri = self.output_uri(SOURCE_ASSET, task["track_id"])
            with contextlib.suppress(Exception):
                if self.storage.exists(probe_uri):
                    data = self.storage.read_json(probe_uri)
                    return {k: data[k] for k in ("duration_s", "sample_rate", "channels")}
        with open_source(task["uri"], self.plan.source_options) as path:
            info = audio_io.probe(
                path, track_id=task["track_id"], uri=task["uri"], limits=self.limits
            )
        return {
            "duration_s": info.duration_s,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
        }

    # -- stage 2: compute, once per content ------------------------------------------------------

    def analyze(self, group: Sequence[dict[str, Any]]) -> list[TrackResult]:
        """Compute the pending analyses of a group of tracks with identical source bytes.

        The first track (in run order) is computed; the others get copies of its outputs,
        recorded as ``skipped`` with ``shared_from`` naming the track computed.
        """
        tasks = sorted(group, key=lambda t: t.get("order", 0))
        rep = tasks[0]
        try:
            self._analyze_representative(rep)
        except Exception as exc:  # defensive: a bug here must not cost the whole bundle
            for name in rep["pending"]:
                rep["analyses"].setdefault(
                    name, _failed(_reason(exc, rep["track_id"], rep["uri"], name))
                )
        for dup in tasks[1:]:
            try:
                self._share_from(rep, dup)
            except Exception as exc:
                for name in dup["pending"]:
                    dup["analyses"].setdefault(
                        name, _failed(_reason(exc, dup["track_id"], dup["uri"], name))
                    )
        for task in tasks:
            self._describe_skipped(task)
            self._record_sources(task)
        return [track_result(t) for t in tasks]

    def _analyze_representative(self, rep: dict[str, Any]) -> None:
        to_compute = []
        for name in rep["pending"]:
            shared = self._lookup_content(name, rep) if not self.plan.force else None
            if shared is not None:
                rep["analyses"][name] = shared
            else:
                to_compute.append(name)
        if to_compute:
            rep["analyses"].update(self._compute(rep, to_compute))
        for name in to_compute:
            record = rep["analyses"][name]
            if record.status == COMPUTED and self.analyses[name].share_by_content:
                entry = {"track_id": rep["track_id"], "uri": record.uri}
                with contextlib.suppress(KlioAssetsError):  # the index is an optimisation only
                    self.storage.write_json(
                        self.layout.content_uri(self.plan.analyses[name], rep["content_hash"]),
                        entry,
                        durable=False,  # losing an entry only costs a recomputation
                    )

    def _lookup_content(self, name: str, task: dict[str, Any]) -> AnalysisOutcome | None:
        """Reuse an output computed earlier for the same source bytes (another track)."""
        if not self.analyses[name].share_by_content:
            return None
        index_uri = self.layout.content_uri(self.plan.analyses[name], task["content_hash"])
        try:
            if not self.storage.exists(index_uri):
                return None
            entry = self.storage.read_json(index_uri)
            first, first_uri = str(entry["track_id"]), str(entry["uri"])
        except (KlioAssetsError, KeyError, ValueError):
            return None
        if first == task["track_id"] or first_uri != self.output_uri(name, first):
            return None  # only ever copy from the place this layout would have written
        if not self.storage.exists(first_uri):
            return None
        if not self._owner_holds(name, first, task["content_hash"]):
            return None  # a stale entry: the owner's output describes other bytes now
        out = self.output_uri(name, task["track_id"])
        self.analyses[name].output.copy(self.storage, first_uri, out)
        return AnalysisOutcome(SKIPPED, uri=out, shared_from=first)

    def _share_from(self, rep: dict[str, Any], dup: dict[str, Any]) -> None:
        own = [n for n in dup["pending"] if not self.analyses[n].share_by_content]
        for name in dup["pending"]:
            if name in own:
                continue
            rep_record = rep["analyses"].get(name)
            if rep_record is not None and rep_record.status == FAILED:
                dup["analyses"][name] = _failed(
                    f"track {dup['track_id']!r}: {dup['uri']}: same content as track "
                    f"{rep['track_id']!r}, which failed: {rep_record.reason}"
                )
                continue
            source_uri = self.output_uri(name, rep["track_id"])
            out = self.output_uri(name, dup["track_id"])
            self.analyses[name].output.copy(self.storage, source_uri, out)
            first = (rep_record.shared_from if rep_record else None) or rep["track_id"]
            dup["analyses"][name] = AnalysisOutcome(SKIPPED, uri=out, shared_from=first)
        if own:
            dup["analyses"].update(self._compute(dup, own))

    # -- dry run ---------------------------------------------------------------------------------

    def plan_group(self, group: Sequence[dict[str, Any]]) -> list[TrackResult]:
        """What :meth:`analyze` would do for a group, changing nothing."""
        tasks = sorted(group, key=lambda t: t.get("order", 0))
        rep = tasks[0]
        for name in rep["pending"]:
            first = self._content_owner(name, rep) if not self.plan.force else None
            rep["analyses"][name] = AnalysisOutcome(
                WOULD_SKIP if first else WOULD_COMPUTE,
                shared_from=first,
                uri=self.output_uri(name, rep["track_id"]),
            )
        for dup in tasks[1:]:
            for name in dup["pending"]:
                shareable = self.analyses[name].share_by_content
                dup["analyses"][name] = AnalysisOutcome(
                    WOULD_SKIP if shareable else WOULD_COMPUTE,
                    uri=self.output_uri(name, dup["track_id"]),
                    shared_from=rep["track_id"] if shareable else None,
                )
        return [track_result(t) for t in tasks]

    def _content_owner(self, name: str, task: dict[str, Any]) -> str | None:
        if not self.analyses[name].share_by_content:
            return None
        index_uri = self.layout.content_uri(self.plan.analyses[name], task["content_hash"])
        with contextlib.suppress(KlioAssetsError, KeyError, ValueError):
            if self.storage.exists(index_uri):
                first = str(self.storage.read_json(index_uri)["track_id"])
                if (
                    first != task["track_id"]
                    and self.storage.exists(self.output_uri(name, first))
                    and self._owner_holds(name, first, task["content_hash"])
                ):
                    return first
        return None

    # -- computing -------------------------------------------------------------------------------

    def _compute(self, task: dict[str, Any], names: Sequence[str]) -> dict[str, AnalysisOutcome]:
        """Compute ``names`` (topologically ordered) for one track.

        Analyses run in waves: those whose upstreams are all available first. Within a wave,
        every analysis that reads the source shares one decode.
        """
        records: dict[str, AnalysisOutcome] = {}
        memory: dict[str, Any] = {}
        remaining = [n for n in self.plan.analyses if n in names]
        context = TrackContext(
            track_id=task["track_id"],
            uri=task["uri"],
            source=SourceInfo(**task["info"]) if "info" in task else None,
            content_hash=task.get("content_hash"),
            size_bytes=task.get("size_bytes"),
        )
        with contextlib.ExitStack() as stack:
            source_path: list[str] = []

            def local_source() -> str:
                if not source_path:
                    source_path.append(
                        stack.enter_context(open_source(task["uri"], self.plan.source_options))
                    )
                return source_path[0]

            while remaining:
                wave = [
                    n for n in remaining if not set(self.analyses[n].upstreams) & set(remaining)
                ]
                remaining = [n for n in remaining if n not in wave]
                runnable = []
                for name in wave:
                    failed_up = [
                        u
                        for u in self.analyses[name].upstreams
                        if u in records and records[u].status == FAILED
                    ]
                    if failed_up:
                        up = failed_up[0]
                        records[name] = AnalysisOutcome.failed(
                            f"upstream {up!r} failed for this track: {records[up].reason}",
                            permanent=records[up].permanent,
                        )
                    else:
                        runnable.append(name)
                readers = [n for n in runnable if self.analyses[n].reads_source]
                if readers:
                    try:
                        path = local_source()
                    except FileNotFoundError:
                        path = ""
                        for name in readers:
                            records[name] = _failed(
                                f"track {task['track_id']!r}: {task['uri']}: source file not found"
                            )
                    except Exception as exc:
                        path = ""
                        for name in readers:
                            records[name] = _failed(
                                _reason(exc, task["track_id"], task["uri"], name), exc
                            )
                    if path:
                        records.update(self._decode_with_fallback(context, path, readers, memory))
                for name in runnable:
                    if name not in readers:
                        records[name] = self._run(context, name, {}, memory, time.perf_counter())
        return records

    def _decode_with_fallback(
        self, context: TrackContext, path: str, names: Sequence[str], memory: dict[str, Any]
    ) -> dict[str, AnalysisOutcome]:
        """:meth:`_decode_once`, retried with ffmpeg when libsndfile fails mid-stream.

        A second decoder is a second opinion: if ffmpeg decodes the file completely, its
        result stands (the record names the decoder); if not, the first error is kept.
        """
        records = self._decode_once(context, path, names, memory)
        assert context.source is not None
        retry = [n for n in names if records[n].error == "DecodeError"]
        if not retry or context.source.decoder != "soundfile" or not audio_io.ffmpeg_available():
            return records
        fallback = dataclasses.replace(
            context, source=dataclasses.replace(context.source, decoder="ffmpeg")
        )
        second = self._decode_once(fallback, path, retry, memory)
        for name in retry:
            if second[name].status == COMPUTED:
                second[name].metadata = {
                    **(second[name].metadata or {}),
                    "decoder": "ffmpeg (libsndfile failed)",
                }
                records[name] = second[name]
        return records

    def _decode_once(
        self, context: TrackContext, path: str, names: Sequence[str], memory: dict[str, Any]
    ) -> dict[str, AnalysisOutcome]:
        """Decode the source once and feed every analysis in ``names``.

        An analysis with exactly one streamed source input runs live (in its own thread when
        there are several, fed through a bounded queue): memory stays flat. Analyses with
        whole-array source inputs run after the decode, from blocks kept in memory.
        """
        assert context.source is not None
        started = time.perf_counter()
        info = context.source
        decoder = SourceDecoder(
            path, info, track_id=context.track_id, uri=context.uri, limits=self.limits
        )
        live = [n for n in names if self._is_live(n)]
        buffered = [n for n in names if n not in live]
        records: dict[str, AnalysisOutcome] = {}

        if len(live) == 1 and not buffered:
            name = live[0]
            records[name] = self._run(
                context, name, self._source_values(name, iter(decoder), info), memory, started
            )
            return self._with_source_facts(records, decoder, info)

        feeds = {n: _Feed() for n in live}
        threads = []
        for name in live:
            feed = feeds[name]

            def work(name: str = name, feed: _Feed = feed) -> None:
                try:
                    records[name] = self._run(
                        context, name, self._source_values(name, iter(feed), info), memory, started
                    )
                finally:
                    feed.detached.set()

            thread = threading.Thread(target=work, name=f"klio-{name}", daemon=True)
            thread.start()
            threads.append(thread)
        kept: list[np.ndarray] = []
        decode_error: BaseException | None = None
        try:
            for block in decoder:
                for feed in feeds.values():
                    feed.put(block)
                if buffered:
                    kept.append(block)
        except BaseException as exc:  # handed to every consumer, which records it
            decode_error = exc
        for feed in feeds.values():
            feed.end(decode_error)
        for thread in threads:
            thread.join()
        for name in buffered:
            if decode_error is not None:
                records[name] = _failed(
                    _reason(decode_error, context.track_id, context.uri, name), decode_error
                )
            else:
                records[name] = self._run(
                    context, name, self._source_values(name, iter(kept), info), memory, started
                )
        kept.clear()
        return self._with_source_facts(records, decoder, info)

    def _with_source_facts(
        self, records: dict[str, AnalysisOutcome], decoder: SourceDecoder, info: SourceInfo
    ) -> dict[str, AnalysisOutcome]:
        for record in records.values():
            if record.status == COMPUTED and decoder.warnings:
                record.metadata = {**(record.metadata or {}), "decoder_warnings": decoder.warnings}
            if record.status == COMPUTED and record.sample_rate is None and decoder.frames:
                record.duration_s = decoder.frames / info.sample_rate
                record.sample_rate = info.sample_rate
                record.channels = info.channels
        return records

    def _is_live(self, name: str) -> bool:
        sources = [s for s in self.inputs[name].values() if isinstance(s, SourceAudio)]
        return len(sources) == 1 and sources[0].stream

    def _source_values(
        self, name: str, blocks: Iterator[np.ndarray], info: SourceInfo
    ) -> Callable[[], dict[str, Any]]:
        """A thunk building the source inputs of ``name`` from native blocks."""

        def build() -> dict[str, Any]:
            values: dict[str, Any] = {}
            specs = {k: s for k, s in self.inputs[name].items() if isinstance(s, SourceAudio)}
            cached = (
                list(blocks)
                if len(specs) > 1 or any(not s.stream for s in specs.values())
                else None
            )
            for key, spec in specs.items():
                source_blocks = iter(cached) if cached is not None else blocks
                assert spec.sample_rate is None or isinstance(spec.sample_rate, int)
                converted = audio_io.convert_blocks(
                    source_blocks,
                    source_rate=info.sample_rate,
                    target_rate=spec.sample_rate,
                    mono=spec.mono,
                )
                rate = spec.sample_rate or info.sample_rate
                channels = 1 if spec.mono else info.channels
                if spec.stream:
                    values[key] = AudioStream(converted, sample_rate=rate, channels=channels)
                else:
                    parts = list(converted)
                    frames = np.concatenate(parts) if parts else np.zeros((0, channels), np.float32)
                    samples = (
                        frames[:, 0].copy() if channels == 1 else np.ascontiguousarray(frames.T)
                    )
                    values[key] = Audio(samples, rate)
            return values

        return build

    def _run(
        self,
        context: TrackContext,
        name: str,
        source_values: Callable[[], dict[str, Any]] | dict[str, Any],
        memory: dict[str, Any],
        started: float,
    ) -> AnalysisOutcome:
        """Run one analysis on one track and commit its output; never raises."""
        analysis = self.analyses[name]
        out = self.output_uri(name, context.track_id)
        try:
            with contextlib.ExitStack() as stack:
                values = source_values() if callable(source_values) else dict(source_values)
                for key, spec in self.inputs[name].items():
                    if isinstance(spec, Upstream):
                        values[key] = self._upstream_value(context, spec, memory, stack)
                result = analysis.call(
                    values, params=self.params[name], track=context, model=self.model(name)
                )
                described = analysis.output.commit(self.storage, out, result.value)
            if not isinstance(result.value, (AudioStream, Audio)) and analysis.output.kind in (
                "json",
                "table_row",
                "array",
            ):
                memory[name] = result.value
            record = AnalysisOutcome(
                COMPUTED,
                uri=out,
                version=self.plan.analyses[name].version,
                seconds=round(time.perf_counter() - started, 4),
            )
            record.describe({**described, **result.metadata})
            return record
        except Exception as exc:  # bad input, or the analysis' own bug: this track only
            return _failed(_reason(exc, context.track_id, context.uri, name), exc)

    def _upstream_value(
        self,
        context: TrackContext,
        spec: Upstream,
        memory: dict[str, Any],
        stack: contextlib.ExitStack,
    ) -> Any:
        if spec.name in memory:
            return memory[spec.name]
        uri = self.output_uri(spec.name, context.track_id)
        if not self.storage.exists(uri):
            raise MissingInputError(
                context.track_id,
                uri,
                f"upstream {spec.name!r} has no output for this track (materialize it first)",
            )
        try:
            return self.analyses[spec.name].output.load(
                self.storage, uri, stream=spec.stream, stack=stack
            )
        except Exception as exc:  # any reader's error (numpy, libsndfile, JSON): re-raised
            # naming the output that is bad, not the source audio: recomputing it is the fix
            raise TrackError(
                context.track_id,
                uri,
                f"upstream {spec.name!r} output cannot be read ({type(exc).__name__}: "
                f"{_first_line(exc)}); recompute it (klio-assets run {spec.name} --force)",
            ) from exc


def track_result(task: dict[str, Any]) -> TrackResult:
    """The :class:`TrackResult` of a task (see :meth:`Engine.check`)."""
    return TrackResult(
        track_id=task["track_id"],
        uri=task["uri"],
        analyses=dict(task["analyses"]),
        content_hash=task.get("content_hash"),
        source_stat=task.get("source_stat"),
    )
