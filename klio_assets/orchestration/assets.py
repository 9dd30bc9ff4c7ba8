"""``build_analysis_assets``: every analysis becomes a partitioned asset of one multi-asset.

All analyses live in one subsettable ``@multi_asset`` so that analyses selected together run
in the same Beam pipeline and read and decode each track once, while the lineage graph still
shows one asset per analysis with its real dependencies. Outputs are written by the Beam
workers to the storage root, never through an IO manager: no audio is pickled.
"""

# No `from __future__ import annotations`: Dagster reads the op's annotations at runtime.
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from klio_assets.orchestration import reporting
from klio_assets.orchestration.lineage import parents
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.orchestration.run import OP_NAME, AnalysisRunConfig, run_batch
from klio_assets.orchestration.source_files import SOURCE_FILES
from klio_assets.resources.beam import BeamRunnerResource
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.plan import SOURCE_ASSET, PlannedAnalysis, plan_analyses

__all__ = ["GROUP_NAME", "OP_NAME", "build_analysis_assets"]

GROUP_NAME = "audio"


def _params_json(analysis: Analysis, overrides: Mapping[str, Any]) -> dict[str, Any]:
    params = analysis.params(overrides)
    return params.model_dump(mode="json") if params is not None else {}


def build_analysis_assets(
    analyses: Sequence[Analysis],
    *,
    batch_size: int,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    embed_image_bytes: int = reporting.DEFAULT_EMBED_IMAGE_BYTES,
) -> dg.AssetsDefinition:
    """One partitioned asset per analysis, all computed by a single Beam-launching op.

    Parameters
    ----------
    analyses : sequence of Analysis
    batch_size : int
        Most tracks per run (one Beam job): ``BackfillPolicy.multi_run(batch_size)``.
    params : mapping, optional
        Per-deployment parameter overrides, ``{analysis: {parameter: value}}``.
    embed_image_bytes : int
        Largest plot embedded in a track's metadata (0: none).
    """
    planned = plan_analyses(analyses, params)
    graph = {a.name: a for a in analyses}

    @dg.multi_asset(
        name=OP_NAME,
        specs=_specs(analyses, planned),
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=batch_size),
        description="Runs the selected audio analyses over a range of tracks in one Beam job.",
    )
    def audio_analyses(
        context: dg.AssetExecutionContext,
        config: AnalysisRunConfig,
        beam: BeamRunnerResource,
        storage: StorageResource,
        catalog: CatalogResource,
    ) -> Iterator[dg.AssetMaterialization]:
        yield from run_batch(
            context,
            config=config,
            planned=planned,
            graph=graph,
            beam=beam,
            storage=storage,
            catalog=catalog,
            embed_image_bytes=embed_image_bytes,
        )

    return audio_analyses


def _specs(
    analyses: Sequence[Analysis], planned: Mapping[str, PlannedAnalysis]
) -> list[dg.AssetSpec]:
    """One partitioned, skippable asset per analysis, with its lineage and code version."""
    graph = {a.name: a for a in analyses}
    lineage = parents(analyses)
    return [
        dg.AssetSpec(
            key=name,
            # the source file, observed (its stat): a changed file makes source_audio stale
            deps=[SOURCE_FILES, *lineage[name]] if name == SOURCE_ASSET else lineage[name],
            partitions_def=tracks_partitions,
            code_version=planned[name].version,
            skippable=True,
            group_name=GROUP_NAME,
            kinds={"beam", "audio"},
            description=graph[name].description,
            metadata={
                "output": dg.MetadataValue.json(graph[name].output.spec()),
                "params": dg.MetadataValue.json(_params_json(graph[name], planned[name].params)),
                "defined_in": f"{planned[name].module}.{planned[name].attr}",
            },
        )
        for name in planned
    ]
