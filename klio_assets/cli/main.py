"""``klio-assets``: register tracks, run analyses, see where things stand.

The command names and options are a contract: ``add``, ``run``, ``status``, ``show``,
``profile`` (plus ``dev`` and ``demo``). Settings come from the environment (:mod:`klio_assets.settings`);
``dagster dev`` started with ``klio-assets dev`` reads the same ones.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from klio_assets.errors import KlioAssetsError
from klio_assets.settings import Settings

_STATUS_ORDER = ("computed", "skipped", "failed", "would_compute", "would_skip")


def _settings() -> Settings:
    from klio_assets.orchestration.home import prepare_environment  # noqa: PLC0415

    try:
        settings = Settings.from_env()
    except KlioAssetsError as exc:  # a bad KLIO_ASSETS_* value: one line, no traceback
        _fail(str(exc))
    prepare_environment(settings)
    return settings


def _instance():
    import dagster as dg  # noqa: PLC0415 - slow import, only for commands that need it

    return dg.DagsterInstance.get()


def _self_command() -> str:
    """How to call this CLI again: ``klio-assets`` if that is on PATH, else its path."""
    exe = os.path.abspath(sys.argv[0])
    if os.path.basename(exe) != "klio-assets":
        return "klio-assets"
    found = shutil.which("klio-assets")
    if found and os.path.realpath(found) == os.path.realpath(exe):
        return "klio-assets"
    relative = os.path.relpath(exe)
    return relative if not relative.startswith("..") else exe


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"klio-assets: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Klio-style audio analyses as partitioned Dagster assets, one Beam job per batch.

    Settings: KLIO_ASSETS_HOME (default ./.klio-assets), KLIO_ASSETS_STORAGE,
    KLIO_ASSETS_BEAM_OPTIONS, KLIO_ASSETS_BATCH_SIZE.
    """


@main.command()
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
        _fail("give audio files, folders or --manifest")
    settings = _settings()
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.catalog.discovery import discover  # noqa: PLC0415
    from klio_assets.orchestration.registration import register_tracks  # noqa: PLC0415

    try:
        found = discover(
            paths, manifest=manifest, allowed_roots=allow_roots, follow_symlinks=follow_symlinks
        )
        outcome = register_tracks(_instance(), get_catalog(settings.catalog_url), found.tracks)
    except KlioAssetsError as exc:
        _fail(str(exc))
    click.echo(
        f"registered {len(outcome.added)} new tracks ({len(outcome.known)} already registered); "
        f"catalog {settings.catalog_url}"
    )
    problems = [*found.rejected, *((t, msg) for t, msg in outcome.conflicts.items())]
    for what, reason in problems:
        click.echo(f"  refused {what}: {reason}", err=True)
    if problems:
        sys.exit(1)


def _summary_rows(selected: Sequence[str], invocation: Any) -> dict[str, Counter]:
    rows = {name: Counter() for name in selected}
    for name, done in invocation.already_done.items():
        if done:
            rows[name]["skipped"] += len(done)
    for run in invocation.runs:
        if run.summary:
            for name, counts in run.summary["assets"].items():
                rows[name].update(counts)
        else:
            for name in selected:
                rows[name]["failed"] += len(run.track_ids)
    return rows


