"""A throwaway PostgreSQL server for tests and benchmarks, from Debian's server binaries.

::

    with running_postgres(tmp_path) as pg:
        pg.create_database("dagster")
        (home / "dagster.yaml").write_text(pg.dagster_yaml("dagster"))
        engine = sqlalchemy.create_engine(pg.url("dagster"))

The server listens on 127.0.0.1 only, on a free port, with trust authentication for the
superuser ``postgres``, and no Unix socket. It is stopped and its data directory deleted on
exit. ``initdb`` and ``pg_ctl`` refuse to run as root, so as root the server runs as an
unprivileged user (``nobody`` by default) that owns the data directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Where Debian's ``postgresql`` package installs the server binaries.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
_BINARIES = ("initdb", "pg_ctl", "postgres")
_START_ATTEMPTS = 3
_TIMEOUT_S = 60


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL server could not be set up, started or used."""


class PostgresNotInstalled(PostgresError):
    """The server binaries are missing (tests may skip on this one)."""


def find_server_binaries(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Parameters
    ----------
    bin_dir : path, optional
        Use this folder; by default the one ``initdb`` on ``PATH`` resolves to, else the
        newest ``/usr/lib/postgresql/<version>/bin``.

    Raises
    ------
    PostgresNotInstalled
        Naming the binaries missing and the package that provides them.
    """
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    else:
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(os.path.realpath(on_path)).parent)
        versions = glob.glob(DEBIAN_BIN_GLOB)
        versions.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
        candidates.extend(Path(p) for p in versions)
    best_missing: list[str] = list(_BINARIES)
    for folder in candidates:
        missing = [b for b in _BINARIES if not os.access(folder / b, os.X_OK)]
        if not missing:
            return folder
        if len(missing) < len(best_missing):
            best_missing = missing
    searched = str(bin_dir) if bin_dir is not None else f"PATH and {DEBIAN_BIN_GLOB}"
    raise PostgresNotInstalled(
        f"PostgreSQL server binaries not found: {', '.join(best_missing)} (searched {searched}). "
        "Install them with `apt-get install postgresql` (Debian's package puts initdb, pg_ctl "
        "and postgres in /usr/lib/postgresql/<version>/bin)."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server (see :func:`running_postgres`).

    Attributes
    ----------
    host : str
        Always ``127.0.0.1``.
    port : int
    user : str
        The superuser (trust authentication, no password).
    data_dir : Path
    """

    host: str
    port: int
    user: str
    data_dir: Path

    def url(self, db_name: str = "postgres") -> str:
        """SQLAlchemy URL of database ``db_name`` (``postgresql+psycopg2://...``)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{db_name}"

    def dsn(self, db_name: str = "postgres") -> str:
        """libpq connection string of database ``db_name`` (for ``psycopg2.connect``)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={db_name}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL.

        Raises
        ------
        PostgresError
            ``name`` is not a plain identifier, or the server refused.
        """
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise PostgresError(f"database name {name!r} must be a plain identifier")
        import psycopg2

        try:
            conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        except psycopg2.Error as exc:
            raise PostgresError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        except psycopg2.Error as exc:
            raise PostgresError(f"cannot create database {name!r}: {exc}") from exc
        finally:
            conn.close()
        return self.url(name)

    def dagster_yaml(self, db_name: str) -> str:
        """Text of a ``dagster.yaml`` putting every Dagster storage in database ``db_name``
        through dagster-postgres (with the ``postgresql+psycopg2`` scheme SQLAlchemy 2.1 needs),
        the event log through klio-assets' batched subclass, all three with pooled connections (as
        ``deploy/dagster.yaml``),
        telemetry off."""
        db = (
            "    postgres_db:\n"
            f"      username: {self.user}\n"
            f"      hostname: {self.host}\n"
            f"      port: {self.port}\n"
            f"      db_name: {db_name}\n"
            "      scheme: postgresql+psycopg2\n"
        )
        return (
            "run_storage:\n  module: klio_assets.postgres_events\n  class: PooledPostgresRunStorage\n"
            f"  config:\n{db}"
            "event_log_storage:\n  module: klio_assets.postgres_events\n  class: BatchedPostgresEventLogStorage\n"
            f"  config:\n{db}"
            "schedule_storage:\n  module: klio_assets.postgres_events\n  class: PooledPostgresScheduleStorage\n"
            f"  config:\n{db}"
            "telemetry:\n"
            "  enabled: false\n"
        )


def _server_user(run_as: str | None) -> str | None:
    """The account to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    return run_as or "nobody"


