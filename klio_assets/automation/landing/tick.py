"""New tracks arriving: a landing folder (or ``gs://`` prefix) and a Pub/Sub subscription.

The landing sensor (:mod:`klio_assets.sensors`) calls :func:`landing_tick` once per tick. It
registers what arrived since the cursor, in one batch, and asks for one run per contiguous
range of the new tracks (one Beam job for the whole batch, every selected analysis).

Exactly once across restarts
----------------------------
Files are taken in order of ``(ctime, uri)`` and the cursor is the last pair taken. ``ctime``
(not ``mtime``) because a move or ``cp -p`` keeps the mtime of the original, so a file moved
into the folder while the sensor is down could sort before the cursor; ``ctime`` is set by
the kernel on the rename and cannot be set by users. Only files at least ``settle_s`` old
are taken: a file that appears after a listing has a ctime later than that listing, so it
can never sort at or below a cursor taken from it (and half-written files are left alone).
On ``gs://`` the object's creation time plays that role (an overwrite is a new object).

A tick registers (catalog, then partitions) before it returns; the daemon then submits the
runs (whose run keys make a retried tick request nothing twice) and stores the cursor. A tick
that fails after registering is re-evaluated from the old cursor: registration is idempotent
(the tracks come back as already known, with the same URI) and their runs are requested again.

Partitions are added by the tick itself (``register_tracks``: one batched insert), not
returned as ``dg.AddDynamicPartitionsRequest``: the sensor daemon checks such a request with
one ``has_dynamic_partition`` query per key (``dagster/_daemon/sensor.py``,
``_handle_dynamic_partitions_requests``), 5-20 ms each, i.e. 5-20 s for a 1,000-track tick;
and the catalog row (the track's URI) must exist before the run starts anyway.

Pub/Sub messages are acknowledged only after their tracks are registered, so a crash loses
nothing (Pub/Sub redelivers; a redelivered track is known and its run skips existing outputs).
Messages that can never succeed (an unknown track ID, an ID taken by another URI, not a
track) are acknowledged too, and each is logged with the reason: left unacknowledged they
would come back forever.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.discovery import AUDIO_EXTENSIONS
from klio_assets.catalog.trackids import track_id_from_name, validate_track_id
from klio_assets.errors import ParameterError, StorageError, TrackIdError
from klio_assets.orchestration.ranges import partition_ranges, range_tags
from klio_assets.orchestration.registration import register_tracks

#: File timestamps come from the kernel's coarse clock, which lags ``time.time()`` by up to
#: one timer tick (1-10 ms; measured 3.8 ms here): a file changed just after a listing can
#: carry a ctime just before it. Every listing's limit is moved back by this margin on top
#: of the settle time. (Network filesystems stamp with the server's clock: there the settle
#: time must cover the skew too.)
CLOCK_MARGIN_S = 0.1
#: Tag naming what requested a run (``landing``, ``propagation``, ``backfill``).
TRIGGER_TAG = "klio/trigger"
#: Messages pulled per Pub/Sub request (the service's maximum is 1000).
PULL_BATCH = 1000

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Landed:
    """One file found in the landing location.

    Attributes
    ----------
    ctime_ns : int
        Change time (local) or creation time (object store), nanoseconds since the epoch.
    uri : str
        Absolute path or object URI.
    track_id : str
        Derived from the file name (:func:`klio_assets.catalog.trackids.track_id_from_name`).
    """

    ctime_ns: int
    uri: str
    track_id: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.ctime_ns, self.uri)


def _is_audio(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


@dataclass
class Listing:
    """One listing of the landing location.

    Attributes
    ----------
    files : list of Landed
        Files past the cursor and settled, in ``(ctime, uri)`` order.
    unsettled : int
        Files younger than the settle time (taken at a later tick).
    limit_ns : int
        The ctime limit of this listing (``now - settle``).
    folders : list of str or None
        Every folder listed, relative to the landing folder (None for object stores).
    pending : int
        Files past the cursor and settled, including those beyond ``max_files``.
    """

    files: list[Landed]
    unsettled: int
    limit_ns: int
    folders: list[str] | None
    pending: int = 0


def scan_landing(
    location: str,
    *,
    now: float | None = None,
    settle_s: float = 2.0,
    after: tuple[int, str] | None = None,
    unchanged_before: int | None = None,
    known_folders: Sequence[str] | None = None,
    max_files: int | None = None,
) -> Listing:
    """List ``location`` for files past ``after`` that are at least ``settle_s`` old (the
    first ``max_files`` of them in cursor order, if given: a backlog of a million files costs
    its listing, not a track ID and an object per file every tick).

    A landing folder keeps every file it ever received, so an idle tick would ``lstat`` them
    all (about 1 s per 100k files here). A folder's ctime changes whenever an entry is added,
    removed or renamed in it; so a folder listed last time (``known_folders``), when nothing
    was left unsettled or over the cap, whose ctime is still before that listing's limit
    (``unchanged_before``) holds nothing new and is not listed again.

    Raises
    ------
    StorageError
        The location cannot be listed (it does not exist, permissions, network).
    """
    now = time.time() if now is None else now
    limit_ns = int((now - settle_s - CLOCK_MARGIN_S) * 1e9)
    folders: list[str] | None = None
    if "://" in location:
        found = [(f.ctime_ns, f.uri) for f in _list_remote(location)]
    else:
        found, folders = _list_folder(
            location, unchanged_before=unchanged_before, known_folders=known_folders
        )
    unsettled = sum(1 for k in found if k[0] > limit_ns)
    candidates = [k for k in found if k[0] <= limit_ns and (after is None or k > after)]
    if max_files is not None and max_files < len(candidates):
        taken = heapq.nsmallest(max_files, candidates)
    else:
        taken = sorted(candidates)
    files = [Landed(ctime, uri, track_id_from_name(uri.rsplit("/", 1)[-1])) for ctime, uri in taken]
    return Listing(files, unsettled, limit_ns, folders, pending=len(candidates))


def list_landing(
    location: str,
    *,
    now: float | None = None,
    settle_s: float = 2.0,
    after: tuple[int, str] | None = None,
) -> list[Landed]:
    """Audio files under ``location`` past ``after`` and settled, in ``(ctime, uri)`` order.

    Hidden files and folders (names starting with ``.``, the usual temporary names of
    writers) are ignored; so are symlinks that lead out of ``location``.
    """
    return scan_landing(location, now=now, settle_s=settle_s, after=after).files


def _list_folder(
    folder: str, *, unchanged_before: int | None = None, known_folders: Sequence[str] | None = None
) -> tuple[list[tuple[int, str]], list[str]]:
    if not os.path.isdir(folder):
        raise StorageError(
            f"landing folder {folder} does not exist (create it, or set KLIO_ASSETS_LANDING)"
        )
    folder = os.path.abspath(folder)
    root = os.path.realpath(folder)
    known = set(known_folders or ()) if unchanged_before is not None else set()
    children: dict[str, list[str]] = {}
    for rel in known:
        if rel != ".":
            children.setdefault(os.path.dirname(rel) or ".", []).append(rel)
    found: list[tuple[int, str]] = []
    listed: list[str] = []
    pending = ["."]
    extensions = AUDIO_EXTENSIONS
    while pending:
        rel = pending.pop()
        current = folder if rel == "." else os.path.join(folder, rel)
        listed.append(rel)
        try:
            if rel in known and os.lstat(current).st_ctime_ns < unchanged_before:
                pending.extend(children.get(rel, ()))  # unchanged: same entries as last time
                continue
            entries = list(os.scandir(current))
        except FileNotFoundError:
            listed.pop()
            continue  # a sub-folder removed while listing
        except OSError as exc:
            raise StorageError(f"cannot list landing folder {current}: {exc}") from exc
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(name if rel == "." else os.path.join(rel, name))
                    continue
                dot = name.rfind(".")
                if dot < 0 or name[dot:].lower() not in extensions:
                    continue
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not real.startswith(root + os.sep):
                        _log.warning(
                            "landing: ignoring %s, a symlink to %s outside %s",
                            entry.path,
                            real,
                            folder,
                        )
                        continue
                found.append((entry.stat(follow_symlinks=False).st_ctime_ns, entry.path))
            except FileNotFoundError:  # removed while listing: gone, nothing to take
                continue
    return found, listed


def _list_remote(prefix: str) -> list[Landed]:
    import fsspec  # noqa: PLC0415

    protocol = prefix.split("://", 1)[0]
    try:
        fs = fsspec.filesystem(protocol)
        entries = fs.find(prefix, detail=True)
    except (OSError, ValueError, ImportError) as exc:
        raise StorageError(f"cannot list landing prefix {prefix}: {exc}") from exc
    found = []
    for path, info in entries.items():
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not _is_audio(name):
            continue
        created = info.get("timeCreated") or info.get("LastModified") or info.get("mtime")
        if isinstance(created, str):
            created = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        elif isinstance(created, datetime):
            created = created.timestamp()
        if created is None:
            raise StorageError(
                f"{protocol}://{path}: the store gives no creation time to order files by"
            )
        found.append(
            Landed(int(float(created) * 1e9), f"{protocol}://{path}", track_id_from_name(name))
        )
    return found


class Subscriber(Protocol):
    """What the landing tick needs of ``google.cloud.pubsub_v1.SubscriberClient``."""

    def pull(self, *, request: dict[str, Any], timeout: float | None = None) -> Any: ...

    def acknowledge(self, *, request: dict[str, Any]) -> Any: ...

    def modify_ack_deadline(self, *, request: dict[str, Any]) -> Any: ...


def pubsub_subscriber() -> Subscriber:
    """A real Pub/Sub subscriber client (honours ``PUBSUB_EMULATOR_HOST``).

    Raises
    ------
    ParameterError
        ``google-cloud-pubsub`` is not installed.
    """
    try:
        from google.cloud import pubsub_v1  # noqa: PLC0415
    except ImportError as exc:
        raise ParameterError(
            "KLIO_ASSETS_LANDING_SUBSCRIPTION needs google-cloud-pubsub (pip install 'klio-assets[gcp]')"
        ) from exc
    return pubsub_v1.SubscriberClient()


@dataclass
class Message:
    """One pulled Pub/Sub message, parsed.

    Exactly one of ``uri`` (a new file), ``track_id`` (alone: an already catalogued track)
    and ``error`` is the point of the message.
    """

    ack_id: str
    track_id: str | None = None
    uri: str | None = None
    error: str | None = None


def parse_message(ack_id: str, data: bytes, attributes: dict[str, str]) -> Message:
    """Read a track from a message: a GCS notification, ``{"track_id", "uri"}``, a URI or an ID."""
    try:
        if "objectId" in attributes and "bucketId" in attributes:  # GCS Pub/Sub notification
            if attributes.get("eventType", "OBJECT_FINALIZE") != "OBJECT_FINALIZE":
                return Message(ack_id, error=f"not a new object: {attributes.get('eventType')}")
            name = attributes["objectId"].rsplit("/", 1)[-1]
            if not _is_audio(name):
                return Message(
                    ack_id,
                    error=f"gs://{attributes['bucketId']}/{attributes['objectId']} is not audio",
                )
            uri = f"gs://{attributes['bucketId']}/{attributes['objectId']}"
            return Message(ack_id, track_id=track_id_from_name(name), uri=uri)
        text = data.decode("utf-8").strip()
        if text.startswith("{"):
            body = json.loads(text)
            track_id = validate_track_id(
                body.get("track_id") or track_id_from_name(str(body["uri"]).rsplit("/", 1)[-1])
            )
            uri = body.get("uri")
            if uri is not None and not str(uri).startswith(("gs://", "s3://", "/")):
                return Message(
                    ack_id,
                    error=f"track {track_id!r}: URI {uri!r} is not gs://, s3:// or an absolute path",
                )
            return Message(ack_id, track_id=track_id, uri=uri)
        if text.startswith(("gs://", "s3://")):
            return Message(ack_id, track_id=track_id_from_name(text.rsplit("/", 1)[-1]), uri=text)
        return Message(ack_id, track_id=validate_track_id(text))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, TrackIdError) as exc:
        return Message(ack_id, error=f"not a track: {exc}")


def pull_messages(subscriber: Subscriber, subscription: str, max_messages: int) -> list[Message]:
    """Pull up to ``max_messages`` without waiting for more (an idle tick must stay short)."""
    out: list[Message] = []
    while len(out) < max_messages:
        response = subscriber.pull(
            request={
                "subscription": subscription,
                "max_messages": min(PULL_BATCH, max_messages - len(out)),
                "return_immediately": True,
            },
            timeout=30,
        )
        received = list(response.received_messages)
        if not received:
            break
        for r in received:
            out.append(parse_message(r.ack_id, bytes(r.message.data), dict(r.message.attributes)))
    return out


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


#: Most folders remembered in the cursor (a deeper tree is listed in full every tick).
MAX_CURSOR_FOLDERS = 1000


def read_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The ``(ctime_ns, uri)`` high-water mark stored in a landing cursor."""
    return _read_state(cursor)[0]