@main.command()
@click.argument("assets", nargs=-1)
@click.option(
    "--tracks", "tracks", multiple=True, help="Track ID (repeatable); default: every track."
)
@click.option("--force", is_flag=True, help="Recompute even where outputs exist.")
@click.option(
    "--dry-run", is_flag=True, help="Report what would be computed or skipped; change nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option(
    "--upstream/--no-upstream",
    default=True,
    show_default=True,
    help="Also compute the upstream analyses that are missing for these tracks (bottom-up).",
)
@click.option(
    "--check-dagster",
    is_flag=True,
    help="Always ask Dagster which tracks are materialized, even when the catalog's ledger "
    "says all are (after wiping materializations in Dagster).",
)
def run(
    assets: Sequence[str],
    tracks: Sequence[str],
    force: bool,
    dry_run: bool,
    as_json: bool,
    upstream: bool = True,
    check_dagster: bool = False,
) -> None:
    """Materialize ASSETS (default: all) for the tracks that need it, through Dagster.

    Bottom-up: upstream analyses missing for some of the tracks are computed first, in the
    same run (never sibling analyses). Tracks already materialized for the current code
    version are skipped without a run; the rest go in contiguous ranges of at most
    KLIO_ASSETS_BATCH_SIZE tracks, one Dagster run and one Beam job each. When the catalog's
    ledger and the storage show every wanted track done, the command says so without
    starting Dagster at all. Exits 1 if any track failed.
    """
    started = time.perf_counter()
    settings = _settings()
    all_planned = _planned(settings)
    names = list(all_planned)
    tables = _catalog_tables(names)
    unknown = [a for a in assets if a not in names and a not in tables]
    if unknown:
        _fail(f"unknown assets {unknown}; known: {', '.join(names + tables)}")
    selected = [n for n in names if not assets or n in assets]
    selected_tables = [n for n in tables if not assets or n in assets]
    storage = _storage(settings)
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.orchestration.invocation import Invocation  # noqa: PLC0415

    catalog = get_catalog(settings.catalog_url)
    if not (force or dry_run or check_dagster or selected_tables):
        done = _done_without_dagster(
            settings,
            catalog,
            storage,
            all_planned,
            selected,
            tracks,
            with_upstream=upstream and bool(assets),
        )
        if done is not None:  # nothing to do: answered without importing Dagster
            invocation = Invocation(selected=selected, already_done=done)
            invocation.wall_seconds = round(time.perf_counter() - started, 3)
            from rich.console import Console  # noqa: PLC0415

            console = Console(stderr=True)
            if not as_json:
                console.print(
                    f"{len(next(iter(done.values())))} tracks, analyses {', '.join(selected)}: "
                    "all already materialized for the current versions, nothing to run"
                )
            failed = _report_run(
                invocation, selected, dry_run=False, as_json=as_json, console=console
            )
            sys.exit(1 if failed else 0)

    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from klio_assets.catalog.ledger import enter_in_ledger  # noqa: PLC0415
    from klio_assets.orchestration import launch  # noqa: PLC0415

    instance = _instance()
    try:
        ordered, wanted = launch.resolve_tracks(instance, tracks)
    except KlioAssetsError as exc:
        _fail(str(exc))
    upstream_added: list[str] = []
    if upstream and assets and selected:
        selected, upstream_added = launch.with_missing_upstreams(
            instance, storage, all_planned, _engine_inputs(settings), selected, wanted
        )
    invocation = Invocation(selected=selected)
    if not selected:  # only catalog tables asked for
        todo = []
    elif force or dry_run:
        todo = wanted
    else:
        todo, invocation.already_done = launch.tracks_to_run(
            instance, storage, all_planned, selected, wanted
        )
        enter_in_ledger(catalog, all_planned, invocation.already_done)
    batches = launch.contiguous_ranges(ordered, todo, settings.batch_size)
    console = Console(stderr=True)
    if not as_json:
        skipped = len(wanted) - len(todo)
        console.print(
            f"{len(wanted)} tracks, analyses {', '.join(selected)}: {len(todo)} to run in "
            f"{len(batches)} run(s) of at most {settings.batch_size}"
            + (f", {skipped} already materialized" if skipped else "")
            + (
                f" (upstream missing, computed first: {', '.join(upstream_added)})"
                if upstream_added
                else ""
            )
        )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=as_json or not todo,
        transient=False,
    ) as progress:
        bar = progress.add_task("tracks", total=len(todo))
        base = 0
        for batch in batches:

            def on_progress(done: int, base: int = base) -> None:  # from the watcher thread
                progress.update(bar, completed=base + done)  # rich's Progress is thread-safe

            outcome = launch.execute_range(
                instance,
                selected=selected,
                track_ids=batch,
                force=force,
                dry_run=dry_run,
                storage=storage,
                on_progress=on_progress,
            )
            invocation.runs.append(outcome)
            base += len(batch)
            progress.update(bar, completed=base)
    if selected_tables and not dry_run:
        invocation.catalog = launch.execute_catalog_tables(instance, selected_tables)
    invocation.wall_seconds = round(time.perf_counter() - started, 3)
    failed = _report_run(invocation, selected, dry_run=dry_run, as_json=as_json, console=console)
    sys.exit(1 if failed else 0)


