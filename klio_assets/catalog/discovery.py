"""Finding tracks: files, folders, CSV manifests and track messages, all untrusted.

Everything here treats its input as untrusted: track IDs are validated, IDs derived from
file names are made safe, manifest paths may not leave the manifest's folder (or the roots
explicitly allowed), Pub/Sub messages may name local files only inside the roots they are
given (the landing folder and ``KLIO_ASSETS_LANDING_ROOTS``), object URIs have no ``.`` or
``..`` segments, and a symlink inside an added folder may not pull in a file from outside
it unless asked. :func:`parse_track_message` is the one parser of track messages: the
landing sensor's Pub/Sub path calls it for every message. Registration is batched: adding partitions one at a time costs 11-22 ms
each, in batches 14-99 microseconds (about 10-25 on PostgreSQL with the bulk insert of
:func:`klio_assets.orchestration.partitions.add_track_partitions`).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from klio_assets.catalog.trackids import (
    alternate_track_id,
    track_id_from_name,
    validate_track_id,
)
from klio_assets.errors import (
    CatalogError,
    DecodeError,
    ParameterError,
    TrackIdError,
    UnsafePathError,
)
from klio_assets.worker.storage import is_remote

#: File extensions taken as audio when a folder is added.
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .mp4 .aac .aif .aiff .aifc .caf .w64 .au .wma .webm".split()
)
_ALLOWED_SCHEMES = ("gs://", "s3://")
#: Bucket names of GCS and S3: lower-case letters, digits, ``-``, ``_`` and ``.``.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{0,221}")
#: Longest path or URI accepted from outside (Linux's PATH_MAX).
MAX_PATH_LENGTH = 4096
#: Largest track message accepted (a Pub/Sub message names one track).
MAX_MESSAGE_BYTES = 64 * 1024
#: Deepest JSON nesting accepted in a track message (a flat object is depth 1). Python's JSON
#: parser recurses per level: a message of ``[[[[...`` must be refused before it is parsed.
MAX_MESSAGE_DEPTH = 8
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Discovery:
    """Tracks found, and what was refused with the reason.

    Attributes
    ----------
    tracks : list of (str, str)
        ``(track_id, uri)`` in discovery order.
    rejected : list of (str, str)
        ``(what, reason)``.
    """

    tracks: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: Source to the IDs its name allows, in order of preference: the one derived from its
    #: name and :func:`~klio_assets.catalog.trackids.alternate_track_id`'s (taken when the
    #: first belongs to another file). Sources whose ID was given (manifest rows) have none.
    alternates: dict[str, tuple[str, str]] = field(default_factory=dict)
    _seen: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, track_id: str, uri: str, origin: str, *, alternate: str | None = None) -> None:
        """Take ``(track_id, uri)``; ``alternate`` is the ID to use if ``track_id`` is taken
        by another file here (a file named twice is taken once)."""
        first = self._seen.get(track_id)
        if first == uri or (alternate is not None and self._seen.get(alternate) == uri):
            return
        if alternate is not None:
            self.alternates[uri] = (track_id, alternate)
        if first is None:
            self._seen[track_id] = uri
            self.tracks.append((track_id, uri))
            return
        if alternate is not None:
            taken_by = self._seen.get(alternate)
            if taken_by is None:
                self._seen[alternate] = uri
                self.tracks.append((alternate, uri))
                return
            if taken_by == uri:
                return
            self.rejected.append(
                (
                    origin,
                    f"skipped: its track IDs {track_id!r} and {alternate!r} are both taken "
                    f"(by {first} and {taken_by}); give it an ID of its own in a --manifest",
                )
            )
            return
        self.rejected.append((origin, f"track ID {track_id!r} is already taken by {first}"))

    def add_named(self, uri: str, name: str, origin: str) -> None:
        """Take a file whose ID comes from its ``name`` (see :meth:`add`)."""
        self.add(track_id_from_name(name), uri, origin, alternate=alternate_track_id(name))


def _inside(
    path: str, roots: Iterable[str], realpath: Callable[[str], str] = os.path.realpath
) -> bool:
    real = realpath(path)
    for root in roots:
        root_real = getattr(realpath, "root", realpath)(root)
        if real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep):
            return True
    return False


class _CachedRealpath:
    """``os.path.realpath`` for many paths in few folders: each folder is resolved once, then
    one ``lstat`` per path says whether its last component is a symlink (resolved in full).

    A manifest of a million rows otherwise costs one ``lstat`` per path component per row
    (about 70 us a row here, over a minute for the million).
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}
        self._roots: dict[str, str] = {}

    def root(self, path: str) -> str:
        """A folder paths must stay inside, resolved once."""
        real = self._roots.get(path)
        if real is None:
            real = self._roots[path] = os.path.realpath(path)
        return real

    def __call__(self, path: str) -> str:
        head, tail = os.path.split(path)
        if not head or tail in ("", ".", ".."):
            return os.path.realpath(path)
        real_head = self._folders.get(head)
        if real_head is None:
            real_head = self._folders[head] = os.path.realpath(head)
        candidate = real_head + tail if real_head.endswith(os.sep) else real_head + os.sep + tail
        try:
            if stat.S_ISLNK(os.lstat(candidate).st_mode):
                return os.path.realpath(candidate)
        except OSError:  # missing (like realpath, keep the name) or unreadable folder
            pass
        return candidate


