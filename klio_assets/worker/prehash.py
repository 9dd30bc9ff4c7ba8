"""Content hashes and headers read while a waiting worker process has nothing else to do.

A local ``klio-assets run`` starts its worker process ahead of the job
(:mod:`klio_assets.worker.spare`): the worker imports Python, the engine and Beam in ~0.6 s,
then waits while the launcher imports Dagster, opens the instance and creates the run, about
a second more on one core. The other core would idle. The launcher therefore sends the
waiting worker the sources of the tracks the catalog's ledger says have work left (a hint,
never trusted for anything but which files to read first), and the worker hashes them in a
background thread until its job arrives (:func:`start`, :func:`stop`), and reads their
headers (:func:`~klio_assets.worker.audio.read_header`: libsndfile opening the file, the
container's own account of its length). The job's existence check then takes the hash
(:func:`content_hash`) and the header (:func:`header`) from here instead of reading the file
again; the header is still checked against the job's limits.

A hash or header is only ever reused for the same file, unchanged: same device, inode, size,
modification and change time (``st_ctime`` cannot be set back by a user: any write moves
it) before and after it was computed and when it is used, and a file changed within
:data:`RECENT_S` of the early hash is left to the job. Anything else, or a file not
hashed yet, is hashed then, as without this module. Sources behind object-store URIs are
not prefetched (reading them early would download them twice). Nothing here imports
Dagster or Beam.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from klio_assets.worker.audio import SourceInfo, read_header
from klio_assets.worker.storage import hash_file, is_remote, open_source

#: A file's identity and state: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``.
_Key = tuple[int, int, int, int, int]

_lock = threading.Lock()
_hashes: dict[str, tuple[_Key, str]] = {}
_headers: dict[str, tuple[_Key, SourceInfo]] = {}
_stop = threading.Event()
_thread: threading.Thread | None = None
_used = 0


#: A file changed less than this long before its early hash is not hashed early: file times
#: come from a coarse clock (a jiffy), so a rewrite of the same size right after a hash
#: could leave every stamp as it was (git's "racily clean" entries).
RECENT_S = 1.0


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def start(uris: Sequence[str]) -> bool:
    """Hash the local sources among ``uris``, in order, in a background thread, until
    :func:`stop`.

    Parameters
    ----------
    uris : sequence of str
        Track sources as the catalog holds them (local paths or ``file://`` URIs; object
        URIs are left out). Checked as the job checks them (:func:`open_source`): a symlink
        or anything but a regular file is skipped, and the job then reports it.

    Returns
    -------
    bool
        Whether a thread was started: not on a single usable core, where it would only
        slow the launcher down.
    """
    global _thread
    local = [uri for uri in uris if not is_remote(uri)]
    if not local or len(os.sched_getaffinity(0)) < 2 or _thread is not None:
        return False
    _stop.clear()
    _thread = threading.Thread(target=_hash_all, args=(local,), name="klio-prehash", daemon=True)
    _thread.start()
    return True


def stop() -> None:
    """Stop hashing after the file at hand (the job needs the cores now)."""
    _stop.set()


def _hash_all(uris: Sequence[str]) -> None:
    for uri in uris:
        if _stop.is_set():
            return
        try:
            with open_source(uri) as path:
                before = os.stat(path)
                if time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < RECENT_S * 1e9:
                    continue
                digest = hash_file(path)
                after = os.stat(path)
                if _key(before) != _key(after):
                    continue
                with _lock:
                    _hashes[path] = (_key(after), digest)
                # one libsndfile cannot read (ffprobe's, or none) is left to the job
                info = read_header(path, track_id="", uri=uri, timeout_s=0.0, ffprobe=False)
                if _key(os.stat(path)) == _key(after):
                    with _lock:
                        _headers[path] = (_key(after), info)
        except Exception:  # the job's own check reports any problem
            continue


def content_hash(path: str) -> str:
    """:func:`~klio_assets.worker.storage.hash_file` of ``path``: the hash computed early
    when the file is the same and unchanged since, else computed now.

    Parameters
    ----------
    path : str
        A local path, as :func:`open_source` gave it.

    Returns
    -------
    str
        ``blake3:<hex>``.
    """
    global _used
    digest: str | None = _take(_hashes, path)
    if digest is None:
        return hash_file(path)
    with _lock:
        _used += 1
    return digest


def header(path: str) -> SourceInfo | None:
    """The header read early of ``path`` (:func:`~klio_assets.worker.audio.read_header`),
    if the file is the same and unchanged since; None otherwise (the job reads it then).

    Parameters
    ----------
    path : str
        A local path, as :func:`open_source` gave it.
    """
    info: SourceInfo | None = _take(_headers, path)
    return info


def _take(early: dict[str, tuple[_Key, Any]], path: str) -> Any:
    """What was computed early for ``path``, if the file is unchanged since (once)."""
    with _lock:
        known = early.pop(path, None)
    if known is None:
        return None
    try:
        same = _key(os.stat(path)) == known[0]
    except OSError:
        same = False
    return known[1] if same else None


def prehashed() -> int:
    """How many early hashes wait to be used."""
    with _lock:
        return len(_hashes)


def used() -> int:
    """How many early hashes the job has used."""
    with _lock:
        return _used