def _engine_inputs(settings: Settings) -> dict[str, list[str]]:
    """Analysis name to the analyses it reads (lineage without the ``source_audio`` asset)."""
    from klio_assets.analyses import load_analyses  # noqa: PLC0415
    from klio_assets.orchestration.lineage import inputs  # noqa: PLC0415

    return inputs(load_analyses(settings.analysis_modules))


def _done_without_dagster(
    settings: Settings,
    catalog: Any,
    storage: Any,
    planned: Any,
    selected: Sequence[str],
    tracks: Sequence[str],
    *,
    with_upstream: bool,
) -> dict[str, list[str]] | None:
    """The catalog's ledger and the storage's answer when every wanted track is done, else None.

    Bottom-up runs also need the selected analyses' upstreams present (a ``run beats`` whose
    ``downsampled_audio`` was deleted recomputes it).
    """
    from klio_assets.catalog.ledger import all_done  # noqa: PLC0415

    check = list(selected)
    if with_upstream:
        from klio_assets.orchestration.lineage import ancestors  # noqa: PLC0415

        ups = ancestors(_engine_inputs(settings), selected)
        check = [n for n in planned if n in ups or n in selected]
    done = all_done(catalog, storage, planned, check, list(tracks) or None)
    return None if done is None else {n: done[n] for n in selected}


def _catalog_tables(analyses: Sequence[str]) -> list[str]:
    """The catalog-level assets for these analyses, in dependency order."""
    from klio_assets.catalog.database import DUPLICATE_GROUPS, TRACK_FEATURES  # noqa: PLC0415

    return [*([DUPLICATE_GROUPS] if "fingerprint" in analyses else []), TRACK_FEATURES]


def _planned(settings: Settings):
    from klio_assets.analyses import load_analyses  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    try:
        return plan_analyses(load_analyses(settings.analysis_modules), settings.params)
    except KlioAssetsError as exc:  # KLIO_ASSETS_ANALYSES or _PARAMS refused: one line
        _fail(str(exc))


def _storage(settings: Settings):
    from klio_assets.worker.storage import Storage  # noqa: PLC0415

    return Storage(settings.storage)


