"""Dagster sensors and schedules of klio-assets (installed as ``klio_assets.sensors``).

:func:`build_automation` builds, for one deployment's settings, thin adapters over the
services of :class:`klio_assets.automation.service.Automation`:

* ``landing_sensor`` (:mod:`klio_assets.sensors.landing`): streams new tracks in from the
  landing folder / ``gs://`` prefix and a Pub/Sub subscription; registers them in batches and
  requests one fused run per contiguous range (every selected analysis, one Beam job);
* ``propagation_sensor`` (:mod:`klio_assets.sensors.propagation`): top-down, O(finished runs)
  per tick: a run that materialized only some analyses is followed by one over the same
  tracks for their descendants;
* ``source_changes_sensor`` (:mod:`klio_assets.sensors.source_changes`): sweeps the source
  files, a page per tick; observes those changed on disk and recomputes what came from them;
* ``catalog_backfill_schedule`` (:mod:`klio_assets.sensors.backfill`): missing, failed and
  stale tracks per analysis, in bounded runs.

They reach the catalog and storage through the resources (``CatalogResource.get_catalog()``,
``StorageResource.get_storage()``): the very resource objects of the Definitions, handed to
:func:`build_automation`. (Not as resource parameters: a sensor called directly, as tests
and benchmarks do with ``build_sensor_context(definitions=defs)``, gets no resources from the
Definitions in Dagster 1.13.) Every tick either returns what it wants done (a ``SensorResult`` with run
requests and a cursor) or raises: an error is a failed tick in the UI, never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.sensors.backfill import build_backfill_schedule
from klio_assets.sensors.landing import build_landing_sensor
from klio_assets.sensors.propagation import build_propagation_sensor
from klio_assets.sensors.source_changes import build_source_changes_sensor
from klio_assets.sensors.window import build_catalog_ranges_sensor, build_retention_sensor

from klio_assets.automation.landing import Subscriber
from klio_assets.automation.service import Automation
from klio_assets.settings import Settings

#: Sensors and schedules that need no settings (none yet); the deployment's are built by
#: :func:`build_automation`.
SENSORS: list[dg.SensorDefinition] = []
SCHEDULES: list[dg.ScheduleDefinition] = []


def build_automation(
    settings: Settings,
    analyses: Sequence[Any],
    *,
    job_name: str,
    subscriber: Subscriber | Callable[[], Subscriber] | None = None,
    catalog: CatalogResource | None = None,
    storage: StorageResource | None = None,
    window_jobs: tuple[Any, Any] | None = None,
) -> tuple[list[dg.SensorDefinition], list[dg.ScheduleDefinition]]:
    """The landing, propagation and source changes sensors and the catalog backfill schedule.

    Parameters
    ----------
    settings : Settings
    analyses : sequence of Analysis
        Every analysis of the code location.
    job_name : str
        The analyses job (``audio_analyses_job``).
    subscriber : Subscriber or callable, optional
        A Pub/Sub subscriber, or a callable returning one (tests); default
        ``google.cloud.pubsub_v1``.
    catalog, storage : CatalogResource, StorageResource, optional
        The Definitions' resources (default: built from ``settings``, as the Definitions do).
    window_jobs : (job, job), optional
        The analyses job (named ``job_name``) and the ``catalog_ranges_job``, as definitions:
        the catalog ranges sensor, which launches both, is built when they are given.

    Raises
    ------
    ParameterError
        ``KLIO_ASSETS_AUTO_ANALYSES`` names an unknown analysis.
    """
    automation = Automation.build(settings, analyses)
    catalog = catalog or CatalogResource(url=settings.catalog_url)
    storage = storage or StorageResource(root=settings.storage)
    sensors = [
        build_landing_sensor(automation, job_name=job_name, catalog=catalog, subscriber=subscriber),
        build_propagation_sensor(automation, job_name=job_name, catalog=catalog),
        build_source_changes_sensor(automation, job_name=job_name, catalog=catalog),
        build_retention_sensor(automation, job_name=job_name, catalog=catalog),
    ]
    if window_jobs is not None:
        sensors.append(build_catalog_ranges_sensor(automation, jobs=window_jobs, catalog=catalog))
    schedule = build_backfill_schedule(
        automation, job_name=job_name, catalog=catalog, storage=storage
    )
    return sensors, [schedule]


__all__ = ["SCHEDULES", "SENSORS", "build_automation"]
