"""Listing a local landing folder: every audio file with its ctime, skipping unchanged folders."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from klio_assets.catalog.discovery import AUDIO_EXTENSIONS
from klio_assets.errors import StorageError

_log = logging.getLogger(__name__)


def list_folder(
    folder: str, *, unchanged_before: int | None = None, known_folders: Sequence[str] | None = None
) -> tuple[list[tuple[int, str]], list[str]]:
    """``(ctime_ns, path)`` of every audio file under ``folder``, and every folder listed
    (relative to ``folder``).

    Hidden files and folders (names starting with ``.``, the usual temporary names of
    writers) are ignored; so are symlinks that lead out of ``folder``. A folder listed last
    time (``known_folders``) whose ctime is still before ``unchanged_before`` holds the same
    entries as then: it is not listed again (its sub-folders are visited).

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
    known = set(known_folders or ()) if unchanged_before is not None else set()
    children: dict[str, list[str]] = {}
    for rel in known:
        if rel != ".":
            children.setdefault(os.path.dirname(rel) or ".", []).append(rel)
    found: list[tuple[int, str]] = []
    listed: list[str] = []
    pending = ["."]
    while pending:
        rel = pending.pop()
        current = folder if rel == "." else os.path.join(folder, rel)
        listed.append(rel)
        try:
            if (
                rel in known
                and unchanged_before is not None
                and os.lstat(current).st_ctime_ns < unchanged_before
            ):
                pending.extend(children.get(rel, ()))  # unchanged: same entries as last time
                continue
            entries = list(os.scandir(current))
        except FileNotFoundError:
            listed.pop()
            continue  # a sub-folder removed while listing
        except OSError as exc:
            raise StorageError(f"cannot list landing folder {current}: {exc}") from exc
        _take_entries(entries, rel, root, found, pending)
    return found, listed


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
