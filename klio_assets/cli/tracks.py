"""``klio-assets add``: register tracks from audio files, folders or a CSV manifest."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from klio_assets.cli.common import fail, load_settings
from klio_assets.cli.text import shown
from klio_assets.errors import KlioAssetsError


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with track_id,path columns.",
)
@click.option(
    "--allow-root",
    "allow_roots",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Folder manifest paths may point into (besides the manifest's own).",
)
@click.option(
    "--follow-symlinks", is_flag=True, help="Accept symlinks that lead out of added folders."
)
def add(
    paths: Sequence[str], manifest: str | None, allow_roots: Sequence[str], follow_symlinks: bool
) -> None:
    """Register tracks: audio files, folders (searched recursively) or a CSV manifest."""
    if not paths and not manifest:
        fail("give audio files, folders or --manifest")
    settings = load_settings()
    # Imports Dagster (~1.2 s), which `klio-assets run`'s all-done answer must not load.
    from klio_assets.orchestration.intake import add_tracks  # noqa: PLC0415

    try:
        intake = add_tracks(
            settings,
            paths,
            manifest=manifest,
            allowed_roots=allow_roots,
            follow_symlinks=follow_symlinks,
        )
    except KlioAssetsError as exc:
        fail(str(exc))
    outcome = intake.registration
    click.echo(
        f"registered {len(outcome.added)} new tracks ({len(outcome.known)} already registered); "
        f"catalog {settings.catalog_url}"
    )
    for what, reason in intake.refused:
        click.echo(f"  refused {shown(what)}: {shown(reason)}", err=True)
    if intake.refused:
        sys.exit(1)
