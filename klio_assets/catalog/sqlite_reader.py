"""The queries of ``klio-assets run``'s all-done answer on a SQLite catalog, with ``sqlite3``.

A rerun of a finished batch is mostly Python imports (``benchmarks/rerun.py``); SQLAlchemy
alone is ~0.1 s of them. On a SQLite catalog the few reads that answer "all done" (the
ledger, the registered tracks, the source stats and the remembered failures) are plain
``SELECT`` statements, so they are made here with the standard library: the same tables
(:mod:`klio_assets.catalog.database` defines them, under the names of
:mod:`klio_assets.catalog.names`), the same answers as the
:class:`~klio_assets.catalog.database.TrackCatalog` methods of the same names (a test compares
them on one catalog). Nothing is ever written: the connection is ``query_only``, and a
catalog that does not exist yet, or lacks a table (one from before it), is not opened here
at all: SQLAlchemy creates what is missing on the full path. PostgreSQL catalogs always go
through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from klio_assets.catalog.names import (
    FAILURE_MEMORY_TABLE,
    FEATURES_TABLE,
    MATERIALIZED_TABLE,
    REMOVED,
    SOURCE_STATS_TABLE,
    TRACKS_TABLE,
)
from klio_assets.errors import CatalogError
from klio_assets.worker.records import SourceStat

__all__ = ["FailureMemoryRow", "SqliteCatalogReader", "open_sqlite_reader"]

#: The tables the all-done answer reads.
_TABLES = (
    TRACKS_TABLE,
    MATERIALIZED_TABLE,
    SOURCE_STATS_TABLE,
    FAILURE_MEMORY_TABLE,
    FEATURES_TABLE,
)
#: IDs per statement, as :data:`klio_assets.catalog.database.CHUNK` (SQLite allows 32766
#: bound variables).
_CHUNK = 5000


class FailureMemoryRow(NamedTuple):
    """One row of the remembered failures' table, by column name (as SQLAlchemy's rows)."""

    asset: str
    track_id: str
    version: str
    permanent: bool
    attempts: int
    reason: str
    error: str | None
    content_hash: str | None
    size_bytes: int | None
    modified: str | None
    run_id: str
    failed_at: float


def _sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///PATH`` URL; None for anything else (in memory, a
    driver or query options SQLAlchemy would interpret, another database)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = url[len(prefix) :]
    return path if path and path != ":memory:" else None


def open_sqlite_reader(url: str) -> SqliteCatalogReader | None:
    """A reader of the SQLite catalog at ``url``, or None where SQLAlchemy must open it.

    None when ``url`` is not a plain SQLite file URL, the file does not exist, or it lacks
    one of the tables read here (the full path creates them).

    Parameters
    ----------
    url : str
        The catalog's SQLAlchemy URL (``KLIO_ASSETS_CATALOG``).
    """
    path = _sqlite_path(url)
    if path is None:
        return None
    try:
        # mode=rw: never creates a missing file. Not mode=ro: a read-only connection to a
        # WAL database leaves its -wal and -shm files behind when it closes.
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(path)}?mode=rw", uri=True, timeout=60, isolation_level=None
        )
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA query_only = ON")
        found = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
                f"({', '.join('?' * len(_TABLES))})",
                _TABLES,
            )
        }
    except sqlite3.Error:
        conn.close()
        return None
    if found != set(_TABLES):
        conn.close()
        return None
    return SqliteCatalogReader(url, conn)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" * len(items))


class SqliteCatalogReader:
    """Read-only answers of a SQLite catalog (see the module's docstring).

    Made by :func:`open_sqlite_reader`. Each method answers exactly as the
    :class:`~klio_assets.catalog.database.TrackCatalog` method of the same name.

    Parameters
    ----------
    url : str
        The catalog's URL (named in errors).
    conn : sqlite3.Connection
        Open on the catalog's file, ``query_only``.
    """

    def __init__(self, url: str, conn: sqlite3.Connection):
        self.url = url
        self._conn = conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot read the track catalog at {self.url}: {exc}") from exc

    def track_ids(self) -> list[str]:
        """All registered IDs, in registration order."""
        return [r[0] for r in self._rows(f"SELECT track_id FROM {TRACKS_TABLE} ORDER BY seq")]

    def resolve(self, track_ids: Sequence[str]) -> dict[str, str]:
        """Source URIs of the registered IDs among ``track_ids``."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(track_ids)):
            found.update(
                self._rows(
                    f"SELECT track_id, uri FROM {TRACKS_TABLE} WHERE track_id IN ({_marks(chunk)})",
                    chunk,
                )
            )
        return found

    def not_materialized(
        self, asset: str, version: str, track_ids: Sequence[str] | None = None
    ) -> list[str]:
        """Registered tracks (all, or those among ``track_ids``) the ledger has no ``version`` of.

        Unregistered IDs among ``track_ids`` are returned too: they are not materialized.
        """
        if track_ids is None:
            return [
                r[0]
                for r in self._rows(
                    f"SELECT t.track_id FROM {TRACKS_TABLE} AS t "
                    f"LEFT OUTER JOIN {MATERIALIZED_TABLE} AS m ON m.track_id = t.track_id "
                    "AND m.asset = ? AND m.version = ? "
                    "WHERE m.track_id IS NULL ORDER BY t.seq",
                    (asset, version),
                )
            ]
        missing: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(track_ids))):
            found = {
                r[0]
                for r in self._rows(
                    f"SELECT track_id FROM {MATERIALIZED_TABLE} WHERE asset = ? AND version = ? "
                    f"AND track_id IN ({_marks(chunk)})",
                    (asset, version, *chunk),
                )
            }
            missing.update(t for t in chunk if t not in found)
        return [t for t in track_ids if t in missing]

    def source_stats(self, asset: str, track_ids: Sequence[str]) -> dict[str, SourceStat]:
        """The recorded source stats of ``asset``'s outputs, for those of ``track_ids`` known."""
        found: dict[str, SourceStat] = {}
        for chunk in _chunks(list(dict.fromkeys(track_ids))):
            for track_id, size, modified in self._rows(
                f"SELECT track_id, size_bytes, modified FROM {SOURCE_STATS_TABLE} "
                f"WHERE asset = ? AND track_id IN ({_marks(chunk)})",
                (asset, *chunk),
            ):
                found[track_id] = SourceStat(size_bytes=int(size), modified=str(modified))
        return found

    def failure_memory(
        self, asset: str, track_ids: Sequence[str] | None = None
    ) -> list[FailureMemoryRow]:
        """The remembered failures' rows of ``asset`` (of ``track_ids``, or all), as
        :func:`klio_assets.catalog.failures.remembered` reads them."""
        columns = ", ".join(FailureMemoryRow._fields)
        query = f"SELECT {columns} FROM {FAILURE_MEMORY_TABLE} WHERE asset = ?"
        if track_ids is None:
            rows = self._rows(query, (asset,))
        else:
            rows = []
            for chunk in _chunks(list(dict.fromkeys(track_ids))):
                rows.extend(
                    self._rows(f"{query} AND track_id IN ({_marks(chunk)})", (asset, *chunk))
                )
        # SQLite keeps booleans as 0 and 1
        return [FailureMemoryRow._make((*row[:3], bool(row[3]), *row[4:])) for row in rows]

    def latest_feature_seq(self, assets: Sequence[str] | None = None) -> int:
        """The highest ``seq`` of the feature rows (of ``assets`` and removals, or of all); 0
        if none."""
        query = f"SELECT max(seq) FROM {FEATURES_TABLE}"
        if assets is None:
            return int(self._rows(query)[0][0] or 0)
        names = [*assets, REMOVED]
        return int(self._rows(f"{query} WHERE asset IN ({_marks(names)})", names)[0][0] or 0)
