"""Track IDs: what is allowed, and how one is derived from a file name.

Track IDs come from outside (file names, manifests, sensors, Pub/Sub messages) and end up in
storage paths, so they are checked here, in one place: ASCII letters, digits, ``.``, ``_``
and ``-``; starting with a letter or digit; at most :data:`MAX_TRACK_ID_LENGTH` characters;
no ``..``. Nothing that could be read as a path separator, a URL scheme, a control character
or a parent directory gets through.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from klio_assets.errors import TrackIdError

MAX_TRACK_ID_LENGTH = 128
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def validate_track_id(track_id: object) -> str:
    """Return ``track_id`` if it is an acceptable track ID, else raise.

    Parameters
    ----------
    track_id : object
        The candidate, usually a string from a file name, a manifest or a message.

    Returns
    -------
    str
        The same track ID.

    Raises
    ------
    TrackIdError
        With the offending value (escaped) and the rule it breaks.
    """
    if not isinstance(track_id, str):
        raise TrackIdError(f"track ID must be a string, got {type(track_id).__name__}")
    shown = track_id if len(track_id) <= 80 else track_id[:77] + "..."
    if not track_id:
        raise TrackIdError("track ID must not be empty")
    if len(track_id) > MAX_TRACK_ID_LENGTH:
        raise TrackIdError(
            f"track ID {shown!r} is {len(track_id)} characters long; "
            f"the limit is {MAX_TRACK_ID_LENGTH}"
        )
    if not _VALID.fullmatch(track_id):
        bad = sorted({c for c in track_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
        detail = (
            f"characters {''.join(bad)!r} are not allowed"
            if bad
            else "it must start with a letter or digit"
        )
        raise TrackIdError(
            f"track ID {shown!r} is not valid: {detail} "
            "(allowed: ASCII letters, digits, '.', '_', '-')"
        )
    if ".." in track_id:
        raise TrackIdError(f"track ID {shown!r} is not valid: it must not contain '..'")
    return track_id


def track_id_from_name(name: str) -> str:
    """Derive a valid track ID from a file name (without its directory).

    The extension is dropped, accents are folded to ASCII, every other run of characters that
    is not allowed becomes ``-``. Names with nothing usable left (for example only CJK
    characters) and names that must be shortened get a short hash of the original name, so
    that different names stay different.

    Parameters
    ----------
    name : str
        A file name such as ``"Sonate für Klavier (Live).flac"``.

    Returns
    -------
    str
        A valid track ID such as ``"Sonate-fur-Klavier-Live"``.

    Examples
    --------
    >>> track_id_from_name("My Song.mp3")
    'My-Song'
    """
    stem = name.rsplit("/", 1)[-1]
    if "." in stem.lstrip("."):
        stem = stem[: stem.rfind(".")]
    if (
        len(stem) <= MAX_TRACK_ID_LENGTH - 9
        and stem.isascii()
        and _VALID.fullmatch(stem)
        and ".." not in stem
        and stem[-1] not in "._-"
    ):
        return stem  # already an ID (what the steps below would return, ~20x faster)
    decomposed = unicodedata.normalize("NFKD", stem)
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    # Accents fold away harmlessly; letters with no ASCII form (CJK, Cyrillic...) are lost, so
    # the ID then carries a hash of the real name to keep different names apart.
    lossy = any(not c.isascii() and not unicodedata.combining(c) for c in decomposed)
    slug = _INVALID_RUN.sub("-", folded)
    slug = re.sub(r"\.{2,}", ".", slug)
    slug = slug.lstrip("._-").rstrip("._-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    if not slug:
        return f"track-{digest}"
    if len(slug) > MAX_TRACK_ID_LENGTH - 9 or lossy:
        slug = slug[: MAX_TRACK_ID_LENGTH - 9].rstrip("._-") + "-" + digest
    return validate_track_id(slug)


def alternate_track_id(name: str) -> str:
    """The ID a file gets when :func:`track_id_from_name`'s is taken by another file.

    Same-stem files of different formats (``hello.wav`` and ``hello.opus``) would share the
    ID ``hello``; the one that finds it taken gets the stem's ID with its extension after a
    ``-``: ``hello-opus``. Deterministic: the same name always gives the same alternate.

    Parameters
    ----------
    name : str
        A file name such as ``"hello.opus"``.

    Returns
    -------
    str
        A valid track ID such as ``"hello-opus"``.

    Examples
    --------
    >>> alternate_track_id("hello.opus")
    'hello-opus'
    """
    leaf = name.rsplit("/", 1)[-1]
    base = track_id_from_name(leaf)
    ext = leaf[leaf.rfind(".") + 1 :] if "." in leaf.lstrip(".") else ""
    ext = _INVALID_RUN.sub("-", ext.lower()).strip("._-")[:16].strip("._-") or "file"
    room = MAX_TRACK_ID_LENGTH - len(ext) - 1
    return validate_track_id(base[:room].rstrip("._-") + "-" + ext)