def _run(cmd: list[str], *, user: str | None, what: str) -> None:
    try:
        # subprocess switches user itself (setgid, setgroups, setuid): no runuser/su needed.
        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd="/",  # the server user may not be allowed into our working directory
        )
    except subprocess.CalledProcessError as exc:
        output = (exc.stdout + exc.stderr).strip()
        command = " ".join(cmd)
        raise PostgresError(f"{what} failed (exit {exc.returncode}): {command}\n{output}") from exc
    except subprocess.TimeoutExpired as exc:
        command = " ".join(cmd)
        raise PostgresError(f"{what} did not finish within {_TIMEOUT_S} s: {command}") from exc


def _reachable_by(user: str, folder: Path) -> bool:
    """Whether ``user`` may enter ``folder`` (it and every parent must let it through)."""
    probe = subprocess.run(["test", "-x", str(folder)], user=user, cwd="/", check=False)
    return probe.returncode == 0


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def running_postgres(
    base_dir: str | os.PathLike[str],
    *,
    bin_dir: str | os.PathLike[str] | None = None,
    run_as: str | None = None,
) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server; stop it and delete its data on exit.

    Parameters
    ----------
    base_dir : path
        Folder in which the data directory is created. As root, if the server user cannot
        enter it (pytest's ``tmp_path`` is private to root), the data directory goes to the
        system temporary folder instead.
    bin_dir : path, optional
        Folder of ``initdb``, ``pg_ctl`` and ``postgres`` (see :func:`find_server_binaries`).
    run_as : str, optional
        Account running the server when we are root (default ``nobody``); ignored otherwise.

    Yields
    ------
    PostgresServer
        Listening on 127.0.0.1, superuser ``postgres`` without password.

    Raises
    ------
    PostgresNotInstalled
        The server binaries are missing.
    PostgresError
        ``initdb`` or the server failed; the message carries their output.
    """
    bins = find_server_binaries(bin_dir)
    user = _server_user(run_as)
    base = Path(base_dir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    if user is not None and not _reachable_by(user, base):
        base = Path(tempfile.gettempdir())
    holder = Path(tempfile.mkdtemp(prefix="klio-postgres-", dir=base))
    data_dir = holder / "data"
    log = holder / "server.log"
    server: PostgresServer | None = None
    try:
        if user is not None:
            # mkdtemp made it 0700 for root; the server user must own it to create data/.
            entry = pwd.getpwnam(user)
            os.chown(holder, entry.pw_uid, entry.pw_gid)
        _run(
            [
                str(bins / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            user=user,
            what="initdb",
        )
        with open(data_dir / "postgresql.conf", "a") as fh:
            # TCP on loopback only; no Unix socket, so nothing lands in /var/run/postgresql.
            fh.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            try:
                _run(
                    [
                        str(bins / "pg_ctl"),
                        "start",
                        "-D",
                        str(data_dir),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(_TIMEOUT_S),
                        "-o",
                        f"-p {port}",
                    ],
                    user=user,
                    what="starting PostgreSQL",
                )
            except PostgresError as exc:
                # Another process may have taken the port between free_port() and bind().
                if "could not bind" in _log_tail(log) and attempt + 1 < _START_ATTEMPTS:
                    continue
                raise PostgresError(f"{exc}\nserver log:\n{_log_tail(log)}") from exc
            server = PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, data_dir=data_dir)
            break
        assert server is not None
        yield server
    finally:
        try:
            if (data_dir / "postmaster.pid").exists():  # also after a start that timed out
                stop = [str(bins / "pg_ctl"), "stop", "-D", str(data_dir), "-w", "-m"]
                try:
                    _run([*stop, "fast"], user=user, what="stopping PostgreSQL")
                except PostgresError:  # e.g. a client that does not let go
                    _run([*stop, "immediate"], user=user, what="stopping PostgreSQL (immediate)")
        finally:
            shutil.rmtree(holder, ignore_errors=True)


def postgres_dagster_home(postgres, home, monkeypatch) -> None:
    """Make ``home`` a ``DAGSTER_HOME`` whose storages use a new database of ``postgres``."""
    db = f"dagster_{uuid.uuid4().hex[:8]}"
    postgres.create_database(db)
    (home / "dagster.yaml").write_text(postgres.dagster_yaml(db))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
