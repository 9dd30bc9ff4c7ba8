"""Tests of the automation: landing, propagation, backfills, their dry runs."""