def is_audio_name(name: str) -> bool:
    """Whether a file name (no folder) has an audio extension and is not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def check_object_uri(uri: str, *, what: str = "object") -> str:
    """Check a ``gs://`` or ``s3://`` object URI from outside and return it normalized.

    Parameters
    ----------
    uri : str
        The URI as received (already stripped of surrounding blanks).
    what : str
        Names the URI's origin in error messages (``"track 'a1'"``).

    Returns
    -------
    str
        The URI with its scheme in lower case.

    Raises
    ------
    UnsafePathError
        Another scheme, control characters, too long, no valid bucket or object name, or a
        ``.``/``..`` segment (``gs://bucket/../../other/z.wav``: stores and local mirrors
        would resolve it differently).
    """
    scheme, sep, rest = uri.partition("://")
    normalized = scheme.lower() + sep + rest
    if not sep or not normalized.startswith(_ALLOWED_SCHEMES):
        raise UnsafePathError(f"{what}: URI scheme of {uri!r} is not supported (gs://, s3://)")
    if _CONTROL.search(uri) or len(uri) > MAX_PATH_LENGTH:
        raise UnsafePathError(
            f"{what}: URI {uri[:200]!r} has control characters or is over {MAX_PATH_LENGTH} characters"
        )
    bucket, _, key = rest.partition("/")
    segments = key.split("/")
    if ".." in segments:
        raise UnsafePathError(f"{what}: URI {uri!r} must not contain '..'")
    if "." in segments:
        raise UnsafePathError(f"{what}: URI {uri!r} must not contain '.' segments")
    if not _BUCKET.fullmatch(bucket):
        raise UnsafePathError(f"{what}: URI {uri!r} has no valid bucket name")
    if not key or key.endswith("/"):
        raise UnsafePathError(f"{what}: URI {uri!r} names a bucket or folder, not an object")
    return normalized


def check_track_source(
    raw_id: object, raw_path: object, *, base: str | None, roots: Sequence[str] = ()
) -> tuple[str, str]:
    """Validate one ``(track ID, path or URI)`` pair from outside: a manifest row, a sensor,
    a Pub/Sub message.

    Parameters
    ----------
    raw_id, raw_path : object
        As received; only strings are accepted.
    base : str or None
        Folder that relative paths are relative to, and that they may not leave; ``None``
        accepts no local path outside ``roots`` (messages have no folder of their own).
    roots : sequence of str
        Further folders local paths may point into. Symlinks are resolved first, so a link
        cannot bring a file from elsewhere in.

    Returns
    -------
    (str, str)
        The track ID and the source: an absolute local path, or a ``gs://``/``s3://`` URI.

    Raises
    ------
    TrackIdError
        The ID is not valid (see :func:`~klio_assets.catalog.trackids.validate_track_id`).
    UnsafePathError
        The path is not a string, is empty, too long, has control characters, uses another
        URL scheme, has ``..`` in a URI, or leads outside ``base`` and ``roots``.
    """
    return _check_track_source(raw_id, raw_path, base=base, roots=roots, realpath=os.path.realpath)


def _check_track_source(
    raw_id: object,
    raw_path: object,
    *,
    base: str | None,
    roots: Sequence[str],
    realpath: Callable[[str], str],
) -> tuple[str, str]:
    track_id = validate_track_id(raw_id.strip() if isinstance(raw_id, str) else raw_id)
    if not isinstance(raw_path, str):
        raise UnsafePathError(
            f"track {track_id!r}: path must be a string, got {type(raw_path).__name__}"
        )
    raw_path = raw_path.strip()
    if not raw_path or _CONTROL.search(raw_path):
        raise UnsafePathError(f"track {track_id!r}: path is empty or has control characters")
    if len(raw_path) > MAX_PATH_LENGTH:
        raise UnsafePathError(
            f"track {track_id!r}: path is {len(raw_path)} characters long; the limit is {MAX_PATH_LENGTH}"
        )
    if "://" in raw_path or raw_path.lower().startswith(("file:", "http:", "https:", "data:")):
        return track_id, check_object_uri(raw_path, what=f"track {track_id!r}")
    allowed = [*([base] if base else []), *roots]
    if not os.path.isabs(raw_path) and not base:
        raise UnsafePathError(f"track {track_id!r}: path {raw_path!r} must be absolute")
    path = os.path.normpath(os.path.join(base or "/", raw_path))
    if not allowed or not _inside(path, allowed, realpath):
        where = base or ", ".join(roots) or "the allowed folders (none configured)"
        raise UnsafePathError(
            f"track {track_id!r}: path {raw_path!r} leads outside {where} (allow it with --allow-root)"
        )
    return track_id, path


class TrackMessage(NamedTuple):
    """A track announced by a message.

    Attributes
    ----------
    track_id : str
        A valid track ID.
    uri : str or None
        The source (an object URI, or a local path inside the allowed roots); ``None`` when
        the message names an already catalogued track by its ID alone.
    """

    track_id: str
    uri: str | None


def parse_track_message(
    data: bytes | str,
    *,
    roots: Sequence[str],
    attributes: Mapping[str, str] | None = None,
) -> TrackMessage:
    """The track a message announces (the data and attributes of a Pub/Sub message).

    Accepted, as documented for ``KLIO_ASSETS_LANDING_SUBSCRIPTION``:

    * a GCS notification (attributes ``bucketId``, ``objectId``, ``eventType``) of a new audio
      object;
    * ``{"track_id": "...", "uri": "..."}``, or ``{"uri": "..."}`` (the ID then comes from
      the file name);
    * a ``gs://``/``s3://`` URI or an absolute local path, as plain text (ID from the name);
    * a track ID as plain text (a track already in the catalog).

    Local paths must lie inside ``roots`` (symlinks resolved); URIs pass
    :func:`check_object_uri`.

    Parameters
    ----------
    data : bytes or str
        The message body; at most :data:`MAX_MESSAGE_BYTES`.
    roots : sequence of str
        Folders local paths may point into (none: no local path is accepted).
    attributes : mapping, optional
        The message's attributes.

    Returns
    -------
    TrackMessage

    Raises
    ------
    ParameterError
        With the reason: too large, not UTF-8, JSON nested deeper than
        :data:`MAX_MESSAGE_DEPTH` or malformed, not an object with ``uri``, a GCS event other
        than a new object or of a non-audio object, an invalid ID
        (:class:`~klio_assets.errors.TrackIdError`) or a refused source
        (:class:`~klio_assets.errors.UnsafePathError`).
    """
    if attributes and "objectId" in attributes and "bucketId" in attributes:
        return _parse_gcs_notification(attributes)
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ParameterError(
            f"track message of {len(raw)} bytes is over the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"track message is not JSON or text: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    if text.startswith(("{", "[")):
        return _parse_json_message(text, roots=roots)
    return _parse_text_message(text, roots=roots)


def _parse_text_message(text: str, *, roots: Sequence[str]) -> TrackMessage:
    if "://" in text or text.startswith("/") or text.lower().startswith("file:"):
        leaf = text.rstrip("/").rsplit("/", 1)[-1]
        track_id, uri = check_track_source(track_id_from_name(leaf), text, base=None, roots=roots)
        return TrackMessage(track_id, uri)
    try:
        return TrackMessage(validate_track_id(text), None)
    except TrackIdError as exc:
        raise TrackIdError(
            f"track message is not JSON, a gs:// or s3:// URI, a path or a track ID: {exc}"
        ) from exc


def _parse_gcs_notification(attributes: Mapping[str, str]) -> TrackMessage:
    bucket, name = attributes["bucketId"], attributes["objectId"]
    uri = f"gs://{bucket}/{name}"
    event = attributes.get("eventType", "OBJECT_FINALIZE")
    if event != "OBJECT_FINALIZE":
        raise ParameterError(f"GCS notification for {uri[:300]!r} is not a new object: {event!r}")
    leaf = name.rsplit("/", 1)[-1]
    if not is_audio_name(leaf):
        raise ParameterError(f"GCS notification for {uri[:300]!r}: not an audio file name")
    track_id, source = check_track_source(track_id_from_name(leaf), uri, base=None, roots=())
    return TrackMessage(track_id, source)


def _json_depth(text: str) -> int:
    """How deeply ``text`` nests JSON arrays and objects (strings skipped), without parsing."""
    if text.count("[") + text.count("{") <= MAX_MESSAGE_DEPTH:
        return MAX_MESSAGE_DEPTH  # cannot be deeper: skip the scan
    depth = deepest = 0
    for char in _JSON_STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _parse_json_message(text: str, *, roots: Sequence[str]) -> TrackMessage:
    depth = _json_depth(text)
    if depth > MAX_MESSAGE_DEPTH:
        raise ParameterError(
            f"track message nests JSON {depth} levels deep; the limit is {MAX_MESSAGE_DEPTH}"
        )
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParameterError(f"track message is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or "uri" not in obj:
        alone = " (a track ID alone is sent as plain text)" if isinstance(obj, dict) else ""
        raise ParameterError(
            "track message must be a JSON object with 'track_id' and 'uri' (or 'uri' alone: "
            f"the ID is then taken from the file name){alone}"
        )
    raw_uri = obj["uri"]
    if not isinstance(raw_uri, str):
        raise UnsafePathError(
            f"track message: 'uri' must be a string, got {type(raw_uri).__name__}"
        )
    raw_id = obj.get("track_id")
    if raw_id is None:
        raw_id = track_id_from_name(raw_uri.strip().rstrip("/").rsplit("/", 1)[-1])
    track_id, source = check_track_source(raw_id, raw_uri, base=None, roots=roots)
    return TrackMessage(track_id, source)


def _walk_folder(folder: str, found: Discovery, *, follow_symlinks: bool) -> None:
    folder = os.path.abspath(folder)
    for current, dirs, files in os.walk(folder, followlinks=follow_symlinks):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS or name.startswith("."):
                continue
            path = os.path.join(current, name)
            if not follow_symlinks and os.path.islink(path) and not _inside(path, [folder]):
                found.rejected.append(
                    (
                        path,
                        f"symlink to {os.path.realpath(path)}, outside {folder} (--follow-symlinks to allow)",
                    )
                )
                continue
            found.add_named(path, name, path)


def _not_a_source(path: str) -> str:
    """Why a path given to ``add`` that is neither a folder nor a regular file is refused."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file or folder"
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not an audio file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not an audio file"
    return "is not a regular file (a socket or other special file)"


