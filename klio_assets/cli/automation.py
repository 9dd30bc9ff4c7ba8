"""``klio-assets automation MODE``: the daemon's automation, looked at or run now."""

from __future__ import annotations

import sys

import click

from klio_assets.cli import render
from klio_assets.cli.common import fail, load_settings, self_command
from klio_assets.errors import KlioAssetsError


@click.command()
@click.argument(
    "mode",
    type=click.Choice(
        ["landing", "propagation", "backfill", "source_changes", "retention", "catalog_ranges"]
    ),
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what the mode would register, request and compute; change nothing.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Recompute where outputs exist (backfill; with --dry-run: count them as computed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def automation(mode: str, dry_run: bool, force: bool, as_json: bool) -> None:
    """What the daemon's automation does: the landing, propagation, source changes, window
    retention and catalog ranges sensors, the catalog backfill.

    --dry-run shows what MODE would do now (from the sensors' stored cursors); without it,
    ``backfill`` launches the schedule's runs now, in this process, and ``retention`` takes
    done tracks out of Dagster's window now. The sensors run in the daemon (klio-assets dev,
    KLIO_ASSETS_AUTOMATION=running).
    """
    settings = load_settings()
    if not dry_run and mode not in ("backfill", "retention"):
        fail(
            f"the {mode} sensor runs in the daemon ({self_command()} dev); "
            "--dry-run shows what it would do"
        )
    # Imports Dagster (~1.2 s), which `klio-assets run`'s all-done answer must not load.
    from klio_assets.automation.on_demand import automation_now  # noqa: PLC0415

    try:
        plan = automation_now(mode, settings, dry_run=dry_run, force=force)
    except KlioAssetsError as exc:
        fail(str(exc))
    if as_json:
        render.print_json(plan)
    else:
        render.print_automation(mode, plan, dry_run=dry_run)
    sys.exit(1 if any(not r["success"] for r in plan.get("runs", [])) else 0)
