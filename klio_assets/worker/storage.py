"""Where outputs live: a root URI (local folder, ``gs://``, ``s3://``) and atomic writes under it.

Every write goes to a temporary name first and is committed in one step (``os.replace``
locally, a single object upload on GCS/S3), so a crash never leaves a partial file under an
output's name. Temporary names start with ``.`` and end in ``.tmp-<host>-<pid>-<random>``: no
existence check ever mistakes them for outputs, and the first write into a folder removes those
left there by writers of this host that were killed (their process is gone).

Paths under the root are built only from checked components (analysis names, versions, track
IDs), and local paths are resolved and checked against the root before anything is written,
so that neither a crafted track ID nor a symlink planted inside the root can send a write
elsewhere.

Remote roots go through fsspec (``gcsfs``/``s3fs`` installed with the ``gcp``/``s3`` extras).
This module imports nothing from Dagster.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import stat as stat_module
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import blake3
import tenacity

from klio_assets.errors import (
    KlioAssetsError,
    ParameterError,
    StorageError,
    TransientStorageError,
    UnsafePathError,
)
from klio_assets.worker.records import SourceStat

if TYPE_CHECKING:
    import fsspec

T = TypeVar("T")

_REMOTE_SCHEMES = ("gs://", "gcs://", "s3://", "memory://")
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, errno.EDQUOT}


#: This host in temporary names, so that only its own dead writers' leftovers are swept.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this host. A zombie (killed, not yet reaped: in
    a container whose first process does not reap orphans it may stay so) has stopped
    writing, so it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # no procfs (macOS): trust kill()
        return True
    # the state follows the command name, which is in parentheses and may hold any byte
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


#: Seconds :meth:`Storage.check_reachable` waits for a remote root's first answer.
REACHABLE_TIMEOUT_S = 15.0
#: Set to ``host:port`` of a GCS emulator (the variable Google's client libraries honour).
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def _emulated_gcs(options: dict[str, Any]) -> fsspec.AbstractFileSystem:
    """gcsfs against the emulator in ``STORAGE_EMULATOR_HOST``: anonymous, and without the
    storage-control (gRPC) bucket-type probe of gcsfs' extended file system, which an emulator
    does not serve (each probe waits 60 s for a TLS handshake)."""
    from gcsfs.core import GCSFileSystem  # noqa: PLC0415 - only gs:// roots need it

    return GCSFileSystem(**{"token": "anon", **options})


def _quiet_driver_logs() -> None:
    """gcsfs and s3fs log every failed attempt with a traceback (thousands of lines when a
    store is unreachable); our own error says what failed once. Logs stay available to a
    deployment that sets these loggers' levels itself."""
    for name in ("gcsfs", "s3fs", "aiobotocore", "botocore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store rather than the local file system."""
    return uri.startswith(_REMOTE_SCHEMES)


def _check_component(part: str) -> str:
    if (
        not part
        or part in (".", "..")
        or "/" in part
        or "\\" in part
        or any(ord(c) < 32 for c in part)
    ):
        raise UnsafePathError(f"unsafe path component {part!r}")
    return part


def shard_of(key: str) -> str:
    """Two hex characters spreading keys over 256 folders (no folder of millions of files)."""
    return hashlib.sha1(key.encode()).hexdigest()[:2]


#: Error codes of S3-compatible stores (botocore's ``response["Error"]["Code"]``) worth retrying.
_TRANSIENT_CODES = frozenset(
    "SlowDown Throttling ThrottlingException TooManyRequests RequestLimitExceeded "
    "RequestTimeout InternalError ServiceUnavailable".split()
)
#: Connection-level exception types of the HTTP stacks under gcsfs and s3fs, by module: none
#: derives from the built-in ConnectionError or TimeoutError. A module that is not imported
#: cannot have raised anything, so only those already in ``sys.modules`` are looked at (nothing
#: is imported to classify an error, and no library here is required).
_TRANSIENT_TYPES = {
    "aiohttp": ("ClientConnectionError", "ClientPayloadError"),  # gcsfs, s3fs (aiobotocore)
    "requests.exceptions": ("ConnectionError", "Timeout", "ChunkedEncodingError"),
    "urllib3.exceptions": ("ProtocolError", "TimeoutError"),
    "http.client": ("IncompleteRead",),  # RemoteDisconnected is a ConnectionResetError
    "botocore.exceptions": (
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    ),
    "google.auth.exceptions": ("TransportError",),  # token refresh over a dropped connection
}


def _transient_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name, names in _TRANSIENT_TYPES.items():
        module = sys.modules.get(module_name)
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries: ``code`` (gcsfs ``HttpError``, google-api-core's
    ``GoogleAPICallError``, urllib's ``HTTPError``), ``status`` (aiohttp's
    ``ClientResponseError``), ``status_code`` (requests), or botocore's ``response``."""
    candidates: list[object] = [
        getattr(exc, "code", None),
        getattr(exc, "status", None),
        getattr(exc, "status_code", None),
    ]
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        candidates.append((response.get("ResponseMetadata") or {}).get("HTTPStatusCode"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: throttling, 5xx, timeouts, dropped connections.

    A full disk, a read-only target, a missing permission or a missing file will not go away
    by retrying; neither will bad input. Errors already classified keep their class.

    Parameters
    ----------
    exc : BaseException
        What an I/O operation raised.
    """
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, FileNotFoundError):
        return False  # an answer, not a failure
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return False
    if _http_status(exc) in _TRANSIENT_HTTP:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and (response.get("Error") or {}).get("Code") in _TRANSIENT_CODES:
        return True
    return isinstance(exc, _transient_types())


def classify_error(exc: BaseException, what: str) -> StorageError:
    """Wrap an I/O exception as a transient or permanent :class:`StorageError`.

    Connection resets, timeouts, throttling and 5xx answers may succeed when retried (see
    :func:`is_transient`); a full disk, a read-only target or a missing permission will not.
    """
    if isinstance(exc, StorageError):
        return exc
    if is_transient(exc):
        err: StorageError = TransientStorageError(f"{what}: {exc}")
    elif isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        err = StorageError(f"{what}: {os.strerror(exc.errno)}")
    else:
        err = StorageError(f"{what}: {exc}")
    err.__cause__ = exc
    return err


def retry_transient(
    fn: Callable[[], T],
    *,
    what: str,
    tries: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 10.0,
) -> T:
    """Call ``fn``, retrying transient storage errors with exponential backoff and jitter.

    Parameters
    ----------
    fn : callable
        The operation; it must be safe to repeat.
    what : str
        Description used in the final error, e.g. ``"write gs://b/x.flac"``.
    tries : int
        Total attempts, at least 1.
    base_delay, max_delay : float
        Backoff in seconds: after attempt ``n`` (from 0), ``min(max_delay, base_delay * 2**n)``
        times a jitter in [0.5, 1): half of it fixed, half random, so that writers failing
        together spread out without any of them retrying at once.

    Raises
    ------
    FileNotFoundError
        As raised by ``fn``, at once: callers decide what a missing file means.
    StorageError
        The last error, with the number of attempts when it was transient.
    """
    if tries < 1:
        raise ParameterError(f"tries={tries}: wanted at least 1 attempt")
    half_base, half_max = base_delay / 2, max_delay / 2
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(tries),
        wait=tenacity.wait_exponential(multiplier=half_base, max=half_max)
        + tenacity.wait_random_exponential(multiplier=half_base, max=half_max),
        retry=tenacity.retry_if_exception(is_transient),
        sleep=_sleep,
        reraise=True,  # the operation's own error, not tenacity's RetryError
    )
    try:
        return retrying(fn)
    except FileNotFoundError:
        raise
    except Exception as exc:  # every error leaves classified, as a StorageError
        err = classify_error(exc, what)
        if err is exc:
            raise
        if err.transient:  # still failing after the last attempt
            err.args = (f"{err.args[0]} (gave up after {tries} attempts)",)
        raise err from exc


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at call time: tests replace time.sleep


class Storage:
    """Atomic, root-confined reads and writes for one storage root.

    Parameters
    ----------
    root : str
        A local folder (absolute or relative, created on first write) or a ``gs://``,
        ``s3://`` or ``memory://`` prefix.
    options : dict, optional
        fsspec storage options for remote roots (for example ``{"token": "anon"}`` or an
        ``endpoint_url`` for an emulator).
    fsync : bool
        Flush local files to disk before committing them (survives a power cut, not only a
        killed process).
    """

    def __init__(self, root: str, options: dict[str, Any] | None = None, *, fsync: bool = True):
        self.remote = is_remote(root)
        if self.remote:
            self.root = root.rstrip("/")
        else:
            path = root[len("file://") :] if root.startswith("file://") else root
            self.root = os.path.abspath(os.path.expanduser(path))
        self.options = dict(options or {})
        self.fsync = fsync
        self._fs: fsspec.AbstractFileSystem | None = None
        self._swept: set[str] = set()

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # -- paths -------------------------------------------------------------------------------

    def join(self, *parts: str) -> str:
        """The URI of ``root/part/part/...``; every part is one checked path component."""
        checked = [_check_component(p) for p in parts]
        return "/".join([self.root, *checked])

    def _local(self, uri: str) -> str:
        """Check that a local URI is under the root, following symlinks, and return it."""
        root_real = os.path.realpath(self.root)
        parent = os.path.realpath(os.path.dirname(uri))
        if parent != root_real and not parent.startswith(root_real + os.sep):
            raise UnsafePathError(f"{uri} resolves outside the storage root {self.root}")
        return uri

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec file system of a remote root (created on first use)."""
        if self._fs is None:
            import fsspec  # noqa: PLC0415 - only remote roots need it

            protocol = self.root.split("://", 1)[0]
            _quiet_driver_logs()
            try:
                if protocol in ("gs", "gcs") and os.environ.get(GCS_EMULATOR_ENV):
                    self._fs = _emulated_gcs(self.options)
                else:
                    self._fs = fsspec.filesystem(protocol, **self.options)
            except ImportError as exc:
                extra = {"gs": "gcp", "gcs": "gcp", "s3": "s3"}.get(protocol, protocol)
                raise StorageError(
                    f"storage root {self.root} needs the {protocol}:// driver: "
                    f"pip install 'klio-assets[{extra}]'"
                ) from exc
        return self._fs

    # -- queries -----------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        """Whether a committed file exists at ``uri``."""
        if not self.remote:
            return os.path.isfile(uri)

        def _exists() -> bool:
            # Not fs.isfile: fsspec answers False for *any* error there, so an unreachable
            # store looked like missing outputs (and the tracks were recomputed).
            try:
                return bool(self.fs.info(uri).get("type") == "file")
            except FileNotFoundError:
                return False

        return retry_transient(_exists, what=f"check {uri}")

    def modified(self, uri: str) -> float | None:
        """When the file at ``uri`` was last committed, in seconds since the epoch, by the
        store's own clock (None when there is no file)."""
        if not self.remote:
            try:
                return os.stat(uri).st_mtime
            except FileNotFoundError:
                return None

        def _modified() -> float | None:
            try:
                return float(self.fs.modified(uri).timestamp())
            except FileNotFoundError:
                return None

        return retry_transient(_modified, what=f"stat {uri}")

    def check_reachable(self, *, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
        """Fail fast, in one line, when a remote root cannot be reached.

        An unreachable ``gs://`` root (no credentials, a refused connection) otherwise costs
        minutes: gcsfs retries each request six times inside every one of our own retries.
        One request (the root's metadata; a missing root is an answer) gets ``timeout_s``.

        Raises
        ------
        StorageError
            No answer in time, or an error that is not "not found".
        """
        if not self.remote:
            return
        outcome: dict[str, BaseException | None] = {}

        def probe() -> None:
            try:
                self.fs.info(self.root)
                outcome["error"] = None
            except FileNotFoundError:
                outcome["error"] = None
            except Exception as exc:  # classified and reported below
                outcome["error"] = exc

        thread = threading.Thread(target=probe, name="klio-storage-probe", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if "error" not in outcome:
            raise StorageError(
                f"storage {self.root}: no answer within {timeout_s:g} s (check the network, "
                "the credentials and the bucket name)"
            )
        error = outcome["error"]
        if error is not None:
            raise classify_error(error, f"reach storage {self.root}") from error

    def list_names(self, folder_uri: str) -> list[str]:
        """Names of committed files directly in ``folder_uri`` (temporary files excluded)."""
        if not self.remote:
            try:
                with os.scandir(folder_uri) as it:
                    return [e.name for e in it if not e.name.startswith(".") and e.is_file()]
            except FileNotFoundError:
                return []

        def _ls() -> list[str]:
            # gcsfs and s3fs cache listings: a folder listed again (the results channel
            # polls one) must show what was written since
            self.fs.invalidate_cache(folder_uri)
            try:
                entries = self.fs.ls(folder_uri, detail=False)
            except FileNotFoundError:
                return []
            names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
            return [n for n in names if not n.startswith(".")]

        return retry_transient(_ls, what=f"list {folder_uri}")

    # -- reads -------------------------------------------------------------------------------

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of a (small) file."""
        if not self.remote:
            try:
                with open(uri, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise classify_error(exc, f"read {uri}") from exc
        return retry_transient(lambda: cast(bytes, self.fs.cat_file(uri)), what=f"read {uri}")

    def read_json(self, uri: str) -> Any:
        """A JSON document (never a pickle)."""
        return json.loads(self.read_bytes(uri))

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[str]:
        """A local path holding the file at ``uri`` (the file itself when the root is local)."""
        if not self.remote:
            yield uri
            return
        suffix = os.path.splitext(uri)[1]
        fd, tmp = tempfile.mkstemp(prefix="klio-", suffix=suffix)
        os.close(fd)
        try:
            retry_transient(lambda: self.fs.get_file(uri, tmp), what=f"download {uri}")
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- writes ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic_path(self, uri: str, *, durable: bool = True) -> Iterator[str]:
        """Yield a local temporary path; when the block succeeds, commit it to ``uri``.

        On any exception the temporary file is removed and nothing appears at ``uri``.
        ``durable=False`` skips the flush to disk (scratch records, indexes that can be
        rebuilt): the commit is still atomic for a killed process, not for a power cut.
        """
        name = uri.rsplit("/", 1)[-1]
        if self.remote:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp-{uuid.uuid4().hex[:8]}")
            os.close(fd)
        else:
            self._local(uri)
            folder = os.path.dirname(uri)
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise classify_error(exc, f"write {uri} (creating folder {folder})") from exc
            self.sweep_stale_temporaries(folder)
            tmp = os.path.join(folder, f".{name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            try:
                yield tmp
            except OSError as exc:  # the writer hit the file system: say what, in plain words
                raise classify_error(exc, f"write {uri}") from exc
            except RuntimeError as exc:  # libsndfile reports ENOSPC/EROFS as "System error"
                cause = None if self.remote else _write_failure_cause(os.path.dirname(tmp))
                if cause is None:
                    raise
                raise StorageError(f"write {uri}: {cause}") from exc
            self._commit(tmp, uri, durable=durable)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def sweep_stale_temporaries_below(self, folder: str) -> None:
        """:meth:`sweep_stale_temporaries` in every sub-folder of ``folder`` (one level)."""
        if self.remote:
            return
        try:
            with os.scandir(folder) as it:
                subfolders = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for sub in subfolders:
            self.sweep_stale_temporaries(sub)

    def sweep_stale_temporaries(self, folder: str, *, again: bool = False) -> None:
        """Remove temporary files left in ``folder`` by writers killed on this host (their
        process is gone), once per folder and Storage (``again``: even if swept before).
        Temporaries are never taken for outputs anyway; this only keeps a crash from leaving
        garbage behind. Local roots only."""
        if self.remote or (folder in self._swept and not again):
            return
        self._swept.add(folder)
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it if e.name.startswith(".") and ".tmp-" in e.name]
        except OSError:
            return
        for name in names:
            host, _, rest = name.rsplit(".tmp-", 1)[1].partition("-")
            pid = rest.partition("-")[0]
            if host == _HOST and pid.isdigit() and not _process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))

    def _commit(self, tmp: str, uri: str, *, durable: bool) -> None:
        if self.remote:
            retry_transient(lambda: self.fs.put_file(tmp, uri), what=f"upload {uri}")
            return
        try:
            if self.fsync and durable:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, uri)
        except OSError as exc:
            raise classify_error(exc, f"write {uri}") from exc

    def write_bytes(self, uri: str, data: bytes, *, durable: bool = True) -> None:
        """Write ``data`` to ``uri`` atomically (see :meth:`atomic_path` for ``durable``)."""
        with self.atomic_path(uri, durable=durable) as tmp:
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
            except OSError as exc:
                raise classify_error(exc, f"write {uri}") from exc

    def write_json(self, uri: str, obj: Any, *, durable: bool = True) -> None:
        """Write ``obj`` as JSON to ``uri`` atomically."""
        self.write_bytes(
            uri, json.dumps(obj, sort_keys=True, allow_nan=False).encode(), durable=durable
        )

    def copy(self, src: str, dst: str) -> None:
        """Copy a committed file to another name under the root, atomically."""
        if self.remote:
            retry_transient(lambda: self.fs.copy(src, dst), what=f"copy {src} to {dst}")
            return
        with self.atomic_path(dst) as tmp:
            try:
                shutil.copyfile(src, tmp)
            except OSError as exc:
                raise classify_error(exc, f"copy {src} to {dst}") from exc

    def delete(self, uri: str) -> bool:
        """Remove the file at ``uri`` (under the root, symlinks followed); whether it was there."""
        if not self.remote:
            try:
                os.unlink(self._local(uri))
            except FileNotFoundError:
                return False
            return True
        try:
            retry_transient(lambda: self.fs.rm_file(uri), what=f"delete {uri}")
        except FileNotFoundError:
            return False
        return True

    def delete_tree(self, folder_uri: str) -> None:
        """Remove a folder and everything in it, if it exists."""
        if not self.remote:
            shutil.rmtree(folder_uri, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            retry_transient(
                lambda: self.fs.rm(folder_uri, recursive=True), what=f"delete {folder_uri}"
            )


#: Below this much free space, a writer's unexplained failure is put down to a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def _write_failure_cause(folder: str) -> str | None:
    """Why a write into ``folder`` may have failed when the writer did not say (libsndfile
    reports a full disk or a read-only file system as "System error"), or ``None``."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return os.strerror(errno.EROFS)
    if not os.access(folder, os.W_OK):
        return os.strerror(errno.EACCES)
    free = stat.f_bavail * stat.f_frsize
    if free < _NEARLY_FULL_BYTES:
        return f"{os.strerror(errno.ENOSPC)} ({free // 1024} KiB free)"
    return None


def hash_file(path: str, *, chunk_bytes: int = 1 << 20) -> str:
    """``blake3:<hex>`` of a local file's bytes, the content key that deduplication uses.

    BLAKE3 is a cryptographic hash (an attacker cannot make two sources share results) and
    about 2.7 times as fast as SHA-256 here (0.6 vs 1.7 CPU-s for the 3 GB of
    ``benchmarks/throughput.py``: SHA-256 was 4 % of a run's CPU). It releases the GIL.
    """
    digest = blake3.blake3()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])
    return f"blake3:{digest.hexdigest()}"


@contextlib.contextmanager
def open_source(uri: str, options: dict[str, Any] | None = None) -> Iterator[str]:
    """A local path for a track's source audio, downloaded first when it is remote.

    Raises
    ------
    FileNotFoundError
        The source does not exist.
    StorageError
        It cannot be read, or it is not a regular file (a FIFO would block a decoder).
    """
    if not is_remote(uri):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        _check_local_source(path)
        yield path
        return
    scheme, rest = uri.split("://", 1)
    storage = Storage(f"{scheme}://{rest.split('/', 1)[0]}", options)
    with storage.local_copy(uri) as path:
        yield path


def _check_local_source(path: str) -> None:
    """Refuse a local source that is not (or no longer) a plain regular file.

    ``add`` stores symlinks resolved, so a source that is a symlink now was swapped for one
    after it was registered: following it could read any file the worker can. The final
    component is opened with ``O_NOFOLLOW`` and checked with ``fstat`` on that descriptor,
    so a swap between the check and the open is caught too; a swap after it (before the
    decoder opens the path) remains possible and is caught by the next run.

    Raises
    ------
    FileNotFoundError
        Nothing is there.
    StorageError
        A symlink, a folder, a FIFO or a device, or unreadable.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if stat_module.S_ISLNK(st.st_mode):
        raise StorageError(
            f"{path} is a symlink (to {os.path.realpath(path)}), not the regular file that was "
            "registered: refused (add stores symlinks resolved; a file replaced by a link after "
            "add could lead anywhere)"
        )
    if not stat_module.S_ISREG(st.st_mode):
        # a FIFO or a device would block a decoder forever; a folder is a mistake
        raise StorageError(f"{path} is not a regular file (a folder, FIFO or device)")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{path} is now a symlink: refused") from exc
        raise StorageError(f"{path}: cannot open it ({exc.strerror or exc})") from exc
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise StorageError(f"{path} is not a regular file (a folder, FIFO or device)")
    finally:
        os.close(fd)


#: Fields of an object's metadata that change when it is rewritten, by preference.
_OBJECT_STAMPS = ("generation", "ETag", "etag", "mtime", "updated", "LastModified", "created")


#: Object-store stats made at once by :func:`source_stats` (each is one HTTP round trip).
STAT_THREADS = 16


def source_stats(
    uris: Mapping[str, str], options: dict[str, Any] | None = None
) -> dict[str, SourceStat | None]:
    """:func:`source_stat` of many sources (key to stat): local ones in turn, object URIs
    :data:`STAT_THREADS` at a time (a sweep of a bucket is round trips, not CPU)."""
    remote = [key for key, uri in uris.items() if is_remote(uri)]
    out = {key: source_stat(uri, options) for key, uri in uris.items() if not is_remote(uri)}
    if remote:
        with concurrent.futures.ThreadPoolExecutor(min(STAT_THREADS, len(remote))) as pool:
            stats = pool.map(lambda key: source_stat(uris[key], options), remote)
            out.update(zip(remote, stats, strict=True))
    return out


def source_stat(uri: str, options: dict[str, Any] | None = None) -> SourceStat | None:
    """One stat of a track's source (no read, no hash): its size and modification stamp.

    Parameters
    ----------
    uri : str
        A local path or an object URI.
    options : dict, optional
        Storage options for an object store.

    Returns
    -------
    SourceStat or None
        None when the source cannot be stat'ed (missing, unreachable): unknown, not changed.
    """
    try:
        if not is_remote(uri):
            st = os.stat(uri[len("file://") :] if uri.startswith("file://") else uri)
            return SourceStat(size_bytes=st.st_size, modified=str(st.st_mtime_ns))
        scheme, rest = uri.split("://", 1)
        info = Storage(f"{scheme}://{rest.split('/', 1)[0]}", options).fs.info(uri)
    except (OSError, KlioAssetsError, ValueError):
        return None
    stamp = next((info[k] for k in _OBJECT_STAMPS if info.get(k) is not None), None)
    if stamp is None:
        return None
    return SourceStat(size_bytes=int(info.get("size") or 0), modified=str(stamp))
