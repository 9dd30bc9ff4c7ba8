"""Tests of the worker side (no Dagster): decoding, storage, the engine, the Beam pipeline."""
