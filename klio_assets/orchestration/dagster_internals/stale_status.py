"""Dagster's own stale status of partitions: the resolver the UI asks (private API).

The UI's "Unsynced" and "Materialize unsynced" come from
``dagster._core.definitions.data_version.CachingStaleStatusResolver``, which has no public
entry point outside a workspace request. ``klio-assets run --stale`` asks the same resolver,
so that it recomputes exactly what the UI calls unsynced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from klio_assets.errors import KlioAssetsError


def stale_statuses(
    instance: dg.DagsterInstance,
    asset_graph: object,
    assets: Sequence[str] | Mapping[str, Sequence[str]],
    partitions: Sequence[str] = (),
) -> dict[str, dict[str, str]]:
    """Asset name to each partition's stale status: ``FRESH``, ``STALE`` or ``MISSING``.

    Parameters
    ----------
    asset_graph : dagster asset graph, or sequence of dg.AssetsDefinition
        ``Definitions.resolve_asset_graph()`` of the code location, or the assets (and
        specs) to build one from (without their resources).
    assets : sequence of str, or mapping of str to sequence of str
        Asset names (each asked about ``partitions``), or each asset name to the partitions
        to ask about.
    partitions : sequence of str

    Raises
    ------
    KlioAssetsError
        When this Dagster has no stale-status resolver where it is expected.
    """
    try:
        from dagster._core.definitions.assets.graph.asset_graph import (  # noqa: PLC0415
            AssetGraph,
        )
        from dagster._core.definitions.data_version import (  # noqa: PLC0415
            CachingStaleStatusResolver,
        )
        from dagster._core.loader import LoadingContextForTest  # noqa: PLC0415
    except ImportError as exc:
        raise KlioAssetsError(
            f"this Dagster has no stale-status resolver where klio-assets looks for it: {exc}"
        ) from exc
    if isinstance(asset_graph, (list, tuple)):  # specs become external assets
        asset_graph = AssetGraph.from_assets(
            [
                dg.AssetsDefinition(specs=[a]) if isinstance(a, dg.AssetSpec) else a
                for a in asset_graph
            ]
        )
    resolver = CachingStaleStatusResolver(
        instance,
        asset_graph,  # type: ignore[arg-type]
        # the plain loading context (its name says "test": it is the one without a workspace)
        LoadingContextForTest(instance),
    )
    wanted = assets if isinstance(assets, Mapping) else dict.fromkeys(assets, partitions)
    # StaleStatus by name: "FRESH", "STALE", "MISSING"
    return {
        name: {p: resolver.get_status(dg.AssetKey(name), p).value for p in keys}
        for name, keys in wanted.items()
    }


def stale_partitions(
    instance: dg.DagsterInstance,
    asset_graph: object,
    assets: Sequence[str],
    partitions: Sequence[str],
) -> dict[str, list[str]]:
    """Asset name to its partitions among ``partitions`` that Dagster calls stale."""
    statuses = stale_statuses(instance, asset_graph, assets, partitions)
    return {name: [p for p in partitions if per[p] == "STALE"] for name, per in statuses.items()}
