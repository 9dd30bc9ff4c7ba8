"""Turning a run's per-track records into Dagster events, cheaply.

Per-track bookkeeping dominates a large run if done naively: an ``AssetMaterialization``
yielded per track is one unbatched database write (20-57 ms each), and
``add_asset_metadata(partition_key=...)`` re-reads every registered partition per call
(0.63 s at 100k tracks). Dagster batches the per-partition events it derives from an
``Output`` itself (``DagsterEventBatchMetadata``; batched inserts exist on PostgreSQL), but a
ranged ``Output`` materializes every partition of the range, failed tracks included.

So materializations are logged per track through the same batched path Dagster uses for its
own partitioned outputs: one batch per asset (PostgreSQL's batch writer updates the asset's
latest-materialization row from the batch's last event only, so batches never mix assets).
Measured: ~1 ms per track-asset on PostgreSQL against ~20 ms unbatched. That path is not
public API; if it is missing, events are yielded the public way (slower, same result).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from klio_assets import settings
from klio_assets.errors import KlioAssetsError
from klio_assets.orchestration.dagster_internals.events import log_batched_materializations
from klio_assets.worker.records import STANDARD_FACTS, AnalysisOutcome, Status, TrackResult
from klio_assets.worker.storage import Storage

#: Events per database batch.
EVENT_BATCH_SIZE = 1000
#: Failed tracks logged one by one (all of them are in the catalog and the run summary).
MAX_FAILURE_LOG_LINES = 50


#: Images up to this size are embedded in their track's metadata and description by default
#: (an embedded image is stored in the event log twice: ~2.7x its size per track).
DEFAULT_EMBED_IMAGE_BYTES = settings.DEFAULT_EMBED_IMAGE_BYTES
#: Output kinds whose scalar results go to the catalog's features table.
FEATURE_KINDS = ("json", "table_row")


#: Dagster's tag for the code version that produced a materialization (the UI compares it with
#: the asset's code version to flag stale partitions; the other provenance tags are in
#: :mod:`klio_assets.orchestration.provenance`).
CODE_VERSION_TAG = "dagster/code_version"


def _metadata_value(value: Any) -> Any:
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    return value


def track_metadata(outcome: AnalysisOutcome) -> dict[str, Any]:
    """Dagster metadata of one track's outcome: the standard fields first, then the analysis'."""
    meta: dict[str, Any] = {
        "status": str(outcome.status),
        "uri": dg.MetadataValue.path(outcome.uri or ""),
        "code_version": outcome.version or "",
    }
    for key in (*STANDARD_FACTS, "seconds"):
        value = getattr(outcome, key)
        if value is not None:
            meta[key] = value
    if outcome.shared_from:
        meta["shared_from"] = outcome.shared_from
    for key, value in (outcome.metadata or {}).items():
        if key not in meta:
            meta[key] = _metadata_value(value)
    return meta


def embedded_image(storage: Storage, uri: str, track_id: str, max_bytes: int) -> dict[str, Any]:
    """``{"plot": markdown with the PNG inline}`` for an image output, if small enough.

    Dagster 1.13's UI renders Markdown metadata, data URIs included, inline only when it is
    under 1000 characters (``MetadataEntry.tsx``): a plot's is behind "[Show Markdown]" in
    the partition view. Its event view renders the materialization's description in full, so
    the plot goes there too (:func:`plot_description`).
    """
    try:
        data = storage.read_bytes(uri)
    except KlioAssetsError as exc:
        return {"plot_error": f"cannot read {uri}: {exc}"}
    if len(data) > max_bytes:
        return {"plot_bytes": len(data)}
    encoded = base64.b64encode(data).decode("ascii")
    return {"plot": dg.MetadataValue.md(f"![{track_id}](data:image/png;base64,{encoded})")}


def plot_description(metadata: Mapping[str, Any]) -> str | None:
    """The description of a plot's materialization: the plot itself, as Markdown.

    The UI shows it inline, up to 320 pixels high, in the asset's Events tab (a
    materialization's event view renders its description as Markdown, data URIs allowed).
    """
    plot = metadata.get("plot")
    return plot.value if isinstance(plot, dg.MarkdownMetadataValue) else None


def feature_fields(outcome: AnalysisOutcome) -> dict[str, Any]:
    """The scalar results of one track's outcome (what the catalog's features table keeps)."""
    fields: dict[str, Any] = {}
    for key, value in [
        *((k, getattr(outcome, k)) for k in STANDARD_FACTS if getattr(outcome, k) is not None),
        *(outcome.metadata or {}).items(),
    ]:
        if value is None or isinstance(value, (bool, int, str)):
            fields[key] = value
        elif isinstance(value, float):
            fields[key] = value if math.isfinite(value) else None
    return fields


@contextlib.contextmanager
def event_batching(size: int) -> Iterator[None]:
    """Turn on Dagster's event batching for this process while reporting, if not set."""
    name = "DAGSTER_EVENT_BATCH_SIZE"
    previous = os.environ.get(name)
    if previous is None or previous == "0":
        os.environ[name] = str(size)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        elif previous == "0":
            os.environ[name] = previous