def _report_run(
    invocation: Any, selected: Sequence[str], *, dry_run: bool, as_json: bool, console: Any
) -> int:
    rows = _summary_rows(selected, invocation)
    tracks_detail: dict[str, dict[str, Any]] = {}
    audio_hours = computed_hours = beam_seconds = 0.0
    beam_cpu_seconds: float | None = None
    errors = []
    for run in invocation.runs:
        if run.summary:
            tracks_detail.update(run.summary.get("tracks_detail", {}))
            audio_hours += run.summary.get("audio_hours", 0.0)
            computed_hours += run.summary.get("computed_audio_hours", 0.0)
            beam_seconds += run.summary.get("beam_seconds", 0.0)
            if run.summary.get("beam_cpu_seconds") is not None:
                beam_cpu_seconds = (beam_cpu_seconds or 0.0) + run.summary["beam_cpu_seconds"]
        if run.error:
            errors.append(f"run {run.run_id}: {run.error}")
    failed = {
        (name, t): rec.get("reason", "")
        for t, per in tracks_detail.items()
        for name, rec in per.items()
        if rec.get("status") == "failed"
    }
    n_failed = sum(c["failed"] for c in rows.values())
    n_tables_failed = sum(1 for t in invocation.catalog.values() if t["status"] != "materialized")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "assets": {n: dict(c) for n, c in rows.items()},
                    "runs": [r.run_id for r in invocation.runs],
                    "failed": {f"{n}/{t}": reason for (n, t), reason in failed.items()},
                    "tracks": tracks_detail,
                    "already_materialized": invocation.already_done,
                    "audio_hours": round(audio_hours, 4),
                    "computed_audio_hours": round(computed_hours, 4),
                    "beam_seconds": round(beam_seconds, 3),
                    "beam_cpu_seconds": None
                    if beam_cpu_seconds is None
                    else round(beam_cpu_seconds, 3),
                    "wall_seconds": invocation.wall_seconds,
                    "errors": errors,
                    "catalog": invocation.catalog,
                },
                sort_keys=True,
                default=str,
            )
        )
        return n_failed + n_tables_failed
    from rich.table import Table  # noqa: PLC0415

    statuses = [s for s in _STATUS_ORDER if any(c[s] for c in rows.values())] or ["skipped"]
    table = Table(title="dry run: nothing computed" if dry_run else "klio-assets run")
    table.add_column("analysis")
    for status in statuses:
        table.add_column(status, justify="right")
    for name, counts in rows.items():
        table.add_row(name, *(str(counts[s]) for s in statuses))
    console.print(table)
    if dry_run and tracks_detail:
        detail = Table(title="per track")
        detail.add_column("track")
        for name in selected:
            detail.add_column(name)
        for track_id, per in list(tracks_detail.items())[:200]:
            detail.add_row(track_id, *(_cell(per.get(n)) for n in selected))
        console.print(detail)
    rate = (
        f", {computed_hours * 3600 / beam_seconds:.0f}x realtime"
        if beam_seconds and computed_hours
        else ""
    )
    console.print(
        f"{audio_hours:.3f} h of audio in {len(invocation.runs)} run(s), "
        f"{computed_hours:.3f} h computed{rate}; {invocation.wall_seconds:.1f} s in all"
    )
    for (name, track_id), reason in list(failed.items())[:20]:
        console.print(f"[red]failed[/red] {name} {track_id}: {reason}", highlight=False)
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more (klio-assets status)")
    for error in errors:
        console.print(f"[red]error[/red] {error}", highlight=False)
    for name, table in invocation.catalog.items():
        if table["status"] == "materialized":
            console.print(f"{name}: {table.get('uri')}", highlight=False)
        else:
            console.print(f"[red]failed[/red] {name}: {table.get('reason')}", highlight=False)
    if invocation.runs:
        console.print(
            "runs: "
            + ", ".join(r.run_id for r in invocation.runs)
            + f" (see them in {_self_command()} dev)"
        )
    return n_failed + n_tables_failed


def _cell(record: dict[str, Any] | None) -> str:
    if not record:
        return "-"
    text = record["status"]
    if record.get("shared_from"):
        text += f" (same as {record['shared_from']})"
    if record.get("reason"):
        text += f": {record['reason'][:60]}"
    return text