def _not_audio(path: str) -> str | None:
    """Why a file named explicitly without an audio extension is not a track (None: it is
    audio), from its header: libsndfile, else a look at its first bytes, else ffprobe."""
    # The worker's probe: the same verdict the run would reach, at the cost of a header read.
    from klio_assets.worker.audio import probe  # noqa: PLC0415 - numpy, soundfile, soxr

    try:
        probe(path, track_id="?", uri=path)
    except DecodeError as exc:
        return f"not an audio file: {exc.problem}"
    return None


def discover(
    paths: Sequence[str] = (),
    *,
    manifest: str | None = None,
    allowed_roots: Sequence[str] = (),
    follow_symlinks: bool = False,
) -> Discovery:
    """Find tracks in files, folders and a CSV manifest.

    Parameters
    ----------
    paths : sequence of str
        Audio files, folders (searched recursively for audio extensions, other files
        ignored), or ``gs://``/``s3://`` object URIs. A file named explicitly without an audio
        extension is probed (its header) and refused with the reason when it is not audio.
        The ID comes from the file name; when another file already has it (``hello.wav``
        and ``hello.opus``), the later one, in sorted order, gets
        :func:`~klio_assets.catalog.trackids.alternate_track_id` (``hello-opus``).
    manifest : str, optional
        CSV with ``track_id,path`` columns; relative paths are relative to the manifest.
    allowed_roots : sequence of str
        Folders that manifest paths may point into besides the manifest's own folder.
    follow_symlinks : bool
        Accept symlinks in added folders that point outside them.
    """
    found = Discovery()
    for raw in paths:
        if is_remote(raw):
            try:
                uri = check_object_uri(raw.strip(), what="object URI")
            except UnsafePathError as exc:
                found.rejected.append((raw, str(exc)))
                continue
            found.add_named(uri, uri.rsplit("/", 1)[-1], raw)
        elif os.path.isdir(raw):
            _walk_folder(raw, found, follow_symlinks=follow_symlinks)
        elif os.path.isfile(raw):
            path = os.path.abspath(raw)
            refusal = None if is_audio_name(os.path.basename(path)) else _not_audio(path)
            if refusal is not None:
                found.rejected.append((raw, refusal))
                continue
            found.add_named(path, os.path.basename(path), raw)
        else:
            found.rejected.append((raw, _not_a_source(raw)))
    if manifest is not None:
        _read_manifest(manifest, found, allowed_roots=allowed_roots)
    return found


