"""The catalog: ``klio-assets add`` registers tracks, ``tracks`` lists them, ``remove`` forgets them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import click

from klio_assets.cli.common import fail, load_settings
from klio_assets.cli.text import shown
from klio_assets.errors import KlioAssetsError

if TYPE_CHECKING:
    from klio_assets.catalog.database import TrackCatalog

#: Tracks per catalog query when listing: one keyset-paginated page at a time, so listing a
#: million tracks holds one page in memory and each page costs the same.
PAGE = 1000


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
    """Register tracks: audio files, folders (searched recursively) or a CSV manifest.

    A track's ID is its file name without the extension (``My Song.mp3``: ``My-Song``); a
    file whose ID is taken by another file (``hello.wav`` and ``hello.opus``) gets its
    extension appended (``hello-opus``). A file named explicitly that is not audio is refused.
    """
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
        f"registered {_tracks(len(outcome.added), 'new track')} "
        f"({len(outcome.known)} already registered); catalog {settings.catalog_url}"
    )
    for what, reason in intake.refused:
        click.echo(f"  refused {shown(what)}: {shown(reason)}", err=True)
    if intake.refused:
        sys.exit(1)


def _tracks(count: int, noun: str = "track") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@click.command()
@click.option("--failed", is_flag=True, help="Only tracks with a failed analysis (and why).")
@click.option(
    "--missing",
    metavar="ANALYSIS",
    help="Only tracks without a current output of ANALYSIS (per the catalog's ledger).",
)
@click.option("--limit", type=click.IntRange(min=1), help="List at most this many.")
@click.option("--after", metavar="TRACK_ID", help="Start after this track (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tracks(
    failed: bool, missing: str | None, limit: int | None, after: str | None, as_json: bool
) -> None:
    """Registered tracks in registration order: ID and source (streamed, any number).

    With --limit, the last line on stderr says how to list the next page (--after ID).
    """
    settings = load_settings()
    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415

    try:
        catalog = get_catalog(settings.catalog_url)
        wanted = None
        if missing is not None:
            from klio_assets.orchestration.selection import planned_analyses  # noqa: PLC0415

            planned = planned_analyses(settings)
            if missing not in planned:
                fail(f"unknown analysis {missing!r}; known: {', '.join(planned)}")
            wanted = (missing, planned[missing].version)
        after_seq = 0
        if after is not None:
            seq = catalog.seq_of(after)
            if seq is None:
                fail(f"track {after!r} is not registered (--after takes a listed track ID)")
            after_seq = seq
    except KlioAssetsError as exc:
        fail(str(exc))
    rows = _listing(catalog, after_seq=after_seq, limit=limit, failed=failed, missing=wanted)
    try:
        last = _print_json(rows) if as_json else _print_text(rows)
    except BrokenPipeError:  # `klio-assets tracks | head`: the reader has seen enough
        sys.stderr.close()
        sys.exit(0)
    if limit is not None and last is not None and last[1]:
        click.echo(f"more: {_again(failed, missing, limit)} --after {shown(last[0])}", err=True)


def _listing(
    catalog: TrackCatalog,
    *,
    after_seq: int,
    limit: int | None,
    failed: bool,
    missing: tuple[str, str] | None,
) -> Iterator[tuple[str, str, float, dict[str, str] | None, bool]]:
    """``(track_id, uri, added_at, failures or None, more_after)`` page by page."""
    left = limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        # One row more than asked: whether another page follows, without a count.
        page = catalog.tracks_page(
            after_seq=after_seq, limit=size + 1, failed=failed, missing=missing
        )
        more = len(page) > size
        page = page[:size]
        if not page:
            return
        reasons = catalog.failures_of([r[1] for r in page]) if failed else {}
        for index, (_, track_id, uri, added_at) in enumerate(page):
            last = index == len(page) - 1
            yield (
                track_id,
                uri,
                added_at,
                reasons.get(track_id, {}) if failed else None,
                (more if last else True),
            )
        after_seq = page[-1][0]
        if left is not None:
            left -= len(page)
        if not more:
            return


def _print_text(
    rows: Iterator[tuple[str, str, float, dict[str, str] | None, bool]],
) -> tuple[str, bool] | None:
    last = None
    lines: list[str] = []
    for track_id, uri, _, reasons, more in rows:
        lines.append(f"{shown(track_id)}  {shown(uri)}")
        for reason, analyses in _grouped(reasons or {}).items():
            lines.append(f"    failed {', '.join(analyses)}: {shown(reason)}")
        last = (track_id, more)
        if len(lines) >= PAGE:
            click.echo("\n".join(lines))
            lines = []
    if lines:
        click.echo("\n".join(lines))
    return last


def _grouped(reasons: dict[str, str]) -> dict[str, list[str]]:
    """Reason to the analyses that failed with it (a broken file fails them all alike)."""
    grouped: dict[str, list[str]] = {}
    for analysis, reason in reasons.items():
        grouped.setdefault(reason, []).append(analysis)
    return grouped


def _print_json(
    rows: Iterator[tuple[str, str, float, dict[str, str] | None, bool]],
) -> tuple[str, bool] | None:
    """``{"tracks": [{"track_id", "uri", "added_at"[, "failed"]}...], "next_after": ID|null}``,
    written as it is read (a million tracks never sit in memory)."""
    out = sys.stdout
    out.write('{"tracks": [')
    last = None
    for track_id, uri, added_at, reasons, more in rows:
        item: dict[str, object] = {"track_id": track_id, "uri": uri, "added_at": added_at}
        if reasons is not None:
            item["failed"] = reasons
        out.write(("\n  " if last is None else ",\n  ") + json.dumps(item, sort_keys=True))
        last = (track_id, more)
    next_after = last[0] if last is not None and last[1] else None
    out.write(f'\n], "next_after": {json.dumps(next_after)}}}\n')
    out.flush()
    return None  # the JSON says where the next page starts


def _again(failed: bool, missing: str | None, limit: int) -> str:
    words = ["klio-assets tracks", *(["--failed"] if failed else [])]
    if missing:
        words.append(f"--missing {missing}")
    return " ".join([*words, f"--limit {limit}"])


@click.command()
@click.argument("track_ids", nargs=-1, required=True)
@click.option(
    "--outputs",
    is_flag=True,
    help="Also delete the tracks' stored outputs (of the current analysis versions).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def remove(track_ids: Sequence[str], outputs: bool, as_json: bool) -> None:
    """Forget tracks: the catalog, Dagster's tracks partitions, the ledger and failures.

    Their outputs stay in storage unless --outputs. Exits 1 if an ID is not registered.
    """
    settings = load_settings()
    # Imports Dagster (~1.2 s).
    import dagster as dg  # noqa: PLC0415

    from klio_assets.catalog.database import get_catalog  # noqa: PLC0415
    from klio_assets.orchestration.registration import remove_tracks  # noqa: PLC0415
    from klio_assets.orchestration.selection import planned_analyses  # noqa: PLC0415
    from klio_assets.worker.storage import Storage  # noqa: PLC0415

    try:
        removal = remove_tracks(
            dg.DagsterInstance.get(),
            get_catalog(settings.catalog_url),
            track_ids,
            storage=Storage(settings.storage) if outputs else None,
            analyses=planned_analyses(settings) if outputs else None,
        )
    except KlioAssetsError as exc:
        fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "removed": removal.removed,
                    "not_registered": removal.unknown,
                    "outputs_deleted": removal.outputs,
                },
                sort_keys=True,
            )
        )
    else:
        deleted = sum(removal.outputs.values())
        files = f"; {deleted} stored file{'' if deleted == 1 else 's'} deleted" if outputs else ""
        click.echo(f"removed {_tracks(len(removal.removed))}{files}")
        for track_id in removal.unknown:
            click.echo(f"  {shown(track_id)}: not registered", err=True)
    if removal.unknown:
        sys.exit(1)
