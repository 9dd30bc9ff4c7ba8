"""One listing of the landing location: files past the cursor and settled, in cursor order.

Files are taken in order of ``(ctime, uri)`` and the cursor is the last pair taken. ``ctime``
(not ``mtime``) because a move or ``cp -p`` keeps the mtime of the original, so a file moved
into the folder while the sensor is down could sort before the cursor; ``ctime`` is set by
the kernel on the rename and cannot be set by users. Only files at least ``settle_s`` old
are taken: a file that appears after a listing has a ctime later than that listing, so it
can never sort at or below a cursor taken from it (and half-written files are left alone).
On ``gs://`` the object's creation time plays that role (an overwrite is a new object).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from klio_assets.automation.landing.folder import (
    CLOCK_MARGIN_S,
    forget,
    scan_folder,
    verify_taken,
)
from klio_assets.automation.landing.objects import list_objects
from klio_assets.catalog.trackids import track_id_from_name

# CLOCK_MARGIN_S: a file changed just after a listing can carry a ctime just before it (the
# kernel's coarse clock). Every listing's limit is moved back by this margin on top of the
# settle time. (Network filesystems stamp with the server's clock: there the settle time must
# cover the skew too.)
__all__ = ["CLOCK_MARGIN_S", "Landed", "Listing", "list_landing", "scan_landing"]


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
        """The file's place in cursor order."""
        return (self.ctime_ns, self.uri)


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
    (``unchanged_before``) holds nothing new and is not listed again. A listing that leaves a
    backlog is remembered for the next tick in this process, folder by folder
    (:mod:`klio_assets.automation.landing.folder`), so draining a million files lists them once.

    Raises
    ------
    StorageError
        The location cannot be listed (it does not exist, permissions, network).
    """
    now = time.time() if now is None else now
    limit_ns = int((now - settle_s - CLOCK_MARGIN_S) * 1e9)
    if "://" in location:
        found = sorted(list_objects(location))
        return _taken([found], limit_ns, after, max_files, folders=None)
    scan = scan_folder(
        location,
        unchanged_before=unchanged_before,
        known_folders=known_folders,
        after=after,
        settled_before=limit_ns,
    )
    listing = _taken(scan.groups, limit_ns, after, max_files, folders=scan.folders)
    if listing.pending > len(listing.files) or listing.unsettled:
        if scan.reused and not verify_taken([f.key for f in listing.files]):
            forget(location)  # a file changed in place since it was listed: list again
            return scan_landing(
                location,
                now=now,
                settle_s=settle_s,
                after=after,
                unchanged_before=unchanged_before,
                known_folders=known_folders,
                max_files=max_files,
            )
    else:
        forget(location)  # no backlog: the cursor's known folders serve the idle ticks
    return listing


def _taken(
    groups: Sequence[Sequence[tuple[int, str]]],
    limit_ns: int,
    after: tuple[int, str] | None,
    max_files: int | None,
    *,
    folders: list[str] | None,
) -> Listing:
    """The first ``max_files`` files past ``after`` and settled, from lists in cursor order.

    Each list is cut by bisection (past the cursor, up to the limit), and only the first
    ``max_files`` of each are merged: a tick over a backlog costs what it takes.
    """
    unsettled = pending = 0
    slices: list[Sequence[tuple[int, str]]] = []
    for group in groups:
        start = bisect.bisect_right(group, after) if after is not None else 0
        end = bisect.bisect_right(group, limit_ns, key=lambda k: k[0])
        unsettled += len(group) - end
        if end > start:
            pending += end - start
            stop = end if max_files is None else min(end, start + max_files)
            slices.append(group[start:stop])
    if len(slices) == 1:
        taken = list(slices[0])
    else:
        taken = list(itertools.islice(heapq.merge(*slices), max_files))
    files = [Landed(ctime, uri, track_id_from_name(uri.rsplit("/", 1)[-1])) for ctime, uri in taken]
    return Listing(files, unsettled, limit_ns, folders, pending=pending)


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
