"""The ``tracks`` partitions: one dynamic partition per track ID, in registration order."""

from __future__ import annotations

import dagster as dg

TRACKS = "tracks"

#: Every per-track analysis asset is partitioned by it.
tracks_partitions = dg.DynamicPartitionsDefinition(name=TRACKS)
