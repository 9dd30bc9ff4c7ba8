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

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass

from klio_assets.automation.landing.folder import list_folder
from klio_assets.automation.landing.objects import list_objects
from klio_assets.catalog.trackids import track_id_from_name

#: File timestamps come from the kernel's coarse clock, which lags ``time.time()`` by up to
#: one timer tick (1-10 ms; measured 3.8 ms here): a file changed just after a listing can
#: carry a ctime just before it. Every listing's limit is moved back by this margin on top
#: of the settle time. (Network filesystems stamp with the server's clock: there the settle
#: time must cover the skew too.)
CLOCK_MARGIN_S = 0.1


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
        found = list_objects(location)
    else:
        found, folders = list_folder(
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
