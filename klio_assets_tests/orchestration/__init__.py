"""Tests of the Dagster side: assets, runs, reporting, partitions, Dagster internals."""