def _read_state(cursor: str | None) -> tuple[tuple[int, str] | None, int | None, list[str] | None]:
    if not cursor:
        return None, None, None
    try:
        state = json.loads(cursor)
        after = state.get("after")
        listed = state.get("listed")
        return (
            (int(after[0]), str(after[1])) if after else None,
            int(listed) if listed is not None else None,
            [str(f) for f in state["folders"]] if state.get("folders") is not None else None,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ParameterError(f"landing sensor cursor {cursor!r} cannot be read: {exc}") from exc


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
    dry_run: bool = False,
    now: float | None = None,
) -> LandingTick:
    """Take what landed since ``cursor``: register it and say which ranges to run.

    Parameters
    ----------
    cursor : str or None
        The previous tick's cursor (None: from the beginning).
    location : str or None
        Landing folder or ``gs://`` prefix (None: none watched).
    max_tracks : int
        Most files (and, separately, messages) taken this tick. A first tick over a folder of
        a million files would otherwise register them all, and request their runs, in one
        evaluation: past the daemon's tick timeout it fails and starts over, forever.
        Capped, the backlog drains over the next ticks, one batch each.
    batch_size : int
        Most tracks per run.
    subscription, subscriber
        Pub/Sub subscription path, and a subscriber (or a callable returning one).
    dry_run : bool
        Find and report only: register nothing, acknowledge nothing (pulled messages are
        released for redelivery at once), keep the cursor.

    Raises
    ------
    KlioAssetsError
        The location cannot be listed, the catalog cannot be written: the tick fails, the
        cursor stays, and nothing is acknowledged.
    """
    tick = LandingTick(cursor=cursor or "")
    after, listed, folders = _read_state(cursor)
    listing = None
    if location:
        listing = scan_landing(
            location,
            now=now,
            settle_s=settle_s,
            after=after,
            unchanged_before=listed,
            known_folders=folders,
            max_files=max_tracks,
        )
        tick.files = listing.files
        tick.backlog = listing.pending > max_tracks
    client: Subscriber | None = None
    if subscription:
        client = (
            subscriber() if callable(subscriber) and not hasattr(subscriber, "pull") else subscriber
        )
        if client is None:
            client = pubsub_subscriber()
        tick.messages = pull_messages(client, subscription, max_tracks)

    tracks: list[tuple[str, str]] = [(f.track_id, f.uri) for f in tick.files]
    id_only = [m for m in tick.messages if m.error is None and m.uri is None]
    known_uris = catalog.resolve([m.track_id for m in id_only]) if id_only else {}
    for message in tick.messages:
        if message.error is not None:
            tick.refused.append((f"message {message.ack_id}", message.error))
        elif message.uri is not None:
            tracks.append((message.track_id, message.uri))
        elif message.track_id in known_uris:
            tracks.append((message.track_id, known_uris[message.track_id]))
        else:
            message.error = (
                f"track {message.track_id!r} is not registered and the message gives no URI"
            )
            tick.refused.append((f"message {message.ack_id}", message.error))

    if dry_run:
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
        if client is not None and tick.messages:
            client.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in tick.messages],
                    "ack_deadline_seconds": 0,
                }
            )
        tick.ranges = partition_ranges(instance, tick.known, batch_size)
        return tick

    if tracks:
        outcome = register_tracks(instance, catalog, _unique(tracks, tick.refused))
        tick.new, tick.known = outcome.added, outcome.known
        tick.refused.extend((track_id, reason) for track_id, reason in outcome.conflicts.items())
    if client is not None and tick.messages:
        # Registered (or refused for good) above: only now may Pub/Sub forget them.
        ack_ids = [m.ack_id for m in tick.messages]
        for start in range(0, len(ack_ids), PULL_BATCH):
            client.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": ack_ids[start : start + PULL_BATCH],
                }
            )
    tick.ranges = partition_ranges(instance, [*tick.new, *tick.known], batch_size)
    if listing is not None:
        last = (
            [tick.files[-1].ctime_ns, tick.files[-1].uri]
            if tick.files
            else (list(after) if after else None)
        )
        # Folders may be skipped next time only if this listing left nothing behind.
        complete = not tick.backlog and listing.unsettled == 0 and listing.folders is not None
        complete = complete and len(listing.folders) <= MAX_CURSOR_FOLDERS
        tick.cursor = json.dumps(
            {
                "after": last,
                "listed": listing.limit_ns if complete else None,
                "folders": sorted(listing.folders) if complete else None,
            }
        )
    return tick