def _manifest_rows(
    fh: BinaryIO, manifest: str, found: Discovery
) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each physical line of a CSV manifest.

    Each line is decoded and parsed on its own, so one bad line (not UTF-8, an unterminated
    quote, a field over the CSV limit) is refused with its line number and never swallows the
    lines after it; an Excel byte-order mark is ignored. Quoted newlines are not supported.
    """
    for number, raw in enumerate(fh, start=1):
        where = f"{manifest}:{number}"
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            found.rejected.append((where, f"not UTF-8 (byte {exc.start + 1} of the line)"))
            continue
        if not text.strip():
            continue
        try:
            yield number, next(csv.reader([text], strict=True))
        except csv.Error as exc:
            found.rejected.append((where, f"not a CSV row: {exc}"))


def _read_manifest(manifest: str, found: Discovery, *, allowed_roots: Sequence[str]) -> None:
    base = os.path.dirname(os.path.abspath(manifest))
    try:
        fh = open(manifest, "rb")  # closed by the with below
    except OSError as exc:
        raise CatalogError(f"cannot read manifest {manifest}: {exc.strerror}") from exc
    realpath = _CachedRealpath()
    with fh:
        rows = _manifest_rows(fh, manifest, found)
        header = next(rows, (0, []))[1]
        if not {"track_id", "path"} <= set(header):
            raise CatalogError(
                f"manifest {manifest} needs 'track_id' and 'path' columns, has {sorted(header)}"
            )
        id_column, path_column = header.index("track_id"), header.index("path")
        for line, fields in rows:
            where = f"{manifest}:{line}"
            try:
                track_id, source = _check_track_source(
                    fields[id_column] if id_column < len(fields) else "",
                    fields[path_column] if path_column < len(fields) else "",
                    base=base,
                    roots=allowed_roots,
                    realpath=realpath,
                )
            except (TrackIdError, UnsafePathError) as exc:
                found.rejected.append((where, str(exc)))
                continue
            found.add(track_id, source, where)
