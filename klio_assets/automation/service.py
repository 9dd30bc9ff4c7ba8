"""The automation of one deployment: one service per mode, shared by the sensors, the
schedule, the CLI and the dry runs.

:class:`Automation` knows, from the settings and the analyses, what the automation runs
(``KLIO_ASSETS_AUTO_ANALYSES`` and their upstreams, in topological order), how big its runs
are and where new tracks come from. Its methods are the modes:

* :meth:`Automation.landing`: take what landed, register it, the ranges to run
  (:mod:`klio_assets.automation.landing`);
* :meth:`Automation.propagation`: downstream runs after finished runs
  (:mod:`klio_assets.automation.propagation`);
* :meth:`Automation.backfill`: missing, failed and stale tracks in bounded runs
  (:mod:`klio_assets.automation.backfill`);
* :meth:`Automation.source_changes`: a sweep of the source files, observing those changed on
  disk and recomputing what came from them (:mod:`klio_assets.automation.source_changes`);
* :meth:`Automation.retention`: done tracks leave Dagster's window
  (:mod:`klio_assets.automation.retention`);
* :meth:`Automation.catalog_ranges`: work outside the window, back into it or as catalog
  ranges (:mod:`klio_assets.automation.catalog_ranges`).

The sensors (:mod:`klio_assets.sensors`) turn their results into ``SensorResult``s, the CLI
and :mod:`klio_assets.automation.preview` into reports; the catalog and storage come from the
resources (``CatalogResource.get_catalog()``, ``StorageResource.get_storage()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from klio_assets.automation.backfill import BackfillPlan, plan_backfill
from klio_assets.automation.catalog_ranges import CatalogRangesTick, catalog_ranges_tick
from klio_assets.automation.landing.pubsub import Subscriber
from klio_assets.automation.landing.tick import LandingTick, landing_tick
from klio_assets.automation.propagation import PropagationTick, propagation_tick
from klio_assets.automation.retention import RetentionTick, retention_tick
from klio_assets.automation.source_changes import SourceChangesTick, source_changes_tick
from klio_assets.catalog.database import TrackCatalog
from klio_assets.errors import ParameterError
from klio_assets.orchestration.lineage import ancestors, parents
from klio_assets.orchestration.selection import retry_policy
from klio_assets.settings import Settings
from klio_assets.worker.plan import SOURCE_ASSET, PlannedAnalysis, plan_analyses
from klio_assets.worker.storage import Storage

#: The modes `klio-assets automation MODE --dry-run` previews.
MODES = ("landing", "propagation", "backfill", "source_changes", "retention", "catalog_ranges")


@dataclass(frozen=True)
class Automation:
    """What the automation of one deployment runs, and its modes.

    Attributes
    ----------
    settings : Settings
    graph : dict
        Analysis name to the names it depends on (lineage).
    planned : dict
        Every analysis' plan (parameters, output version), in topological order.
    selected : list of str
        The analyses the automation runs, in topological order.
    """

    settings: Settings
    graph: dict[str, list[str]]
    planned: dict[str, PlannedAnalysis]
    selected: list[str]

    @classmethod
    def build(cls, settings: Settings, analyses: Sequence[Any]) -> Automation:
        """The automation for ``settings`` over ``analyses`` (every analysis of the location).

        Raises
        ------
        ParameterError
            ``KLIO_ASSETS_AUTO_ANALYSES`` names an unknown analysis.
        """
        graph = parents(analyses)
        planned = plan_analyses(analyses, settings.params)
        names = list(planned)  # topological order
        auto = settings.auto_analyses
        unknown = [a for a in auto if a not in graph]
        if unknown:
            raise ParameterError(
                f"KLIO_ASSETS_AUTO_ANALYSES names unknown analyses {unknown}; known: {names}"
            )
        # An analysis runs with what it needs: asking for `beats` brings `downsampled_audio`.
        wanted = (set(auto) | ancestors(graph, auto)) if auto else set(names)
        return cls(settings, graph, planned, [n for n in names if n in wanted])

    @property
    def message_roots(self) -> list[str]:
        """Folders a Pub/Sub message may name local files in: a local landing folder and
        ``KLIO_ASSETS_LANDING_ROOTS``."""
        landing = self.settings.landing
        return [
            *([landing] if landing and "://" not in landing else []),
            *self.settings.landing_roots,
        ]

    def landing(
        self,
        instance: dg.DagsterInstance,
        catalog: TrackCatalog,
        *,
        cursor: str | None,
        subscriber: Subscriber | Callable[[], Subscriber] | None = None,
        dry_run: bool = False,
    ) -> LandingTick:
        """One landing tick (see :func:`klio_assets.automation.landing.landing_tick`)."""
        settings = self.settings
        return landing_tick(
            instance,
            catalog,
            cursor=cursor,
            location=settings.landing or None,
            max_tracks=settings.landing_max_tracks,
            batch_size=settings.batch_size,
            settle_s=settings.landing_settle_s,
            subscription=settings.landing_subscription or None,
            subscriber=subscriber,
            roots=self.message_roots,
            dry_run=dry_run,
            window=settings.window_max_tracks,
        )

    def propagation(
        self, instance: dg.DagsterInstance, catalog: TrackCatalog, *, cursor: str | None
    ) -> PropagationTick:
        """One propagation tick (see :func:`klio_assets.automation.propagation.propagation_tick`)."""
        return propagation_tick(
            instance,
            catalog,
            cursor=cursor,
            graph=self.graph,
            allowed=self.selected,
            batch_size=self.settings.batch_size,
            planned=self.planned,
            policy=retry_policy(self.settings),
        )

    def backfill(
        self, instance: dg.DagsterInstance, catalog: TrackCatalog, storage: Storage, *, tick: str
    ) -> BackfillPlan:
        """The backfill plan for schedule tick ``tick`` (see
        :func:`klio_assets.automation.backfill.plan_backfill`); stores nothing."""
        return plan_backfill(
            instance,
            catalog,
            storage,
            planned=self.planned,
            selected=self.selected,
            batch_size=self.settings.batch_size,
            max_runs=self.settings.backfill_max_runs,
            tick=tick,
            policy=retry_policy(self.settings),
            # What each analysis reads (source_audio is lineage only: a held source_audio
            # does not hold the analyses that decode the source themselves).
            graph={n: [d for d in deps if d != SOURCE_ASSET] for n, deps in self.graph.items()},
        )

    def source_changes(
        self,
        instance: dg.DagsterInstance,
        catalog: TrackCatalog,
        *,
        cursor: str | None,
        dry_run: bool = False,
    ) -> SourceChangesTick:
        """One sweep tick over the source files (see
        :func:`klio_assets.automation.source_changes.source_changes_tick`)."""
        return source_changes_tick(
            self.settings,
            instance,
            catalog,
            cursor=cursor,
            allowed=self.selected,
            per_tick=self.settings.source_checks_per_tick,
            dry_run=dry_run,
        )

    @property
    def versions(self) -> dict[str, str]:
        """The analyses the automation runs, to their current output versions."""
        return {name: self.planned[name].version for name in self.selected}

    def retention(
        self,
        instance: dg.DagsterInstance,
        catalog: TrackCatalog,
        *,
        job_name: str,
        cursor: str | None,
        dry_run: bool = False,
    ) -> RetentionTick:
        """One retention tick (see :func:`klio_assets.automation.retention.retention_tick`)."""
        return retention_tick(
            instance,
            catalog,
            versions=self.versions,
            job_name=job_name,
            cursor=cursor,
            per_tick=self.settings.window_checks_per_tick,
            retain_s=self.settings.window_retain_s,
            policy=retry_policy(self.settings),
            inputs=self.graph,
            dry_run=dry_run,
        )

    def catalog_ranges(
        self,
        instance: dg.DagsterInstance,
        catalog: TrackCatalog,
        *,
        cursor: str | None,
        dry_run: bool = False,
    ) -> CatalogRangesTick:
        """One catalog ranges tick (see
        :func:`klio_assets.automation.catalog_ranges.catalog_ranges_tick`)."""
        return catalog_ranges_tick(
            instance,
            catalog,
            planned=self.planned,
            selected=self.selected,
            cursor=cursor,
            range_size=self.settings.range_size,
            max_runs=self.settings.backfill_max_runs,
            window=self.settings.window_max_tracks,
            batch_size=self.settings.batch_size,
            policy=retry_policy(self.settings),
            dry_run=dry_run,
        )


__all__ = ["MODES", "Automation"]
