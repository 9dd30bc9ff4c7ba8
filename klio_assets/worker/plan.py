"""The run plan: everything a Beam worker needs to know about a run, as plain JSON.

The Dagster side builds a :class:`RunPlan`; workers rebuild analyses from it by importing
``module.attr`` (the package is installed on workers), so nothing is pickled by value and the
plan can be written to a file for a standalone ``python -m klio_assets.worker.pipeline`` run.
This module imports nothing from Dagster.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from klio_assets.errors import ParameterError
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.audio import DecodeLimits
from klio_assets.worker.models import DEVICES
from klio_assets.worker.storage import Storage, shard_of

RESULTS_FOLDER = "_runs"
#: The asset standing for each track's source audio (probed and verified); every analysis
#: that decodes the source shows it as upstream in the lineage graph, and the engine reads its
#: output for a track's duration, rate and channels. Defined here, not with the built-in
#: analyses, so that the engine names it without importing them.
SOURCE_ASSET = "source_audio"


@dataclass(frozen=True)
class PlannedAnalysis:
    """One analysis as a plan names it.

    Attributes
    ----------
    name : str
    module, attr : str
        Where workers import the :class:`~klio_assets.worker.analysis.Analysis` from.
    version : str
        Output version (code version plus a digest of parameters and upstream versions).
    params : dict
        Parameter overrides for this deployment.
    extension : str
        Output file extension.
    accelerator, min_ram : str or None
        Resource hints of the analysis' model (Dataflow), when it declares any.
    """

    name: str
    module: str
    attr: str
    version: str
    params: dict[str, Any]
    extension: str
    accelerator: str | None = None
    min_ram: str | None = None


def sort_topologically(analyses: Mapping[str, Analysis]) -> list[str]:
    """Names ordered so that every analysis comes after its upstreams.

    Raises
    ------
    ParameterError
        An upstream is unknown, or the analyses form a cycle.
    """
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ParameterError(f"analyses form a cycle: {' -> '.join((*path, name))}")
        if name not in analyses:
            raise ParameterError(f"analysis {path[-1]!r} reads unknown analysis {name!r}")
        state[name] = 1
        for upstream in analyses[name].upstreams:
            visit(upstream, (*path, name))
        state[name] = 2
        order.append(name)

    for name in analyses:
        visit(name, ())
    return order


def plan_analyses(
    analyses: Iterable[Analysis], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, PlannedAnalysis]:
    """Resolve parameters and versions of a set of analyses, in topological order.

    Parameters
    ----------
    analyses : iterable of Analysis
    overrides : mapping
        ``{analysis name: {parameter: value}}`` for this deployment.
    """
    by_name: dict[str, Analysis] = {}
    for a in analyses:
        if a.name in by_name:
            raise ParameterError(f"two analyses are named {a.name!r}")
        by_name[a.name] = a
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise ParameterError(f"parameters given for unknown analyses {unknown}")
    planned: dict[str, PlannedAnalysis] = {}
    for name in sort_topologically(by_name):
        a = by_name[name]
        params = a.params(overrides.get(name))
        for spec in a.inputs.values():
            a.resolve_input(spec, params)  # fail early on bad parameter references
        version = a.version(params, {u: planned[u].version for u in a.upstreams})
        planned[name] = PlannedAnalysis(
            name=name,
            module=a.module,
            attr=a.fn.__name__,
            version=version,
            params=dict(overrides.get(name) or {}),
            extension=a.output.extension,
            accelerator=getattr(a.model, "accelerator", None),
            min_ram=getattr(a.model, "min_ram", None),
        )
    return planned


def import_analysis(planned: PlannedAnalysis) -> Analysis:
    """Import the analysis a plan names (on a worker)."""
    try:
        module = importlib.import_module(planned.module)
    except ImportError as exc:
        raise ParameterError(
            f"cannot import module {planned.module!r} of analysis {planned.name!r}: {exc} "
            "(is the package installed on the Beam workers?)"
        ) from exc
    found = getattr(module, planned.attr, None)
    if not isinstance(found, Analysis) or found.name != planned.name:
        raise ParameterError(
            f"{planned.module}.{planned.attr} is not the analysis {planned.name!r}"
        )
    return found


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
_UNITS.update({"GIB": 2**30, "TB": 10**12, "TIB": 2**40})


def _bytes(size: str) -> float:
    """``"8GB"``, ``"512MiB"``, ``"1e9"`` as bytes (Beam's own notation for ``min_ram``)."""
    text = size.strip().upper()
    number = text.rstrip("KMGTIB")
    unit = text[len(number) :]
    if unit not in _UNITS:
        raise ParameterError(f"min_ram {size!r}: unknown unit {unit!r}")
    try:
        return float(number) * _UNITS[unit]
    except ValueError as exc:
        raise ParameterError(f"min_ram {size!r} is not a size such as '8GB'") from exc


@dataclass(frozen=True)
class RunPlan:
    """What a Beam job does: which analyses, on which storage, with which switches.

    Attributes
    ----------
    run_id : str
        The Dagster run; names the folder of per-track results.
    storage_root : str
    storage_options : dict
    analyses : dict of str to PlannedAnalysis
        Every analysis the selected ones need (their upstreams included).
    selected : list of str
        The analyses to materialize, in topological order.
    force : bool
        Recompute even where a valid output exists.
    dry_run : bool
        Report what would be computed or skipped; compute and write nothing.
    lanes : int
        Balance work over this many lanes (static-splitting runners); 0 reshuffles instead.
    limits : dict
        :class:`~klio_assets.worker.audio.DecodeLimits` fields.
    source_options : dict
        fsspec options for remote source URIs.
    model_device : {"auto", "cpu", "cuda"}
        Where models run (``KLIO_ASSETS_MODEL_DEVICE``, passed as ``--model_device``).
    """

    run_id: str
    storage_root: str
    analyses: dict[str, PlannedAnalysis]
    selected: list[str]
    storage_options: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    dry_run: bool = False
    lanes: int = 0
    limits: dict[str, Any] = field(default_factory=dict)
    source_options: dict[str, Any] = field(default_factory=dict)
    model_device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [n for n in self.selected if n not in self.analyses]
        if unknown:
            raise ParameterError(f"selected analyses {unknown} are not in the plan")
        if self.model_device not in DEVICES:
            raise ParameterError(
                f"model device {self.model_device!r} is not one of {', '.join(DEVICES)}"
            )

    def resource_hints(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Beam resource hints for the step computing ``names`` (default: every analysis):
        the largest ``min_ram`` and the first ``accelerator`` their models declare. The
        accelerator is asked for only when the run asks for a GPU (device ``cuda``): a
        GPU worker costs several CPU workers, so ``auto`` never provisions one."""
        hints: dict[str, str] = {}
        for name in names if names is not None else self.analyses:
            planned = self.analyses[name]
            if planned.accelerator and self.model_device == "cuda":
                hints.setdefault("accelerator", planned.accelerator)
            if planned.min_ram and _bytes(planned.min_ram) > _bytes(hints.get("min_ram", "0")):
                hints["min_ram"] = planned.min_ram
        return hints

    def decode_limits(self) -> DecodeLimits:
        """The decode limits of this run."""
        return DecodeLimits(**self.limits)

    def to_json(self) -> str:
        """The plan as JSON."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        """Rebuild a plan from :meth:`to_json`."""
        data = json.loads(text)
        data["analyses"] = {k: PlannedAnalysis(**v) for k, v in data["analyses"].items()}
        return cls(**data)


class Layout:
    """Where things go under a storage root.

    ``<root>/<analysis>/v<version>/<shard>/<track_id>.<ext>`` for outputs,
    ``<root>/<analysis>/v<version>/_content/<hh>/<blake3>.json`` for the content index, and
    ``<root>/_runs/<run_id>/`` for a run's per-track results.
    """

    def __init__(self, storage: Storage):
        self.storage = storage

    def output_uri(self, planned: PlannedAnalysis, track_id: str) -> str:
        """The output of ``planned`` for ``track_id``."""
        return self.storage.join(
            planned.name,
            f"v{planned.version}",
            shard_of(track_id),
            f"{track_id}.{planned.extension}",
        )

    def output_folder(self, planned: PlannedAnalysis) -> str:
        """The folder of one analysis version."""
        return self.storage.join(planned.name, f"v{planned.version}")

    def content_folder(self, planned: PlannedAnalysis) -> str:
        """The content index of one analysis version (one sub-folder per hash prefix)."""
        return self.storage.join(planned.name, f"v{planned.version}", "_content")

    def content_uri(self, planned: PlannedAnalysis, content_hash: str) -> str:
        """The content-index entry for a source content hash."""
        hexdigest = content_hash.split(":", 1)[-1]
        return self.storage.join(
            planned.name, f"v{planned.version}", "_content", hexdigest[:2], f"{hexdigest}.json"
        )

    def source_record_uri(self, planned: PlannedAnalysis, track_id: str) -> str:
        """What the output of ``planned`` for ``track_id`` was computed from: the source's
        content hash and stat (:class:`~klio_assets.worker.records.SourceStat`)."""
        return self.storage.join(
            planned.name,
            f"v{planned.version}",
            "_sources",
            shard_of(track_id),
            f"{track_id}.json",
        )

    def run_folder(self, run_id: str) -> str:
        """Scratch folder of one run."""
        return self.storage.join(RESULTS_FOLDER, run_id)

    def plan_uri(self, run_id: str) -> str:
        """The plan of one run, written before any track is given to a worker."""
        return self.storage.join(RESULTS_FOLDER, run_id, "plan.json")

    def results_folder(self, run_id: str) -> str:
        """Per-track result records of one run."""
        return self.storage.join(RESULTS_FOLDER, run_id, "results")

    def result_uri(self, run_id: str, track_id: str) -> str:
        """The result record of one track in one run."""
        return self.storage.join(RESULTS_FOLDER, run_id, "results", f"{track_id}.json")


def planned_for(
    selected: Sequence[str], planned: Mapping[str, PlannedAnalysis], graph: Mapping[str, Analysis]
) -> dict[str, PlannedAnalysis]:
    """The subset of ``planned`` that ``selected`` needs (themselves and all their upstreams)."""
    needed: dict[str, PlannedAnalysis] = {}
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed[name] = planned[name]
        stack.extend(graph[name].upstreams)
    return {n: needed[n] for n in planned if n in needed}