def log_materializations(
    context: dg.AssetExecutionContext, materializations: Sequence[dg.AssetMaterialization]
) -> list[dg.AssetMaterialization]:
    """Log per-track materializations in batches, one asset per batch.

    Returns
    -------
    list of dg.AssetMaterialization
        Those the caller must still yield: none, unless Dagster's batched path is unavailable.
    """
    try:
        step_context = context.get_step_execution_context()
    except AttributeError:
        return list(materializations)
    with event_batching(EVENT_BATCH_SIZE):
        logged = log_batched_materializations(
            step_context, materializations, batch_size=EVENT_BATCH_SIZE
        )
    return [] if logged else list(materializations)


def summarize(
    results: Mapping[str, TrackResult],
    selected: Sequence[str],
    *,
    beam_seconds: float,
    beam_cpu_seconds: float | None = None,
) -> dict[str, Any]:
    """Counts by status per analysis, hours of audio and throughput of one run.

    Parameters
    ----------
    results : mapping
        Track ID to its :class:`TrackResult`.
    selected : sequence of str
    beam_seconds : float
        Wall time of the Beam job.
    beam_cpu_seconds : float, optional
        CPU time of a local Beam job (None when it ran elsewhere).
    """
    counts: dict[str, Counter[str]] = {name: Counter() for name in selected}
    computed_audio_s = 0.0
    total_audio_s = 0.0
    for result in results.values():
        durations_computed: list[float] = []
        durations: list[float] = []
        for name in selected:
            outcome = result.analyses.get(name, AnalysisOutcome(Status.FAILED))
            counts[name][str(outcome.status)] += 1
            if outcome.duration_s is not None and outcome.channels is not None:
                durations.append(outcome.duration_s)
                if outcome.status == Status.COMPUTED:
                    durations_computed.append(outcome.duration_s)
        total_audio_s += max(durations, default=0.0)
        computed_audio_s += max(durations_computed, default=0.0)
    return {
        "tracks": len(results),
        "assets": {name: dict(c) for name, c in counts.items()},
        "audio_hours": round(total_audio_s / 3600, 4),
        "computed_audio_hours": round(computed_audio_s / 3600, 4),
        "beam_seconds": round(beam_seconds, 3),
        "beam_cpu_seconds": None if beam_cpu_seconds is None else round(beam_cpu_seconds, 3),
        "realtime_factor": round(computed_audio_s / beam_seconds, 1) if beam_seconds > 0 else None,
    }


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The run summary as a Markdown table for the Dagster UI."""
    statuses = sorted({s for c in summary["assets"].values() for s in c})
    lines = [
        "| analysis | " + " | ".join(statuses) + " |",
        "|---|" + "---|" * len(statuses),
    ]
    for name, counts in summary["assets"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts.get(s, 0)) for s in statuses) + " |")
    rate = summary.get("realtime_factor")
    lines.append("")
    lines.append(
        f"{summary['tracks']} tracks, {summary['audio_hours']:.2f} h of audio, "
        f"{summary['computed_audio_hours']:.2f} h computed in {summary['beam_seconds']:.1f} s"
        + (f" ({rate:.0f}x realtime)" if rate else "")
    )
    return "\n".join(lines)


def failures_markdown(failed: Mapping[str, Mapping[str, str]], limit: int = 100) -> str:
    """Failed tracks as a Markdown table (analysis, track, reason), at most ``limit`` rows."""
    rows = [(name, track, reason) for name, per in failed.items() for track, reason in per.items()]
    lines = ["| analysis | track | reason |", "|---|---|---|"]
    for name, track, reason in rows[:limit]:
        lines.append(f"| {name} | {track} | {reason.replace('|', '/')} |")
    if len(rows) > limit:
        lines.append(f"| ... | {len(rows) - limit} more | see `klio-assets status` |")
    return "\n".join(lines)


def run_tags(summary: Mapping[str, Any]) -> dict[str, str]:
    """Run tags carrying the summary (visible in the runs list, queryable)."""
    totals: Counter = Counter()
    for counts in summary["assets"].values():
        totals.update(counts)
    tags = {f"klio/{status}": str(n) for status, n in sorted(totals.items())}
    tags["klio/tracks"] = str(summary["tracks"])
    tags["klio/audio_hours"] = f"{summary['audio_hours']:.3f}"
    if summary.get("realtime_factor"):
        tags["klio/realtime_factor"] = str(summary["realtime_factor"])
    return tags
