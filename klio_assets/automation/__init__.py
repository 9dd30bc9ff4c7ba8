"""Automation services: landing of new tracks, top-down propagation, catalog backfills and
their dry runs, shared by the sensors, the schedule and the CLI.

* :mod:`~klio_assets.automation.service`: :class:`~klio_assets.automation.service.Automation`,
  one method per mode, what the sensors, the CLI and the dry runs call;
* :mod:`~klio_assets.automation.landing` (a package, one concern per module),
  :mod:`~klio_assets.automation.propagation`, :mod:`~klio_assets.automation.backfill`: the modes;
* :mod:`~klio_assets.automation.runs`: run requests and the tracks of a run, shared by all;
* :mod:`~klio_assets.automation.preview`: ``klio-assets automation MODE --dry-run``.
"""
