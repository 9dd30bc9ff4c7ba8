"""The instance behind Dagster's current partition-loading context (private attributes).

Dagster resolves a ranged run's keys through ``PartitionsDefinition.get_partition_keys_in_range``
inside a partition-loading context that carries a dynamic-partitions store: the instance
itself, or a caching loader wrapping it (``CachingDynamicPartitionsLoader._instance``). The
context manager is public (``dg.partition_loading_context``); the store attribute and the
loader's instance are not.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def _loading_context() -> Any:
    """Dagster's ``partition_loading_context``: the public name, else the private module."""
    public = getattr(dg, "partition_loading_context", None)
    if public is not None:
        return public
    from dagster._core.definitions.partitions.context import (  # noqa: PLC0415
        partition_loading_context,
    )

    return partition_loading_context


def loading_instance() -> dg.DagsterInstance | None:
    """The instance partitions are being loaded from now, or ``None`` when it cannot be told.

    ``None`` (no context, a store that is not an instance, or Dagster's internals changed)
    sends the caller to Dagster's own implementation.
    """
    try:
        with _loading_context()() as ctx:
            store = ctx.dynamic_partitions_store
    except (ImportError, AttributeError):
        return None
    instance = store if isinstance(store, dg.DagsterInstance) else getattr(store, "_instance", None)
    return instance if isinstance(instance, dg.DagsterInstance) else None
