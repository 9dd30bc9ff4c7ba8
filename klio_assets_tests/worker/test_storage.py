"""Storage: atomic commits, confinement to the root, transient vs permanent errors."""

import errno
import http.client
import os
import time

import pytest

from klio_assets.errors import ParameterError, StorageError, TransientStorageError, UnsafePathError
from klio_assets.worker.storage import Storage, classify_error, is_transient, retry_transient


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
    """Named like aiohttp's, but not it: errors are classified by type, never by name."""


class _HttpError(Exception):
    def __init__(self, code):
        super().__init__(f"{code}")
        self.code = code


def _aiohttp(name, *args):
    import aiohttp

    return getattr(aiohttp, name)(*args)


def _botocore(name, **kwargs):
    import botocore.exceptions

    return getattr(botocore.exceptions, name)(**kwargs)


def _api_core(name):
    import google.api_core.exceptions

    return getattr(google.api_core.exceptions, name)("answer")


def _response_error(status):
    import aiohttp
    from yarl import URL

    url = URL("https://storage.example/b/o")
    info = aiohttp.RequestInfo(url=url, method="GET", headers={}, real_url=url)
    return aiohttp.ClientResponseError(info, (), status=status, message="answer")


def _requests(name):
    import requests

    return getattr(requests.exceptions, name)("dropped")


def _urllib3_protocol():
    import urllib3

    return urllib3.exceptions.ProtocolError("Connection aborted.")


def _google_auth_transport():
    import google.auth.exceptions

    return google.auth.exceptions.TransportError("token refresh failed")


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: _ClientError("SlowDown", 503), True),
        (lambda: _ClientError("ThrottlingException", 400), True),
        (lambda: _ClientError("AccessDenied", 403), False),
        (lambda: _ClientError("NoSuchBucket", 404), False),
        (lambda: ServerDisconnectedError("Server disconnected"), False),
        (lambda: _aiohttp("ServerDisconnectedError", "Server disconnected"), True),
        (lambda: _aiohttp("ClientPayloadError", "Response payload is not completed"), True),
        (lambda: _response_error(503), True),
        (lambda: _response_error(404), False),
        (lambda: _botocore("EndpointConnectionError", endpoint_url="http://s3"), True),
        (lambda: _botocore("ReadTimeoutError", endpoint_url="http://s3"), True),
        (lambda: _botocore("ConnectionClosedError", endpoint_url="http://s3"), True),
        (lambda: _botocore("NoCredentialsError"), False),
        (lambda: _api_core("ServiceUnavailable"), True),
        (lambda: _api_core("TooManyRequests"), True),
        (lambda: _api_core("Forbidden"), False),
        (lambda: _requests("ChunkedEncodingError"), True),
        (lambda: _requests("InvalidURL"), False),
        (_urllib3_protocol, True),
        (_google_auth_transport, True),
        (lambda: http.client.IncompleteRead(b"partial"), True),
        (lambda: _HttpError(502), True),
        (lambda: _HttpError("429"), True),
        (lambda: _HttpError(401), False),
        (lambda: ConnectionResetError("reset"), True),
        (lambda: TimeoutError("slow"), True),
        (lambda: OSError(errno.EROFS, "Read-only file system"), False),
        (lambda: ValueError("bad"), False),
    ],
)
def test_cloud_client_errors_are_classified_by_type_and_status(make, transient):
    exc = make()
    assert is_transient(exc) is transient
    assert classify_error(exc, "write x").transient is transient


def test_a_permanent_error_is_tried_once_and_says_no_attempts(monkeypatch):
    slept = []
    monkeypatch.setattr("klio_assets.worker.storage.time.sleep", slept.append)
    calls = []

    def forbidden():
        calls.append(1)
        raise _HttpError(403)

    with pytest.raises(StorageError) as caught:
        retry_transient(forbidden, what="write w")
    assert len(calls) == 1 and slept == []
    assert not caught.value.transient and "attempts" not in str(caught.value)
    assert str(caught.value) == "write w: 403"


def test_a_transient_error_is_tried_exactly_the_default_five_times(monkeypatch):
    import aiohttp

    slept = []
    monkeypatch.setattr("klio_assets.worker.storage.time.sleep", slept.append)
    calls = []

    def dropped():
        calls.append(1)
        raise aiohttp.ServerDisconnectedError("Server disconnected")

    with pytest.raises(TransientStorageError, match=r"gave up after 5 attempts") as caught:
        retry_transient(dropped, what="read v")
    assert len(calls) == 5 and len(slept) == 4
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


def test_a_missing_file_passes_through_untried_again():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gs://b/x")

    with pytest.raises(FileNotFoundError):
        retry_transient(missing, what="read u", base_delay=0.001)
    assert len(calls) == 1


def test_at_least_one_try():
    with pytest.raises(ParameterError, match="tries=0"):
        retry_transient(lambda: 1, what="read t", tries=0)


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


