"""``klio-assets profile``: run one analysis here, on a few tracks, and show where the time goes.

No Dagster: nothing here touches the instance (:mod:`klio_assets.profiling` does the work).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import click

from klio_assets.analyses import load_analyses
from klio_assets.cli import render
from klio_assets.cli.common import fail
from klio_assets.cli.render_profile import print_profile
from klio_assets.errors import KlioAssetsError
from klio_assets.orchestration.selection import catalog_tables
from klio_assets.profiling import ProfileReport, decode_limits, profile_analysis, resolve_targets
from klio_assets.settings import Settings
from klio_assets.worker.plan import plan_analyses


@click.command()
@click.argument("asset")
@click.option(
    "--tracks", "tracks", multiple=True, metavar="ID", help="Registered track ID (repeatable)."
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="A local audio file that is not registered (repeatable); its ID comes from its name.",
)
@click.option(
    "--top",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Functions shown in the profile, by cumulative time.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the cProfile statistics to FILE.prof (pstats format: snakeviz, python -m pstats).",
)
@click.option(
    "--lines",
    is_flag=True,
    help="Also profile line by line (the function and its module's other functions; "
    "needs klio-assets[profile]).",
)
@click.option("--no-profile", is_flag=True, help="Figures only: skip the cProfile pass.")
@click.option(
    "--no-warmup",
    is_flag=True,
    help="Skip the warm-up: the first track then carries first-use costs (imports, numba).",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs per track for the figures (the asset's step); the median run is shown.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary outputs (their folder is printed).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def profile(
    asset: str,
    tracks: Sequence[str],
    files: Sequence[str],
    top: int,
    output: str | None,
    lines: bool,
    no_profile: bool,
    no_warmup: bool,
    repeat: int,
    keep: bool,
    as_json: bool,
) -> None:
    """Run ASSET here, on a few tracks, and show where the time and memory go.

    No Dagster run, no Beam, nothing written to the deployment's storage or records: the
    worker engine runs in this process and writes into a temporary folder (deleted unless
    --keep). Upstream analyses ASSET reads are computed first, per track, and reported apart.
    Per track: CPU seconds, wall seconds, peak memory, audio seconds, x realtime, and the
    share of the analysis function; then a cProfile profile of the function (a second pass,
    so that the figures carry no profiler overhead). Exits 1 if any track failed.
    """
    if not tracks and not files:
        fail("give registered tracks (--tracks ID) or local audio files (--file PATH)")
    if no_profile and output:
        fail("--output writes the cProfile pass, which --no-profile skips")
    console = render.stderr_console(quiet=as_json)
    try:
        report = _profile(
            asset,
            tracks,
            files,
            warmup=not no_warmup,
            functions=not no_profile,
            lines=lines,
            top=top,
            output=output,
            keep=keep,
            repeat=repeat,
            on_progress=None
            if as_json
            else lambda message: console.print(f"[dim]{message}...[/dim]"),
        )
    except KlioAssetsError as exc:
        fail(str(exc))
    data = report.to_json()
    if as_json:
        render.print_json(data)
    else:
        print_profile(data)
    sys.exit(1 if report.failed else 0)


def _profile(
    asset: str,
    tracks: Sequence[str],
    files: Sequence[str],
    *,
    warmup: bool,
    functions: bool,
    lines: bool,
    top: int,
    output: str | None,
    keep: bool,
    repeat: int,
    on_progress: Callable[[str], None] | None,
) -> ProfileReport:
    """Check ASSET is a per-track analysis of the deployment, then profile it on the targets."""
    settings = Settings.from_env()  # no Dagster: nothing here touches the instance
    os.environ.setdefault("KLIO_ASSETS_HOME", settings.home)  # the numba cache of `run`
    analyses = load_analyses(settings.analysis_modules)
    planned = plan_analyses(analyses, settings.params)
    if asset not in planned:
        if asset in catalog_tables(list(planned)):
            fail(
                f"{asset} is a catalog-level table, not a per-track analysis; "
                f"profile one of: {', '.join(planned)}"
            )
        fail(f"unknown asset {asset!r}; known: {', '.join(planned)}")
    targets = resolve_targets(settings, tracks, files)
    return profile_analysis(
        asset,
        targets,
        planned=planned,
        graph={a.name: a for a in analyses},
        limits=decode_limits(settings),
        warmup=warmup,
        functions=functions,
        lines=lines,
        top=top,
        output=output,
        keep=keep,
        repeat=repeat,
        on_progress=on_progress,
    )
