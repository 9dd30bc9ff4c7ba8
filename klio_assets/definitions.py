"""The one code location of klio-assets: ``defs``.

Built from the deployment's settings (:mod:`klio_assets.settings`, read here and only here):
one partitioned asset per analysis, all run by the ``audio_analyses`` multi-asset in one Beam
job per batch of tracks, the resources that say where audio comes from and goes to and which
Beam runner runs it, and the sensors and schedules.
"""

from __future__ import annotations

import dagster as dg

from klio_assets.analyses import load_analyses
from klio_assets.automation.service import Automation
from klio_assets.orchestration.assets import GROUP_NAME, build_analysis_assets
from klio_assets.orchestration.catalog_assets import build_catalog_assets
from klio_assets.orchestration.catalog_ranges import (
    CATALOG_RANGES_JOB,
    build_catalog_ranges_asset,
    ranges_partitions,
)
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.orchestration.source_files import source_files_spec
from klio_assets.resources import (
    BeamRunnerResource,
    CatalogResource,
    DataflowConfig,
    StorageResource,
)
from klio_assets.sensors import SCHEDULES, SENSORS, build_automation
from klio_assets.settings import Settings

#: The job the CLI and sensors launch (any subset of analyses, any range of tracks).
JOB_NAME = "audio_analyses_job"
#: The job updating the catalog-level (unpartitioned) tables.
CATALOG_JOB_NAME = "catalog_tables_job"


def build_definitions(settings: Settings) -> dg.Definitions:
    """The code location for one deployment's settings."""
    analyses = load_analyses(settings.analysis_modules)
    analyses_asset = build_analysis_assets(
        analyses,
        batch_size=settings.batch_size,
        params=settings.params,
        embed_image_bytes=settings.embed_image_bytes,
    )
    job = dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(analyses_asset),
        partitions_def=tracks_partitions,
        description="Materialize analyses for a range of tracks (one Beam job per run).",
    )
    automation = Automation.build(settings, analyses)
    ranges_asset = build_catalog_ranges_asset(
        analyses, automation.planned, selected=automation.selected
    )
    ranges_job = dg.define_asset_job(
        CATALOG_RANGES_JOB,
        selection=dg.AssetSelection.assets(ranges_asset),
        partitions_def=ranges_partitions,
        description="Bring one catalog range (tracks outside Dagster's window) up to date: one "
        "Beam job, one materialization.",
    )
    catalog_assets = build_catalog_assets({a.name: a for a in analyses})
    catalog_job = dg.define_asset_job(
        CATALOG_JOB_NAME,
        selection=dg.AssetSelection.assets(*catalog_assets),
        description="Update the catalog-level tables from the results written since their last update.",
    )
    storage = StorageResource(root=settings.storage)
    catalog = CatalogResource(url=settings.catalog_url)
    auto_sensors, auto_schedules = build_automation(
        settings,
        analyses,
        job_name=JOB_NAME,
        catalog=catalog,
        storage=storage,
        window_jobs=(job, ranges_job),
    )
    catalog_schedule = dg.ScheduleDefinition(
        name="catalog_tables_schedule",
        job=catalog_job,
        cron_schedule=settings.catalog_tables_cron,
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.automation == "running"
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Update duplicate_groups and track_features from the results written since "
        "their last update (cost follows what changed).",
    )
    return dg.Definitions(
        assets=[source_files_spec(GROUP_NAME), analyses_asset, ranges_asset, *catalog_assets],
        jobs=[job, catalog_job, ranges_job],
        sensors=[*SENSORS, *auto_sensors],
        schedules=[*SCHEDULES, *auto_schedules, catalog_schedule],
        resources={
            "beam": BeamRunnerResource(
                pipeline_args=settings.beam_options,
                dataflow=DataflowConfig(**settings.dataflow) if settings.dataflow else None,
            ),
            "storage": storage,
            "catalog": catalog,
        },
        # One op per run: an extra process per step would only add start-up time.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())


#: Definitions built per settings in this process (``execute_job`` reconstructs the job three
#: times per run; building them costs 25 ms or more each).
_BUILT: dict[str, dg.Definitions] = {}


def _definitions_for_env() -> dg.Definitions:
    settings = Settings.from_env()
    key = settings.model_dump_json()
    if key not in _BUILT:
        if len(_BUILT) >= 8:
            _BUILT.clear()
        _BUILT[key] = build_definitions(settings)
    return _BUILT[key]


def get_analyses_job() -> dg.JobDefinition:
    """The analyses job for the settings in the environment now (the reconstructor the CLI
    hands to ``execute_job``; the run worker rebuilds it from the same environment)."""
    return _definitions_for_env().resolve_job_def(JOB_NAME)


def get_catalog_job() -> dg.JobDefinition:
    """The catalog-tables job for the settings in the environment now."""
    return _definitions_for_env().resolve_job_def(CATALOG_JOB_NAME)
