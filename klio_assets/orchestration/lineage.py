"""The analyses' dependency graph as Dagster shows it: parents, ancestors, descendants.

An analysis depends on the analyses it reads (``Upstream(...)``) and, when it decodes the
source itself, on ``source_audio`` (the probed source): the same rule as the asset specs of
:func:`klio_assets.orchestration.assets.build_analysis_assets` (a test checks they agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from klio_assets.analyses import SOURCE_ASSET
from klio_assets.worker.analysis import Analysis


def parents(analyses: Sequence[Analysis]) -> dict[str, list[str]]:
    """Analysis name to the names of the assets it depends on."""
    graph = {a.name: a for a in analyses}
    out: dict[str, list[str]] = {}
    for analysis in analyses:
        deps = list(analysis.upstreams)
        if analysis.reads_source and analysis.name != SOURCE_ASSET and SOURCE_ASSET in graph:
            deps.insert(0, SOURCE_ASSET)
        out[analysis.name] = deps
    return out


def inputs(analyses: Sequence[Analysis]) -> dict[str, list[str]]:
    """Analysis name to the analyses whose outputs it reads (``Upstream(...)``): what the
    engine needs to exist before it can compute it (``source_audio`` is lineage only: every
    analysis decodes the source itself)."""
    return {a.name: list(a.upstreams) for a in analyses}


def ancestors(graph: Mapping[str, Sequence[str]], names: Iterable[str]) -> set[str]:
    """Every asset ``names`` depend on, directly or not (``names`` excluded unless in a cycle)."""
    seen: set[str] = set()
    stack = [p for n in names for p in graph.get(n, ())]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(graph.get(name, ()))
    return seen


def descendants(graph: Mapping[str, Sequence[str]], names: Iterable[str]) -> set[str]:
    """Every asset that depends on ``names``, directly or not."""
    children: dict[str, list[str]] = {}
    for child, deps in graph.items():
        for dep in deps:
            children.setdefault(dep, []).append(child)
    return ancestors(children, names)
