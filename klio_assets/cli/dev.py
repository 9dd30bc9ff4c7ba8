"""``klio-assets dev`` (the Dagster UI on this deployment) and ``klio-assets demo``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from klio_assets.cli.common import load_settings, self_command
from klio_assets.cli.demo import COPY_NAME, make_demo_audio
from klio_assets.cli.run import run
from klio_assets.cli.status import status
from klio_assets.cli.tracks import add

_WORKSPACE = (
    "load_from:\n  - python_module:\n      module_name: klio_assets.definitions\n"
    "      attribute: defs\n      location_name: klio_assets\n"
)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(dagster_args: Sequence[str]) -> None:
    """Start ``dagster dev`` on this deployment's settings (UI on http://127.0.0.1:3000)."""
    settings = load_settings()
    workspace = os.path.abspath("workspace.yaml")
    if not os.path.exists(workspace):
        workspace = os.path.join(settings.home, "workspace.yaml")
        with open(workspace, "w") as fh:
            fh.write(_WORKSPACE)
    args = [sys.executable, "-m", "dagster", "dev", "-w", workspace, *dagster_args]
    click.echo(
        f"DAGSTER_HOME={settings.home} dagster dev -w {workspace} {' '.join(dagster_args)}",
        err=True,
    )
    os.execv(args[0], args)  # same interpreter: works without an activated virtualenv


def _exit_code(ctx: click.Context, command: click.Command, **params: object) -> int:
    """Invoke ``command`` and return its exit status (0 when it returns normally)."""
    try:
        ctx.invoke(command, **params)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@click.command()
@click.option(
    "--tracks",
    "n_tracks",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of demo tracks (files), the copy and the M4A included.",
)
def demo(n_tracks: int) -> None:
    """Make a small catalog of generated music, register it and run every analysis on it.

    Safe to run again: files and tracks already there are reused and only what is missing is
    computed. The hint to open the UI is printed whatever happened; the exit status is the
    worst of ``add`` and ``run`` (1 when a track failed).
    """
    settings = load_settings()
    folder = os.path.join(settings.home, "demo-audio")
    files = make_demo_audio(folder, n_tracks=n_tracks)
    click.echo(f"demo audio: {len(files)} files in {folder}")
    ctx = click.get_current_context()
    codes = [
        _exit_code(ctx, add, paths=[folder], manifest=None, allow_roots=(), follow_symlinks=False)
    ]
    codes.append(
        _exit_code(ctx, run, assets=(), tracks=(), force=False, dry_run=False, as_json=False)
    )
    if any(os.path.basename(f) == COPY_NAME for f in files):
        click.echo(
            f"({os.path.basename(files[0])} and {COPY_NAME} hold the same bytes: a run "
            "computes one of them and counts the other 'skipped', its results copied "
            "(shared_from), not computed again.)"
        )
    codes.append(_exit_code(ctx, status, as_json=False))
    click.echo(
        "\nOutputs are under " + settings.storage + ".\n"
        f"Open the Dagster UI on this instance with:  {self_command()} dev   (then http://127.0.0.1:3000)"
    )
    if max(codes):
        click.echo(
            f"Some tracks failed: {self_command()} tracks --failed lists them with the reason.",
            err=True,
        )
        sys.exit(max(codes))
