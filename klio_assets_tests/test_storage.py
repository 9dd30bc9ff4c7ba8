"""Storage: atomic commits, confinement to the root, transient vs permanent errors."""

import errno
import os

import pytest

from klio_assets.errors import StorageError, TransientStorageError, UnsafePathError
from klio_assets.worker.storage import Storage, classify_error, retry_transient


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    uri = storage.join("a", "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert os.listdir(os.path.dirname(uri)) == ["b.json"]


def test_failed_write_leaves_nothing_under_the_output_name(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    uri = storage.join("a", "out.flac")
    with pytest.raises(RuntimeError), storage.atomic_path(uri) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half a file")
        raise RuntimeError("crash while writing")
    assert not storage.exists(uri)
    assert os.listdir(os.path.dirname(uri)) == []


def test_temporary_files_are_not_listed_as_outputs(tmp_path):
    storage = Storage(str(tmp_path / "root"))
    folder = storage.join("a")
    os.makedirs(folder)
    open(os.path.join(folder, ".x.flac.tmp-123"), "w").close()
    storage.write_bytes(storage.join("a", "y.flac"), b"1")
    assert storage.list_names(folder) == ["y.flac"]


@pytest.mark.parametrize("part", ["..", ".", "a/b", "", "x\x00", "a\\b"])
def test_join_refuses_unsafe_components(tmp_path, part):
    with pytest.raises(UnsafePathError):
        Storage(str(tmp_path)).join("analysis", part)


def test_symlink_inside_the_root_cannot_redirect_writes_outside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "downsampled_audio")
    storage = Storage(str(root))
    with pytest.raises(UnsafePathError, match="outside the storage root"):
        storage.write_bytes(storage.join("downsampled_audio", "x.flac"), b"data")
    assert os.listdir(outside) == []


def test_copy_is_atomic_and_complete(tmp_path):
    storage = Storage(str(tmp_path))
    src, dst = storage.join("a", "src.bin"), storage.join("b", "dst.bin")
    storage.write_bytes(src, os.urandom(100_000))
    storage.copy(src, dst)
    assert storage.read_bytes(dst) == storage.read_bytes(src)


def test_write_to_a_read_only_folder_fails_with_a_plain_reason(tmp_path):
    if os.geteuid() == 0:
        # root ignores permissions; an unwritable target is made by a non-directory parent
        storage = Storage(str(tmp_path))
        (tmp_path / "a").write_text("a file where a folder should be")
        with pytest.raises(StorageError, match="creating folder"):
            storage.write_bytes(storage.join("a", "x.json"), b"{}")
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    storage = Storage(str(tmp_path))
    with pytest.raises(StorageError, match="Permission denied"):
        storage.write_bytes(storage.join("ro", "x.json"), b"{}")


def test_disk_full_is_permanent_and_connection_reset_is_transient():
    full = classify_error(OSError(errno.ENOSPC, "No space left on device"), "write x")
    reset = classify_error(ConnectionResetError("reset by peer"), "write x")
    assert not full.transient and "No space left" in str(full)
    assert reset.transient and isinstance(reset, TransientStorageError)


def test_retry_transient_retries_then_succeeds_and_never_retries_permanent_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert retry_transient(flaky, what="read x", base_delay=0.001) == "ok"
    assert len(calls) == 3

    permanent = []

    def full():
        permanent.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError):
        retry_transient(full, what="write y", base_delay=0.001)
    assert len(permanent) == 1


def test_retry_gives_up_after_the_bounded_number_of_tries():
    calls = []

    def always():
        calls.append(1)
        raise TimeoutError("slow")

    with pytest.raises(TransientStorageError, match="gave up after 4 attempts"):
        retry_transient(always, what="read z", tries=4, base_delay=0.001)
    assert len(calls) == 4


class _ClientError(Exception):
    """Shaped like botocore's ClientError: the answer is in ``response``."""

    def __init__(self, code: str, status: int):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class ServerDisconnectedError(Exception):
    """Named like aiohttp's (which gcsfs and s3fs use); not a built-in ConnectionError."""


class _HttpError(Exception):
    def __init__(self, code):
        super().__init__(f"{code}")
        self.code = code


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_ClientError("SlowDown", 503), True),
        (_ClientError("ThrottlingException", 400), True),
        (_ClientError("AccessDenied", 403), False),
        (_ClientError("NoSuchBucket", 404), False),
        (ServerDisconnectedError("Server disconnected"), True),
        (_HttpError(502), True),
        (_HttpError("429"), True),
        (_HttpError(401), False),
        (ConnectionResetError("reset"), True),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (ValueError("bad"), False),
    ],
)
def test_cloud_client_errors_are_classified(exc, transient):
    assert classify_error(exc, "write x").transient is transient


def test_temporaries_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    import subprocess

    from klio_assets.worker import storage as storage_module

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that is gone
    folder = tmp_path / "root" / "a"
    folder.mkdir(parents=True)
    host = storage_module._HOST
    stale = folder / f".x.flac.tmp-{host}-{dead.pid}-deadbeef"
    live = folder / f".y.flac.tmp-{host}-{os.getpid()}-cafebabe"
    other_host = folder / f".z.flac.tmp-00000000-{dead.pid}-12345678"
    for path in (stale, live, other_host):
        path.write_bytes(b"partial")
    storage = Storage(str(tmp_path / "root"))
    storage.write_bytes(storage.join("a", "out.json"), b"{}")
    assert sorted(os.listdir(folder)) == sorted([live.name, other_host.name, "out.json"])