def test_temporaries_of_a_killed_writer_not_yet_reaped_are_swept(tmp_path):
    """A killed worker whose parent died too stays a zombie until something reaps it (in a
    container whose first process does not, for ever): it writes nothing more, so its
    temporaries are garbage although kill(pid, 0) still succeeds."""
    import subprocess
    import time

    from klio_assets.worker import storage as storage_module

    zombie = subprocess.Popen(["true"])  # exits at once; not waited for, so a zombie
    deadline = time.monotonic() + 10
    while b") Z " not in open(f"/proc/{zombie.pid}/stat", "rb").read():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(zombie.pid, 0)  # still "exists" for kill()
    folder = tmp_path / "root" / "a"
    folder.mkdir(parents=True)
    stale = folder / f".x.flac.tmp-{storage_module._HOST}-{zombie.pid}-deadbeef"
    stale.write_bytes(b"partial")
    storage = Storage(str(tmp_path / "root"))
    storage.write_bytes(storage.join("a", "out.json"), b"{}")
    zombie.wait()
    assert os.listdir(folder) == ["out.json"]


def test_an_unreachable_remote_root_fails_fast_in_one_line(monkeypatch):
    """gcsfs retries every request six times inside our own retries: an unreachable gs://
    root once took 5+ minutes and thousands of log lines. The probe answers within its limit."""
    import time

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # connection refused
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"storage gs://nobucket/x: no answer within 3 s"):
        Storage("gs://nobucket/x").check_reachable(timeout_s=3)
    assert time.monotonic() - started < 10


def test_exists_on_an_unreachable_store_is_an_error_not_a_missing_file(monkeypatch):
    """fsspec's isfile answers False for any error: missing outputs would be recomputed (and
    their writes fail) instead of the store's problem being reported."""
    store = Storage("memory://klio-unreachable")

    def refuse(path, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(store.fs, "info", refuse)
    monkeypatch.setattr("klio_assets.worker.storage.time.sleep", lambda s: None)
    with pytest.raises(StorageError, match="gave up after 5 attempts"):
        store.exists("memory://klio-unreachable/a.json")


def test_a_new_engine_sweeps_content_index_entries_half_written_by_a_killed_run(tmp_path):
    """A run killed between committing an output and its content-index entry leaves a
    temporary in the index; that track is skipped from then on, so no write into that index
    folder would ever sweep it: the next run's engine does."""
    import subprocess

    from klio_assets.analyses import downsampled_audio
    from klio_assets.worker import storage as storage_module
    from klio_assets.worker.execution import Engine
    from klio_assets.worker.plan import Layout, RunPlan, plan_analyses

    dead = subprocess.Popen(["true"])
    dead.wait()
    planned = plan_analyses([downsampled_audio])
    root = str(tmp_path / "out")
    folder = os.path.join(Layout(Storage(root)).content_folder(planned["downsampled_audio"]), "9d")
    os.makedirs(folder)
    stale = os.path.join(folder, f".9d00.json.tmp-{storage_module._HOST}-{dead.pid}-deadbeef")
    open(stale, "wb").close()
    plan = RunPlan(run_id="r", storage_root=root, analyses=planned, selected=["downsampled_audio"])
    Engine(plan)
    assert os.listdir(folder) == []


@pytest.mark.parametrize("remote", [False, True], ids=["local", "fsspec"])
def test_modified_is_the_commit_time_by_the_stores_clock(tmp_path, remote):
    """What a relaunched worker's skips are compared with (outputs committed by this run)."""
    storage = Storage("memory://klio-modified" if remote else str(tmp_path))
    first, second = storage.join("a.json"), storage.join("b.json")
    assert storage.modified(first) is None
    storage.write_json(first, {"n": 1})
    time.sleep(0.02)
    storage.write_json(second, {"n": 2})
    before, after = storage.modified(first), storage.modified(second)
    assert before is not None and after is not None
    assert after > before and abs(after - time.time()) < 60


def test_source_stats_of_local_files_and_objects_with_missing_ones_unknown(tmp_path):
    """A sweep stats many sources: object URIs several at once, each as source_stat would."""
    from klio_assets.worker.storage import source_stat, source_stats

    local = tmp_path / "a.wav"
    local.write_bytes(b"1234")
    objects = Storage("memory://klio-stats")
    for i in range(20):
        objects.write_bytes(objects.join(f"o{i}.wav"), b"x" * i)
    uris = {
        "a": str(local),
        "gone": str(tmp_path / "gone.wav"),
        "gone-object": objects.join("gone.wav"),
        **{f"o{i}": objects.join(f"o{i}.wav") for i in range(20)},
    }
    stats = source_stats(uris)
    assert stats == {key: source_stat(uri) for key, uri in uris.items()}
    assert stats["a"].size_bytes == 4 and stats["o7"].size_bytes == 7
    assert stats["gone"] is None and stats["gone-object"] is None
