"""Services that tests start for real: a GCS emulator, an S3 server (moto), Beam's portable job
service with a pool of external SDK workers.

Each is a context manager that starts the service in its own process on a free loopback port,
waits until it answers, yields its address and stops it on exit. A service that does not come
up raises :class:`ServiceError` with its log: tests fail loudly rather than skip.

::

    with gcs_emulator(tmp_path, bucket="klio") as endpoint:   # http://127.0.0.1:<port>
        env = {"STORAGE_EMULATOR_HOST": endpoint}
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from klio_assets_tests.support.postgres import free_port

_START_TIMEOUT_S = 60


#: What a process talking to the GCS emulator needs (gcsfs, google-cloud-storage, Beam's gcsio),
#: and nothing that could reach real Google Cloud: anonymous access, no metadata-server probe.
def gcs_emulator_env(endpoint: str) -> dict[str, str]:
    """Environment pointing every GCS client at the emulator at ``endpoint``."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "true",
        "GOOGLE_CLOUD_PROJECT": "klio-test-project",
    }


def s3_server_env(endpoint: str) -> dict[str, str]:
    """Environment pointing boto3/s3fs at the S3 server at ``endpoint`` with dummy keys."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class ServiceError(RuntimeError):
    """A test service could not be started."""


def _tool(name: str) -> str:
    """A console script of this virtualenv (next to the interpreter), else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ServiceError(
            f"{name} is not installed: pip install -e '.[test]' (scripts/setup.sh --test)"
        )
    return found


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise ServiceError(
        f"{what} did not listen on 127.0.0.1:{port} within {_START_TIMEOUT_S} s:\n{_tail(log)}"
    )


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process_group(proc: subprocess.Popen, *, grace_s: float = 30) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), then
    SIGKILL it if it has not ended within ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def _process(
    cmd: list[str], *, port: int, workdir: Path, what: str, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{what.replace(' ', '-')}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stopped with its children
        )
    try:
        _wait_for_port(port, proc, log, what)
        yield proc
    finally:
        stop_process_group(proc, grace_s=10)


@contextlib.contextmanager
def gcs_emulator(workdir: str | os.PathLike[str], *, bucket: str) -> Iterator[str]:
    """``gcp-storage-emulator`` (PyPI) in memory, with ``bucket`` created; yields its URL."""
    port = free_port()
    cmd = [
        _tool("gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        bucket,
    ]
    with _process(cmd, port=port, workdir=Path(workdir), what="gcs emulator"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def s3_server(workdir: str | os.PathLike[str], *, bucket: str) -> Iterator[str]:
    """moto in server mode, with ``bucket`` created; yields its URL."""
    port = free_port()
    cmd = [_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with _process(cmd, port=port, workdir=Path(workdir), what="moto server"):
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        env = s3_server_env(endpoint)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
        yield endpoint


@dataclass(frozen=True)
class PortableBeam:
    """Beam's local job service and an external SDK worker pool, each in its own process.

    Attributes
    ----------
    job_endpoint : str
        ``localhost:<port>`` of the job service (``--job_endpoint``).
    worker_pool : str
        ``localhost:<port>`` of the worker pool (``--environment_config``).
    """

    job_endpoint: str
    worker_pool: str
    worker_pool_log: Path

    def pipeline_args(self) -> list[str]:
        """Beam options that run a pipeline there, with SDK workers from the pool."""
        return [
            "--runner=PortableRunner",
            f"--job_endpoint={self.job_endpoint}",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.worker_pool}",
        ]


@contextlib.contextmanager
def portable_beam(
    workdir: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> Iterator[PortableBeam]:
    """Start the job service and the worker pool (separate processes and working folders).

    Parameters
    ----------
    workdir : path
    env : mapping, optional
        Extra environment of the SDK workers (e.g. a storage emulator's address): workers see
        only what their own process is given, never the driver's memory.
    """
    root = Path(workdir)
    # The pool starts each SDK worker as `python -c ...`: this virtualenv's python must be first.
    worker_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    job_port, pool_port = free_port(), free_port()
    job_cmd = [
        sys.executable,
        "-m",
        "apache_beam.runners.portability.local_job_service_main",
        "--port",
        str(job_port),
    ]
    pool_cmd = [
        sys.executable,
        "-m",
        "apache_beam.runners.worker.worker_pool_main",
        "--service_port",
        str(pool_port),
    ]
    with (
        _process(
            pool_cmd,
            port=pool_port,
            workdir=root / "worker-pool",
            what="beam worker pool",
            env=worker_env,
        ),
        _process(job_cmd, port=job_port, workdir=root / "job-service", what="beam job service"),
    ):
        yield PortableBeam(
            job_endpoint=f"localhost:{job_port}",
            worker_pool=f"localhost:{pool_port}",
            worker_pool_log=root / "worker-pool" / "beam-worker-pool.log",
        )
