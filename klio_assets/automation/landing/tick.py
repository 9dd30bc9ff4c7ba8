"""One landing tick: take what landed (folder or object store, and Pub/Sub), register it,
and say which contiguous ranges to run.

A tick registers (catalog, then partitions) before it returns; the daemon then submits the
runs (whose run keys make a retried tick request nothing twice) and stores the cursor. A tick
that fails after registering is re-evaluated from the old cursor: registration is idempotent
(the tracks come back as already known, with the same URI) and their runs are requested again.

Partitions are added by the tick itself (``register_tracks``: one batched insert), not
returned as ``dg.AddDynamicPartitionsRequest``: the sensor daemon checks such a request with
one ``has_dynamic_partition`` query per key (``dagster/_daemon/sensor.py``,
``_handle_dynamic_partitions_requests``), 5-20 ms each, i.e. 5-20 s for a 1,000-track tick;
and the catalog row (the track's URI) must exist before the run starts anyway.

A tick takes at most ``max_tracks`` files (and, separately, messages). A first tick over a
folder of a million files would otherwise register them all, and request their runs, in one
evaluation: past the daemon's tick timeout it fails and starts over, forever. Capped, the
backlog drains over the next ticks, one batch each.

Pub/Sub messages are acknowledged only after their tracks are registered, so a crash loses
nothing (Pub/Sub redelivers; a redelivered track is known and its run skips existing outputs).
Messages that can never succeed (refused by the parser, an unknown track ID, an ID taken by
another URI) are acknowledged too, and each is logged with the reason: left unacknowledged
they would come back forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.automation.landing.cursor import MAX_CURSOR_FOLDERS, LandingCursor, parse_cursor
from klio_assets.automation.landing.listing import Landed, Listing, scan_landing
from klio_assets.automation.landing.pubsub import (
    Message,
    Subscriber,
    acknowledge,
    pull_messages,
    release,
    resolve_subscriber,
)
from klio_assets.automation.runs import run_requests
from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.trackids import alternate_track_id
from klio_assets.orchestration.ranges import partition_ranges
from klio_assets.orchestration.registration import register_tracks


@dataclass
class LandingTick:
    """What one landing tick found, registered and requests.

    Attributes
    ----------
    files : list of Landed
        Files taken this tick (at most the cap), in cursor order.
    messages : list of Message
        Pub/Sub messages pulled.
    new : list of str
        Track IDs new to the catalog.
    known : list of str
        Track IDs already registered with the same URI (requested again: their runs skip
        what exists; this is what makes a retried tick lose nothing).
    refused : list of (str, str)
        ``(what, reason)`` of files and messages that could not be registered.
    ranges : list of list of str
        Contiguous partition ranges requested, one run each.
    cursor : str
        The cursor after this tick.
    backlog : bool
        The cap was reached: more files wait for the next ticks.
    """

    files: list[Landed] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    ranges: list[list[str]] = field(default_factory=list)
    cursor: str = ""
    backlog: bool = False

    def run_requests(self, selected: Sequence[str]) -> list[dg.RunRequest]:
        """One run per range, every analysis of ``selected`` in it."""
        return run_requests(self.ranges, selected=selected, trigger="landing", key_prefix="landing")


def landing_tick(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    *,
    cursor: str | None,
    location: str | None,
    max_tracks: int,
    batch_size: int,
    settle_s: float = 2.0,
    subscription: str | None = None,
    subscriber: Subscriber | Callable[[], Subscriber] | None = None,
    roots: Sequence[str] | None = None,
    dry_run: bool = False,
    now: float | None = None,
    window: int | None = None,
) -> LandingTick:
    """Take what landed since ``cursor``: register it and say which ranges to run.

    Parameters
    ----------
    cursor : str or None
        The previous tick's cursor (None: from the beginning).
    location : str or None
        Landing folder or ``gs://`` prefix (None: none watched).
    max_tracks : int
        Most files (and, separately, messages) taken this tick (see the module docstring).
    batch_size : int
        Most tracks per run.
    subscription, subscriber
        Pub/Sub subscription path, and a subscriber (or a callable returning one).
    roots : sequence of str, optional
        Folders messages may name files in (default: the landing folder, if local).
    dry_run : bool
        Find and report only: register nothing, acknowledge nothing (pulled messages are
        released for redelivery at once), keep the cursor.
    window : int, optional
        Most tracks in Dagster's window: new tracks beyond it are registered in the catalog
        only (the catalog ranges run them); None: no cap.

    Raises
    ------
    KlioAssetsError
        The location cannot be listed, the catalog cannot be written: the tick fails, the
        cursor stays, and nothing is acknowledged.
    """
    tick = LandingTick(cursor=cursor or "")
    state = parse_cursor(cursor)
    listing = _scan(tick, location, state, now=now, settle_s=settle_s, max_tracks=max_tracks)
    inbox = _Inbox.pull(tick, subscription, subscriber, roots, location, max_tracks)
    tracks = [(f.track_id, f.uri) for f in tick.files] + _message_tracks(catalog, tick)
    if dry_run:
        _preview(instance, catalog, tick, tracks, batch_size)
        inbox.release(tick)
        return tick
    if tracks:
        # same-stem files (hello.wav, hello.opus) get distinct IDs, as with `klio-assets add`
        alternates = {f.uri: (f.track_id, alternate_track_id(f.uri)) for f in tick.files}
        outcome = register_tracks(
            instance,
            catalog,
            _unique(tracks, tick.refused, alternates),
            alternates=alternates,
            window=window,
        )
        tick.new, tick.known = outcome.added, outcome.known
        tick.refused.extend((track_id, reason) for track_id, reason in outcome.conflicts.items())
    inbox.acknowledge(tick)  # registered (or refused for good) above: Pub/Sub may forget them
    tick.ranges = partition_ranges(instance, [*tick.new, *tick.known], batch_size)
    if listing is not None:
        tick.cursor = _next_cursor(tick, listing, state).dumps()
    return tick


def _scan(
    tick: LandingTick,
    location: str | None,
    state: LandingCursor,
    *,
    now: float | None,
    settle_s: float,
    max_tracks: int,
) -> Listing | None:
    """List the landing location past the cursor into ``tick.files`` (None: no location)."""
    if not location:
        return None
    listing = scan_landing(
        location,
        now=now,
        settle_s=settle_s,
        after=state.after,
        unchanged_before=state.listed,
        known_folders=state.folders,
        max_files=max_tracks,
    )
    tick.files = listing.files
    tick.backlog = listing.pending > max_tracks
    return listing


@dataclass
class _Inbox:
    """The subscription a tick pulled from (none: no Pub/Sub)."""

    client: Subscriber | None = None
    subscription: str = ""

    @classmethod
    def pull(
        cls,
        tick: LandingTick,
        subscription: str | None,
        subscriber: Subscriber | Callable[[], Subscriber] | None,
        roots: Sequence[str] | None,
        location: str | None,
        max_tracks: int,
    ) -> _Inbox:
        """Pull up to ``max_tracks`` messages into ``tick.messages``."""
        if not subscription:
            return cls()
        client = resolve_subscriber(subscriber)
        if roots is None:
            roots = [location] if location and "://" not in location else []
        tick.messages = pull_messages(client, subscription, max_tracks, roots=roots)
        return cls(client, subscription)

    def acknowledge(self, tick: LandingTick) -> None:
        if self.client is not None and tick.messages:
            acknowledge(self.client, self.subscription, tick.messages)

    def release(self, tick: LandingTick) -> None:
        if self.client is not None and tick.messages:
            release(self.client, self.subscription, tick.messages)


def _message_tracks(catalog: TrackCatalog, tick: LandingTick) -> list[tuple[str, str]]:
    """The ``(track_id, uri)`` the messages bring; refusals go to ``tick.refused``."""
    id_only = [m.track_id for m in tick.messages if m.error is None and m.uri is None]
    known_uris = catalog.resolve([t for t in id_only if t]) if id_only else {}
    tracks: list[tuple[str, str]] = []
    for message in tick.messages:
        if message.error is None and message.track_id is not None:
            uri = message.uri or known_uris.get(message.track_id)
            if uri is not None:
                tracks.append((message.track_id, uri))
                continue
            message.error = (
                f"track {message.track_id!r} is not registered and the message gives no URI"
            )
        tick.refused.append((message.name, message.error or "no track"))
    return tracks


def _preview(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    tick: LandingTick,
    tracks: Sequence[tuple[str, str]],
    batch_size: int,
) -> None:
    """What registering ``tracks`` would do, written into ``tick``; nothing changes."""
    registered = catalog.resolve([t for t, _ in tracks])
    for track_id, uri in tracks:
        if track_id not in registered:
            tick.new.append(track_id)
        elif registered[track_id] == uri:
            tick.known.append(track_id)
        else:
            tick.refused.append(
                (uri, f"track ID {track_id!r} is already taken by {registered[track_id]}")
            )
    tick.ranges = partition_ranges(instance, tick.known, batch_size)


def _next_cursor(tick: LandingTick, listing: Listing, state: LandingCursor) -> LandingCursor:
    last = tick.files[-1].key if tick.files else state.after
    # Folders may be skipped next time only if this listing left nothing behind.
    complete = (
        not tick.backlog
        and listing.unsettled == 0
        and listing.folders is not None
        and len(listing.folders) <= MAX_CURSOR_FOLDERS
    )
    if complete and listing.folders is not None:
        return LandingCursor(last, listing.limit_ns, sorted(listing.folders))
    return LandingCursor(last, None, None)


def _unique(
    tracks: Sequence[tuple[str, str]],
    refused: list[tuple[str, str]],
    alternates: Mapping[str, tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """Drop exact repeats; two URIs landing under one track ID: the first wins, the other
    takes its alternate ID if it has a free one (``alternates``), or is refused."""
    first: dict[str, str] = {}
    out = []
    for track_id, uri in tracks:
        if first.get(track_id, uri) != uri and alternates and uri in alternates:
            track_id = next((c for c in alternates[uri] if first.get(c, uri) == uri), track_id)
        if track_id not in first:
            first[track_id] = uri
            out.append((track_id, uri))
        elif first[track_id] != uri:
            refused.append((uri, f"track ID {track_id!r} is already taken by {first[track_id]}"))
    return out
