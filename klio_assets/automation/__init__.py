"""Automation services: landing of new tracks, top-down propagation, catalog backfills and
their dry runs, shared by the sensors, the schedule and the CLI."""