def _unique(
    tracks: Sequence[tuple[str, str]], refused: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Drop exact repeats; two URIs landing under one track ID: the first wins, the other is refused."""
    first: dict[str, str] = {}
    out = []
    for track_id, uri in tracks:
        if track_id not in first:
            first[track_id] = uri
            out.append((track_id, uri))
        elif first[track_id] != uri:
            refused.append((uri, f"track ID {track_id!r} is already taken by {first[track_id]}"))
    return out


def run_requests(
    ranges: Sequence[Sequence[str]],
    *,
    selected: Sequence[str],
    trigger: str,
    key_prefix: str,
    force: bool = False,
    extra_tags: dict[str, str] | None = None,
) -> list[dg.RunRequest]:
    """One ``RunRequest`` per contiguous range, every analysis in ``selected`` in the same run.

    The run key names the range (and the trigger): the daemon launches at most one run per key
    and sensor, so re-evaluating a tick after a crash requests nothing twice.
    """
    requests = []
    for track_ids in ranges:
        tags = {**range_tags(track_ids), TRIGGER_TAG: trigger, **(extra_tags or {})}
        requests.append(
            dg.RunRequest(
                run_key=f"{key_prefix}:{track_ids[0]}..{track_ids[-1]}:{len(track_ids)}",
                asset_selection=[dg.AssetKey(name) for name in selected],
                tags=tags,
                run_config={
                    "ops": {"audio_analyses": {"config": {"force": force, "dry_run": False}}}
                },
            )
        )
    return requests


__all__ = [
    "TRIGGER_TAG",
    "Landed",
    "LandingTick",
    "Message",
    "Subscriber",
    "landing_tick",
    "list_landing",
    "parse_message",
    "pull_messages",
    "read_cursor",
    "run_requests",
    "scan_landing",
]
