"""The cursor the daemon keeps for a sensor (private API: no public call lists instigator
states). ``klio-assets automation MODE --dry-run`` reads it to say what the next tick would
take; without the private API it answers None (the dry run then starts from the beginning)."""

from __future__ import annotations

import dagster as dg


def stored_cursor(instance: dg.DagsterInstance, sensor_name: str) -> str | None:
    """The cursor the daemon keeps for ``sensor_name`` (None if it never ticked)."""
    try:
        from dagster._core.definitions.run_request import InstigatorType  # noqa: PLC0415
    except ImportError:
        return None
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == sensor_name and state.instigator_data is not None:
            cursor = getattr(state.instigator_data, "cursor", None)
            return str(cursor) if cursor is not None else None
    return None
