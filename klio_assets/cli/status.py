"""``klio-assets status`` and ``klio-assets show``: where things stand."""

from __future__ import annotations

import sys

import click

from klio_assets.cli import render
from klio_assets.cli.common import fail, load_settings
from klio_assets.errors import KlioAssetsError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--failed",
    "failed_only",
    is_flag=True,
    help="List every failed track with its reason and analyses (no table, no cap).",
)
def status(as_json: bool, failed_only: bool = False) -> None:
    """Per analysis: how many tracks are materialized, missing, failed; then one line per
    failed track, its analyses grouped (--failed: all of them)."""
    settings = load_settings()
    # Imports SQLAlchemy and the analyses (not Dagster: the catalog answers), which
    # `klio-assets run`'s all-done answer must not load.
    from klio_assets.orchestration.status import collect_status  # noqa: PLC0415

    try:
        state = collect_status(settings)
    except KlioAssetsError as exc:  # KLIO_ASSETS_ANALYSES or _PARAMS refused: one line
        fail(str(exc))
    if as_json:
        render.print_json(state.failed_json() if failed_only else state.to_json())
    else:
        render.print_status(state, failed_only=failed_only)


@click.command()
@click.argument("asset")
@click.argument("track_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(asset: str, track_id: str | None, as_json: bool) -> None:
    """The latest metadata of ASSET for TRACK_ID: uri, status, code_version..."""
    settings = load_settings()
    # Imports Dagster (~1.2 s), which `klio-assets run`'s all-done answer must not load.
    from klio_assets.orchestration.status import collect_show  # noqa: PLC0415

    try:
        info = collect_show(settings, asset, track_id)
    except KlioAssetsError as exc:
        fail(str(exc))
    if as_json:
        render.print_json(info)
    else:
        render.print_show(info)
    if info.get("status") in ("missing", "failed"):
        sys.exit(1)
