"""The per-run switches of the ``audio_analyses`` op, and the one place run config is built."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

#: Name of the op (and of the node in the UI) running every analysis.
OP_NAME = "audio_analyses"


class AnalysisRunConfig(dg.Config):
    """Per-run switches of the ``audio_analyses`` asset."""

    force: bool = Field(False, description="Recompute tracks whose outputs already exist.")
    dry_run: bool = Field(
        False,
        description="Report per track and analysis what would be computed or skipped; compute "
        "and materialize nothing (Klio's ping mode).",
    )


def analysis_run_config(
    *, force: bool = False, dry_run: bool = False, log_level: str | None = None
) -> dg.RunConfig:
    """Run config of a run of the analyses (CLI, sensors, schedules, tests).

    Parameters
    ----------
    force : bool
        Recompute tracks whose outputs already exist.
    dry_run : bool
        Report what would be done; compute and materialize nothing.
    log_level : str, optional
        Level of the console logger (e.g. ``"CRITICAL"`` when the caller renders progress
        itself); Dagster's default when None.

    Returns
    -------
    dg.RunConfig
    """
    loggers = {"console": {"config": {"log_level": log_level}}} if log_level else None
    return dg.RunConfig(
        ops={OP_NAME: AnalysisRunConfig(force=force, dry_run=dry_run)}, loggers=loggers
    )
