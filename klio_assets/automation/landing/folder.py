"""Listing a local landing folder: every audio file with its ctime, skipping unchanged folders.

A backlog (a first tick over a million files, drained ``KLIO_ASSETS_LANDING_MAX_TRACKS`` at a
tick) would otherwise be listed again at every tick: ~1 s per 100k files for the ``lstat``
alone, and the sort. So the folders of a listing that left a backlog are kept in memory, in
cursor order, for the next tick of the same process (the code server that evaluates the
sensor); a folder whose ctime has not moved since holds the same entries (its ctime changes
whenever an entry is added, removed or renamed in it) and is not listed again. Only settled
folders are kept (nothing in them younger than the listing's limit, the folder itself older
than the listing by :data:`CLOCK_MARGIN_S`), the entries at or before the cursor are dropped
as the cursor moves, and all of it is forgotten once a listing leaves no backlog (the cursor's
known folders take over: :mod:`klio_assets.automation.landing.cursor`). The files a tick takes
from memory are ``lstat``-ed again (:func:`verify_taken`): one rewritten in place since is
found, and the folder listed again.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from klio_assets.catalog.discovery import AUDIO_EXTENSIONS
from klio_assets.errors import StorageError

_log = logging.getLogger(__name__)

#: File and folder timestamps come from the kernel's coarse clock, which lags ``time.time()``
#: by up to one timer tick (1-10 ms; measured 3.8 ms here); a folder changed within this
#: margin of its listing is listed again next time rather than remembered.
CLOCK_MARGIN_S = 0.1


@dataclass
class _Folder:
    """One folder's listing, remembered for the next tick."""

    ctime_ns: int  # the folder's ctime, taken before its entries were read
    files: list[tuple[int, str]]  # its audio files, ``(ctime_ns, path)`` in that order
    subfolders: list[str]  # relative to the landing folder


@dataclass
class _Remembered:
    """The folders of one landing folder's last listing that left a backlog."""

    folders: dict[str, _Folder] = field(default_factory=dict)
    trimmed_after: tuple[int, str] | None = None  # entries up to this key were dropped


#: Landing folder (absolute path) to its remembered listing; see the module's docstring.
_REMEMBERED: dict[str, _Remembered] = {}


@dataclass
class FolderScan:
    """One listing of a local landing folder.

    Attributes
    ----------
    groups : list of list of (int, str)
        Per folder listed (or remembered), its audio files as ``(ctime_ns, path)``, each list
        in that order.
    folders : list of str
        Every folder listed, relative to the landing folder.
    reused : set of str
        The folders whose entries came from memory (not listed again).
    """

    groups: list[list[tuple[int, str]]]
    folders: list[str]
    reused: set[str]


def scan_folder(
    folder: str,
    *,
    unchanged_before: int | None = None,
    known_folders: Sequence[str] | None = None,
    after: tuple[int, str] | None = None,
    settled_before: int | None = None,
) -> FolderScan:
    """The audio files under ``folder`` with their ctimes, per folder in cursor order.

    Hidden files and folders (names starting with ``.``, the usual temporary names of
    writers) are ignored; so are symlinks that lead out of ``folder``. A folder listed last
    time (``known_folders``) whose ctime is still before ``unchanged_before`` holds the same
    entries as then: it is not listed again (its sub-folders are visited). A folder
    remembered from the last listing of this process (it left a backlog) whose ctime has not
    moved gives its remembered entries past ``after``.

    Parameters
    ----------
    after : (int, str), optional
        The cursor: remembered entries at or before it are dropped (a cursor older than what
        was dropped makes the whole folder listed again).
    settled_before : int, optional
        The listing's ctime limit: only folders with nothing younger are remembered.

    Raises
    ------
    StorageError
        The folder does not exist or cannot be listed.
    """
    if not os.path.isdir(folder):
        raise StorageError(
            f"landing folder {folder} does not exist (create it, or set KLIO_ASSETS_LANDING)"
        )
    folder = os.path.abspath(folder)
    root = os.path.realpath(folder)
    memory = _memory(folder, after)
    known = set(known_folders or ()) if unchanged_before is not None else set()
    children: dict[str, list[str]] = {}
    for rel in known:
        if rel != ".":
            children.setdefault(os.path.dirname(rel) or ".", []).append(rel)
    scan = FolderScan([], [], set())
    remembered: dict[str, _Folder] = {}
    margin_ns = int(CLOCK_MARGIN_S * 1e9)
    pending = ["."]
    while pending:
        rel = pending.pop()
        current = folder if rel == "." else os.path.join(folder, rel)
        scan.folders.append(rel)
        try:
            listed_at = time.time_ns()
            ctime = os.lstat(current).st_ctime_ns
            if rel in known and unchanged_before is not None and ctime < unchanged_before:
                pending.extend(children.get(rel, ()))  # unchanged: same entries as last time
                continue
            kept = memory.folders.get(rel)
            if kept is not None and kept.ctime_ns == ctime:
                scan.groups.append(kept.files)
                scan.reused.add(rel)
                remembered[rel] = kept
                pending.extend(kept.subfolders)
                continue
            entries = list(os.scandir(current))
        except FileNotFoundError:
            scan.folders.pop()
            continue  # a sub-folder removed while listing
        except OSError as exc:
            raise StorageError(f"cannot list landing folder {current}: {exc}") from exc
        found: list[tuple[int, str]] = []
        subfolders: list[str] = []
        _take_entries(entries, rel, root, found, subfolders)
        found.sort()
        pending.extend(subfolders)
        scan.groups.append(found)
        if (
            settled_before is not None
            and ctime < listed_at - margin_ns
            and (not found or found[-1][0] <= settled_before)
        ):
            remembered[rel] = _Folder(ctime, found, subfolders)
    _REMEMBERED[folder] = _Remembered(remembered, memory.trimmed_after)
    return scan


def _memory(folder: str, after: tuple[int, str] | None) -> _Remembered:
    """The remembered listing of ``folder`` with the entries up to ``after`` dropped."""
    memory = _REMEMBERED.pop(folder, None)
    if memory is None:
        return _Remembered()
    if memory.trimmed_after is not None and (after is None or after < memory.trimmed_after):
        return _Remembered()  # the cursor went back (a failed tick): list again
    if after is not None:
        for kept in memory.folders.values():
            del kept.files[: bisect.bisect_right(kept.files, after)]
        memory.trimmed_after = after
    return memory


def forget(folder: str) -> None:
    """Drop the remembered listing of ``folder`` (it left no backlog, or is not to be trusted)."""
    _REMEMBERED.pop(os.path.abspath(folder), None)


def verify_taken(taken: Sequence[tuple[int, str]]) -> bool:
    """Whether every file taken from a remembered listing still has the ctime remembered.

    A file rewritten in place (no rename) changes its ctime but not its folder's: the caller
    then forgets the listing and lists the folder again, which sees the new ctime.
    """
    for ctime, path in taken:
        try:
            if os.lstat(path).st_ctime_ns != ctime:
                return False
        except FileNotFoundError:
            return False
    return True


def _take_entries(
    entries: list[os.DirEntry[str]],
    rel: str,
    root: str,
    found: list[tuple[int, str]],
    pending: list[str],
) -> None:
    extensions = AUDIO_EXTENSIONS
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
                        "landing: ignoring %s, a symlink to %s outside %s", entry.path, real, root
                    )
                    continue
            found.append((entry.stat(follow_symlinks=False).st_ctime_ns, entry.path))
        except FileNotFoundError:  # removed while listing: gone, nothing to take
            continue