def collect_status(settings: Settings) -> dict[str, Any]:
    """``{"tracks": N, "assets": {name: {"materialized", "missing", "failed"}}}``."""
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.orchestration.launch import materialized_tracks  # noqa: PLC0415
    from klio_assets.orchestration.partitions import ordered_keys  # noqa: PLC0415

    instance = _instance()
    catalog = get_catalog(settings.catalog_url)
    registered = set(ordered_keys(instance))
    out: dict[str, Any] = {"tracks": len(registered), "assets": {}}
    for name in _planned(settings):
        failed = {t: r for t, r in catalog.failures(name).items() if t in registered}
        materialized = (materialized_tracks(instance, name) & registered) - set(failed)
        out["assets"][name] = {
            "materialized": len(materialized),
            "missing": len(registered) - len(materialized) - len(failed),
            "failed": failed,
        }
    return out


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Per analysis: how many tracks are materialized, missing, failed (with reasons)."""
    state = collect_status(_settings())
    if as_json:
        click.echo(json.dumps(state, sort_keys=True))
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    table = Table(title=f"{state['tracks']} tracks")
    for column in ("analysis", "materialized", "missing", "failed"):
        table.add_column(column, justify="left" if column == "analysis" else "right")
    for name, counts in state["assets"].items():
        table.add_row(
            name, str(counts["materialized"]), str(counts["missing"]), str(len(counts["failed"]))
        )
    console.print(table)
    for name, counts in state["assets"].items():
        for track_id, reason in list(counts["failed"].items())[:20]:
            console.print(f"[red]failed[/red] {name} {track_id}: {reason}", highlight=False)


def collect_show(settings: Settings, asset: str, track_id: str | None) -> dict[str, Any]:
    """The latest metadata of ``asset`` (for ``track_id``, or unpartitioned)."""
    import dagster as dg  # noqa: PLC0415

    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.catalog.trackids import validate_track_id  # noqa: PLC0415

    planned = _planned(settings)
    tables = _catalog_tables(list(planned))
    if asset not in planned and asset not in tables:
        raise KlioAssetsError(f"unknown asset {asset!r}; known: {', '.join([*planned, *tables])}")
    if asset in tables and track_id is not None:
        raise KlioAssetsError(f"{asset} is a catalog-level table: it has no per-track value")
    instance = _instance()
    if track_id is not None:
        validate_track_id(track_id)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[track_id] if track_id else None
        ),
        limit=1,
    ).records
    out: dict[str, Any] = {"asset": asset}
    if track_id is not None:
        out["track_id"] = track_id
        failure = get_catalog(settings.catalog_url).failures(asset, [track_id]).get(track_id)
    else:
        failure = None
    if records:
        record = records[0]
        materialization = record.asset_materialization
        assert materialization is not None
        out.update({k: v.value for k, v in materialization.metadata.items()})
        out["run_id"] = record.run_id
        out["materialized_at"] = record.timestamp
    if failure is not None:
        out["status"] = "failed"
        out["reason"] = failure
    elif not records:
        out["status"] = "missing"
    return out


@main.command()
@click.argument("asset")
@click.argument("track_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(asset: str, track_id: str | None, as_json: bool) -> None:
    """The latest metadata of ASSET for TRACK_ID: uri, status, code_version..."""
    try:
        info = collect_show(_settings(), asset, track_id)
    except KlioAssetsError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")
    if info.get("status") in ("missing", "failed"):
        sys.exit(1)


@main.command()
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
    from klio_assets.analyses import load_analyses  # noqa: PLC0415
    from klio_assets.profiling import decode_limits, profile_analysis, resolve_targets  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    if not tracks and not files:
        _fail("give registered tracks (--tracks ID) or local audio files (--file PATH)")
    if no_profile and output:
        _fail("--output writes the cProfile pass, which --no-profile skips")
    try:
        settings = Settings.from_env()  # no Dagster: nothing here touches the instance
        os.environ.setdefault("KLIO_ASSETS_HOME", settings.home)  # the numba cache of `run`
        analyses = load_analyses(settings.analysis_modules)
        planned = plan_analyses(analyses, settings.params)
        if asset not in planned:
            tables = _catalog_tables(list(planned))
            if asset in tables:
                _fail(
                    f"{asset} is a catalog-level table, not a per-track analysis; profile one of: {', '.join(planned)}"
                )
            _fail(f"unknown asset {asset!r}; known: {', '.join(planned)}")
        targets = resolve_targets(settings, tracks, files)
        console = _console(as_json)
        report = profile_analysis(
            asset,
            targets,
            planned=planned,
            graph={a.name: a for a in analyses},
            limits=decode_limits(settings),
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
        _fail(str(exc))
    data = report.to_json()
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        _print_profile(data)
    sys.exit(1 if report.failed else 0)


def _console(quiet: bool) -> Any:
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=True, quiet=quiet)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_profile(data: dict[str, Any]) -> None:
    """The human form of ``klio-assets profile``."""
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    out = Console()
    where = f"kept in {data['storage_root']}" if data["kept"] else "deleted"
    out.print(
        f"[bold]{data['asset']}[/bold] v{data['version']} on {len(data['tracks'])} track(s), in this process "
        f"(temporary outputs {where})",
        highlight=False,
    )
    if data["upstream"]:
        out.print(
            f"upstream computed first, per track (column 'up s'): {', '.join(data['upstream'])}",
            highlight=False,
        )
    warm = data["warmup"]
    if warm:
        out.print(
            f"warm-up (imports, numba; not in the figures below): {warm['wall_s']:.2f} s, {warm['cpu_s']:.2f} CPU-s"
            + (
                f" [red]failed[/red]: {escape(warm['reason'])}"
                if warm["status"] != "computed"
                else ""
            ),
            highlight=False,
        )
    else:
        out.print("no warm-up: the first track includes first-use costs (imports, numba)")
    runs = f"median of {data['repeat']} runs, " if data["repeat"] > 1 else ""
    table = Table(
        title=f"per track ({runs}peak memory: {data['memory_method']})", box=box.SIMPLE_HEAD
    )
    for column in (
        "track",
        "audio s",
        "wall s",
        "CPU s",
        "x RT",
        "peak MB",
        "fn s",
        "fn CPU",
        "up s",
    ):
        table.add_column(column, justify="left" if column == "track" else "right")
    for track_id, r in data["tracks"].items():
        upstream = (
            _seconds(sum(u["wall_s"] for u in r["upstream"].values())) if r["upstream"] else "-"
        )
        if r["status"] != "computed":
            table.add_row(track_id, "[red]failed[/red]", *([""] * 6), upstream)
            continue
        table.add_row(
            track_id,
            f"{r['audio_s']:.1f}" if r["audio_s"] is not None else "-",
            _seconds(r["wall_s"]),
            _seconds(r["cpu_s"]),
            f"{r['x_realtime']:.0f}" if r["x_realtime"] else "-",
            f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "-",
            _seconds(r["function_wall_s"]),
            _seconds(r["function_cpu_s"]),
            upstream,
        )
    totals = data["totals"]
    out.print(table)
    out.print(
        "fn: inside the analysis function (decoding and IO excluded); the rest is the framework's",
        style="dim",
    )
    if totals["computed"]:
        out.print(
            f"{totals['computed']} computed: {totals['audio_s']:.1f} s of audio in {totals['wall_s']:.2f} s "
            f"({totals['x_realtime']}x realtime), {totals['cpu_s']:.2f} CPU-s ({totals['x_realtime_cpu']}x per CPU)",
            highlight=False,
        )
    for track_id, r in data["tracks"].items():
        if r["status"] != "computed":
            out.print(f"[red]failed[/red] {track_id}: {escape(r['reason'])}", highlight=False)
    if data["profile"]:
        p = data["profile"]
        table = Table(
            title=f"{p['function']}: {p['function_s']:.3f} s over {p['tracks']} track(s); "
            f"top {len(p['functions'])} by cumulative time (cProfile, wall)",
            box=box.SIMPLE_HEAD,
        )
        for column in ("calls", "own s", "cum s", "%"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("function", overflow="fold")
        for f in p["functions"]:
            share = 100.0 * f["cumulative_s"] / p["function_s"] if p["function_s"] else 0.0
            calls = (
                str(f["calls"])
                if f["calls"] == f["primitive_calls"]
                else f"{f['calls']}/{f['primitive_calls']}"
            )
            place = (
                f["function"]
                if f["file"] == "~"
                else f"{f['function']} {os.path.basename(f['file'])}:{f['line']}"
            )
            table.add_row(
                calls, f"{f['own_s']:.4f}", f"{f['cumulative_s']:.4f}", f"{share:.0f}", Text(place)
            )
        out.print(table)
    if data["output"]:
        out.print(
            f"pstats written to {data['output']} (snakeviz {data['output']})", highlight=False
        )
    if data["lines"]:
        for f in data["lines"]["functions"]:
            table = Table(
                title=f"{f['function']} ({escape(_short_path(f['file']))}:{f['line']}): {f['total_s']:.4f} s "
                f"(line_profiler, {data['lines']['tracks']} track(s))",
                box=box.SIMPLE_HEAD,
            )
            for column in ("line", "hits", "time s", "%"):
                table.add_column(column, justify="right", no_wrap=True)
            table.add_column(
                "code", no_wrap=True, overflow="ellipsis", max_width=max(20, out.width - 36)
            )
            for line in f["lines"]:
                table.add_row(
                    str(line["line"]),
                    str(line["hits"]),
                    f"{line['time_s']:.4f}",
                    f"{line['percent']:.1f}",
                    Text(line["code"]),
                )
            out.print(table)


def _short_path(path: str) -> str:
    """A source path relative to the working folder, or to its site-packages."""
    marker = f"site-packages{os.sep}"
    if marker in path:
        return path.split(marker, 1)[1]
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


@main.command()
@click.argument("mode", type=click.Choice(["landing", "propagation", "backfill"]))
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
    """What the daemon's automation does: the landing and propagation sensors, the catalog backfill.

    --dry-run shows what MODE would do now (from the sensors' stored cursors); without it,
    ``backfill`` launches the schedule's runs now, in this process. The sensors run in the
    daemon (klio-assets dev, KLIO_ASSETS_AUTOMATION=running).
    """
    settings = _settings()
    from klio_assets.analyses import load_analyses  # noqa: PLC0415
    from klio_assets.automation.preview import preview  # noqa: PLC0415
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415

    if not dry_run and mode != "backfill":
        _fail(
            f"the {mode} sensor runs in the daemon ({_self_command()} dev); --dry-run shows what it would do"
        )
    instance = _instance()
    catalog = get_catalog(settings.catalog_url)
    analyses = load_analyses(settings.analysis_modules)
    try:
        if dry_run:
            plan = preview(mode, instance, catalog, settings, analyses, force=force)
        else:
            plan = _backfill_now(settings, instance, catalog, analyses, force=force)
    except KlioAssetsError as exc:
        _fail(str(exc))
    failed = any(not r["success"] for r in plan.get("runs", []))
    if as_json:
        click.echo(json.dumps(plan, sort_keys=True, default=str))
        sys.exit(1 if failed else 0)
    click.echo(f"{mode}{' (dry run: nothing changed)' if dry_run else ''}")
    for key in ("registers", "reasons"):
        if key in plan:
            click.echo(f"  {key}: {json.dumps(plan[key], default=str)[:2000]}")
    for request in plan["requests"]:
        click.echo(
            f"  run {request['start']}..{request['end']} ({request['tracks']} tracks): "
            + ", ".join(
                f"{n} compute {request['would_compute'][n]} skip {request['would_skip'][n]}"
                for n in request["selected"]
            )
        )
    for run in plan.get("runs", []):
        click.echo(
            f"  launched {run['run_id']}: {'ok' if run['success'] else 'failed'} {run['assets'] or run['error']}"
        )
    if not plan["requests"]:
        click.echo("  nothing to request")
    sys.exit(1 if failed else 0)


def _backfill_now(
    settings: Settings, instance: Any, catalog: Any, analyses: Any, *, force: bool
) -> dict[str, Any]:
    """The backfill schedule's plan for a tick now, launched in this process (one run per range)."""
    import datetime  # noqa: PLC0415

    from klio_assets.automation.backfill import STATE_KEY, plan_backfill  # noqa: PLC0415
    from klio_assets.automation.preview import automation_selection  # noqa: PLC0415
    from klio_assets.orchestration import launch  # noqa: PLC0415
    from klio_assets.worker.plan import plan_analyses  # noqa: PLC0415

    storage = _storage(settings)
    plan = plan_backfill(
        instance,
        catalog,
        storage,
        planned=plan_analyses(analyses, settings.params),
        selected=automation_selection(settings, analyses),
        batch_size=settings.batch_size,
        max_runs=settings.backfill_max_runs,
        tick=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    out: dict[str, Any] = {
        "mode": "backfill",
        "dry_run": False,
        "force": force,
        "reasons": plan.reasons,
        "deferred_runs": plan.deferred_runs,
        "requests": [],
        "runs": [],
    }
    for run in plan.runs:
        outcome = launch.execute_range(
            instance, selected=run.selected, track_ids=run.track_ids, force=force, storage=storage
        )
        counts = (outcome.summary or {}).get("assets", {})
        out["requests"].append(
            {
                "selected": run.selected,
                "start": run.track_ids[0],
                "end": run.track_ids[-1],
                "tracks": len(run.track_ids),
                "would_compute": {n: counts.get(n, {}).get("computed", 0) for n in run.selected},
                "would_skip": {n: counts.get(n, {}).get("skipped", 0) for n in run.selected},
            }
        )
        out["runs"].append(
            {
                "run_id": outcome.run_id,
                "success": outcome.success,
                "assets": counts or None,
                "error": outcome.error,
            }
        )
    catalog.set_state(STATE_KEY, plan.state)
    return out


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(dagster_args: Sequence[str]) -> None:
    """Start ``dagster dev`` on this deployment's settings (UI on http://127.0.0.1:3000)."""
    settings = _settings()
    workspace = os.path.abspath("workspace.yaml")
    if not os.path.exists(workspace):
        workspace = os.path.join(settings.home, "workspace.yaml")
        with open(workspace, "w") as fh:
            fh.write(
                "load_from:\n  - python_module:\n      module_name: klio_assets.definitions\n"
                "      attribute: defs\n      location_name: klio_assets\n"
            )
    args = [sys.executable, "-m", "dagster", "dev", "-w", workspace, *dagster_args]
    click.echo(
        f"DAGSTER_HOME={settings.home} dagster dev -w {workspace} {' '.join(dagster_args)}",
        err=True,
    )
    os.execv(args[0], args)  # same interpreter: works without an activated virtualenv


@main.command()
@click.option("--tracks", "n_tracks", default=8, show_default=True, help="Number of demo tracks.")
def demo(n_tracks: int) -> None:
    """Make a small catalog of generated music, register it and run every analysis on it."""
    settings = _settings()
    from klio_assets.cli.demo import make_demo_audio  # noqa: PLC0415

    folder = os.path.join(settings.home, "demo-audio")
    files = make_demo_audio(folder, n_tracks=n_tracks)
    click.echo(f"demo audio: {len(files)} files in {folder}")
    ctx = click.get_current_context()
    try:
        ctx.invoke(add, paths=[folder], manifest=None, allow_roots=(), follow_symlinks=False)
    except SystemExit as exc:
        if exc.code:
            raise
    try:
        ctx.invoke(run, assets=(), tracks=(), force=False, dry_run=False, as_json=False)
    except SystemExit as exc:
        if exc.code:
            raise
    ctx.invoke(status, as_json=False)
    click.echo(
        "\nOutputs are under " + settings.storage + ".\n"
        f"Open the Dagster UI on this instance with:  {_self_command()} dev   (then http://127.0.0.1:3000)"
    )


if __name__ == "__main__":
    main()
