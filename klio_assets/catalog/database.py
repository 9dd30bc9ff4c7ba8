"""The track catalog: which source audio each track ID stands for, why tracks failed, and the
scalar results of the JSON analyses.

Dagster's ``tracks`` dynamic partitions hold the IDs; this small SQL database (SQLite in the
home by default, PostgreSQL in production) maps each ID to its source URI and keeps, per
analysis, the reason of each track's latest failure so that the CLI and the UI can show it,
and each track's latest scalar figures (loudness, tempo, duration...) with a sequence number,
so that catalog-level tables are updated from what changed instead of re-reading every track.
Lookups and writes are batched: one statement per chunk of IDs, never one per track. Exact
counts of the registered tracks and of each analysis's ledger rows are kept by triggers
(``klio_counts``), so that ``klio-assets status`` costs the same at any catalog size.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from klio_assets.catalog.names import (  # defined there for readers without SQLAlchemy
    COUNTS_TABLE,
    FAILURE_MEMORY_TABLE,
    FAILURES_TABLE,
    FEATURES_TABLE,
    MATERIALIZED_TABLE,
    SOURCE_STATS_TABLE,
    STATE_TABLE,
    TRACKS_TABLE,
)
from klio_assets.catalog.names import DUPLICATE_GROUPS as DUPLICATE_GROUPS  # re-exported
from klio_assets.catalog.names import REMOVED as REMOVED  # re-exported
from klio_assets.catalog.names import TRACK_FEATURES as TRACK_FEATURES  # re-exported
from klio_assets.errors import CatalogError
from klio_assets.worker.records import SourceStat

_METADATA = sa.MetaData()

#: Attempts of a catalog write that lost a race to another run writing the same tracks
#: (:meth:`TrackCatalog.replacing`).
WRITE_ATTEMPTS = 5

TRACKS = sa.Table(
    TRACKS_TABLE,
    _METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(128), nullable=False, unique=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)
FAILURES = sa.Table(
    FAILURES_TABLE,
    _METADATA,
    sa.Column("asset", sa.String(128), primary_key=True),
    sa.Column("track_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("failed_at", sa.Float, nullable=False),
)
#: Failures by track alone (the key starts with the asset): ``klio-assets tracks --failed``.
_FAILURES_BY_TRACK = sa.Index("ix_klio_failures_track_id", FAILURES.c.track_id)
FEATURES = sa.Table(
    FEATURES_TABLE,
    _METADATA,
    # Rewritten rows get a new seq: readers take "seq > cursor" to see only what changed.
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("asset", sa.String(128), nullable=False),
    sa.Column("track_id", sa.String(128), nullable=False),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),  # JSON object of scalars
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("asset", "track_id", name="uq_klio_features_asset_track"),
    sa.Index("ix_klio_features_asset_seq", "asset", "seq"),
    # seqs never reused (SQLite's rowid is max + 1: a rewritten last row would keep its seq)
    sqlite_autoincrement=True,
)
#: The ledger of what Dagster has materialized: per analysis and track, the version of the
#: output that was last reported materialized. Written in the same step as the
#: materialization events (after them), so ``klio-assets run`` can tell that a batch is
#: already done with one query, without importing Dagster or listing its partitions.
MATERIALIZED = sa.Table(
    MATERIALIZED_TABLE,
    _METADATA,
    sa.Column("asset", sa.String(128), primary_key=True),
    sa.Column("track_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("materialized_at", sa.Float, nullable=False),
)
#: Per analysis and track, the stat of the source that the output entered in the ledger was
#: computed from (:class:`~klio_assets.worker.records.SourceStat`): a later stat that differs
#: means the output describes a file that is no longer there. A table of its own so that
#: catalogs from before it keep working (it is created when they are opened; no row: unknown).
SOURCE_STATS = sa.Table(
    SOURCE_STATS_TABLE,
    _METADATA,
    sa.Column("asset", sa.String(128), primary_key=True),
    sa.Column("track_id", sa.String(128), primary_key=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("modified", sa.String(128), nullable=False),
)
#: Failures remembered so that they are not retried (:mod:`klio_assets.catalog.failures`):
#: per analysis and track, the version that failed, whether the failure is permanent (the
#: same input fails the same way again) or transient, how many runs in a row met it, and the
#: source it failed on (content hash where it was read, and its stat: a changed file is
#: tried again). A table of its own: catalogs from before it get it when opened.
FAILURE_MEMORY = sa.Table(
    FAILURE_MEMORY_TABLE,
    _METADATA,
    sa.Column("asset", sa.String(128), primary_key=True),
    sa.Column("track_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("permanent", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("error", sa.String(128), nullable=True),
    sa.Column("content_hash", sa.String(128), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("modified", sa.String(128), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("failed_at", sa.Float, nullable=False),
)
#: Small named JSON documents kept by the automation (e.g. the code versions the catalog
#: backfill last scanned for staleness); schedules have no cursor of their own.
STATE = sa.Table(
    STATE_TABLE,
    _METADATA,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
#: Exact row counts, kept by triggers (:func:`_ensure_counts`) whatever code path writes:
#: :data:`TRACKS_KEY` the registered tracks, ``LEDGER_KEY_PREFIX + asset`` the ledger rows
#: of ``asset``. ``klio-assets status`` reads them in O(1) at any catalog size.
COUNTS = sa.Table(
    COUNTS_TABLE,
    _METADATA,
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
TRACKS_KEY = "tracks"
LEDGER_KEY_PREFIX = "materialized:"


@dataclass(frozen=True)
class FeatureRow:
    """One track's latest scalar results of one analysis.

    Attributes
    ----------
    seq : int
        Increases with every write (the incremental readers' cursor).
    asset, track_id, version, uri : str
    fields : dict
        Scalars (numbers, strings, booleans, None).
    """

    seq: int
    asset: str
    track_id: str
    version: str
    uri: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class LedgerEntry:
    """One track's row of one analysis in the ledger of materialized outputs.

    Attributes
    ----------
    version : str
        The output version materialized.
    run_id : str
        The Dagster run that reported it ("" when entered from a check of Dagster).
    materialized_at : float
        Unix time, seconds.
    """

    version: str
    run_id: str
    materialized_at: float


#: IDs per SQL statement (SQLite allows 32766 bound variables; PostgreSQL far more).
CHUNK = 5000
#: IDs per array parameter on PostgreSQL.
_PG_CHUNK = 100_000

_ENGINES: dict[str, sa.Engine] = {}
_LOCK = threading.Lock()


def _engine(url: str) -> sa.Engine:
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                folder = os.path.dirname(url[len("sqlite:///") :])
                if folder:
                    os.makedirs(folder, exist_ok=True)
                engine = sa.create_engine(url, connect_args={"timeout": 60})

                @sa.event.listens_for(engine, "connect")
                def _wal(
                    dbapi_connection: Any, _record: Any
                ) -> None:  # readers never wait for a writer
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.close()

            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            _METADATA.create_all(engine)
            # Catalogs from before it get the index too (create_all only makes missing tables).
            _FAILURES_BY_TRACK.create(engine, checkfirst=True)
            _ensure_counts(engine)
            _ENGINES[url] = engine
        return engine


#: The counting triggers, by table: ``(table, SQL of its counts key from a row of it)``.
_COUNTED = {
    "tracks": (TRACKS_TABLE, f"'{TRACKS_KEY}'"),
    "materialized": (MATERIALIZED_TABLE, f"'{LEDGER_KEY_PREFIX}' || {{row}}.asset"),
}
_TRIGGERS = {f"{COUNTS_TABLE}_{what}_{op}" for what in _COUNTED for op in ("ins", "del")}
#: Serializes the PostgreSQL setup of the counts between processes opening the catalog.
_COUNTS_SETUP_LOCK = 0x6B6C696F  # "klio"


def _ensure_counts(engine: sa.Engine) -> None:
    """Give the catalog its counting triggers if it lacks any, and then fill the counts.

    The triggers are created and the counts filled from ``count(*)`` in one transaction that
    keeps writers out (SQLite's write lock; PostgreSQL's trigger creation and ``LOCK
    TABLE``), so the counts are exact from then on. A catalog with every trigger costs one
    query.
    """
    postgres = engine.dialect.name == "postgresql"
    if _TRIGGERS <= _trigger_names(engine, postgres=postgres):
        return
    with engine.connect() as conn:
        if postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _COUNTS_SETUP_LOCK})
            missing = _TRIGGERS - _trigger_names(conn, postgres=True)
            if missing:
                _create_postgres_triggers(conn, missing)
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite began nothing: writers now wait
            _create_sqlite_triggers(conn)
            missing = _TRIGGERS
        if missing:
            _recount(conn)
        conn.commit()


def _trigger_names(bind: sa.Engine | sa.Connection, *, postgres: bool) -> set[str]:
    query = (
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
        f"('{TRACKS_TABLE}'::regclass, '{MATERIALIZED_TABLE}'::regclass)"
        if postgres
        else "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    )
    if isinstance(bind, sa.Connection):
        return set(bind.exec_driver_sql(query).scalars())
    with bind.connect() as conn:
        return set(conn.exec_driver_sql(query).scalars())


def _create_sqlite_triggers(conn: sa.Connection) -> None:
    """Row-level triggers (SQLite has no statement-level ones): one upsert per row."""
    for what, (table, key) in _COUNTED.items():
        for op, event, row, sign in (("ins", "INSERT", "NEW", ""), ("del", "DELETE", "OLD", "-")):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {COUNTS_TABLE}_{what}_{op} "
                f"AFTER {event} ON {table} BEGIN "
                f"INSERT INTO {COUNTS_TABLE} (key, n) VALUES ({key.format(row=row)}, {sign}1) "
                "ON CONFLICT (key) DO UPDATE SET n = n + excluded.n; END"
            )


def _create_postgres_triggers(conn: sa.Connection, missing: set[str]) -> None:
    """Statement-level triggers: one grouped upsert per statement, whatever its row count (a
    row-level trigger would add one update per row to a bulk registration)."""
    # Writers wait until the transaction ends: none is missed between the triggers and the count.
    conn.exec_driver_sql(
        f"LOCK TABLE {TRACKS_TABLE}, {MATERIALIZED_TABLE} IN SHARE ROW EXCLUSIVE MODE"
    )
    for what, (table, key) in _COUNTED.items():
        upsert = (
            f"INSERT INTO {COUNTS_TABLE} AS c (key, n) "
            f"SELECT {key.format(row='changed')}, {{sign}}count(*) FROM {{rows}} AS changed "
            "GROUP BY 1 ORDER BY 1 "  # one row per key (none for no row), locked in key order
            "ON CONFLICT (key) DO UPDATE SET n = c.n + excluded.n;"
        )
        conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {COUNTS_TABLE}_{what}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'INSERT' THEN "
            + upsert.format(sign="", rows="klio_counts_new")
            + " ELSE "
            + upsert.format(sign="-", rows="klio_counts_old")
            + " END IF; RETURN NULL; END $$"
        )
        for op, event, rows in (("ins", "INSERT", "NEW"), ("del", "DELETE", "OLD")):
            name = f"{COUNTS_TABLE}_{what}_{op}"
            if name in missing:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                    f"REFERENCING {rows} TABLE AS klio_counts_{rows.lower()} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {COUNTS_TABLE}_{what}()"
                )


def _recount(conn: sa.Connection) -> None:
    """Fill the counts from ``count(*)`` (once, when the triggers are new)."""
    conn.execute(COUNTS.delete())
    conn.execute(
        COUNTS.insert().from_select(
            ["key", "n"], sa.select(sa.literal(TRACKS_KEY), sa.func.count()).select_from(TRACKS)
        )
    )
    conn.execute(
        COUNTS.insert().from_select(
            ["key", "n"],
            sa.select(
                sa.literal(LEDGER_KEY_PREFIX) + MATERIALIZED.c.asset, sa.func.count()
            ).group_by(MATERIALIZED.c.asset),
        )
    )


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Registration:
    """What :meth:`TrackCatalog.register` did.

    Attributes
    ----------
    added : list of str
        IDs new to the catalog, in order.
    known : list of str
        IDs already registered with the same URI.
    conflicts : dict of str to str
        IDs already registered with another URI: ID to a message.
    """

    added: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)


def registered_uri(uri: str) -> str:
    """The URI a track is registered under: a symlink's target, resolved once, when added.

    The engine refuses a source that is a symlink when it opens it (a file swapped for a
    link after ``add`` must not lead anywhere), so a link accepted by ``add`` (inside the
    added folder, or allowed with ``--follow-symlinks``/``--allow-root``) is stored resolved.

    Parameters
    ----------
    uri : str
        A local path (already confined by discovery) or an object URI (returned as it is).
    """
    if "://" not in uri and os.path.islink(uri):
        return os.path.realpath(uri)
    return uri


class TrackCatalog:
    """Track ID to source URI, plus failure reasons.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:////abs/path/catalog.db``, ``postgresql+psycopg2://...``).
    """

    def __init__(self, url: str):
        self.url = url

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (one per URL and process)."""
        return _engine(self.url)

    def register(self, tracks: Sequence[tuple[str, str]]) -> Registration:
        """Add ``(track_id, uri)`` pairs; IDs must already be validated.

        A pair whose ID is registered with another URI is not changed: it is reported as a
        conflict (moving a track is a deliberate act, not a side effect of adding a folder).
        """
        outcome = Registration()
        wanted: dict[str, str] = {}
        for track_id, given in tracks:
            uri = registered_uri(given)
            if track_id in wanted and wanted[track_id] != uri:
                outcome.conflicts[track_id] = (
                    f"track {track_id!r} is given twice: {wanted[track_id]} and {uri}"
                )
                continue
            wanted.setdefault(track_id, uri)
        ids = [t for t in wanted if t not in outcome.conflicts]
        now = time.time()
        if self.engine.dialect.name == "postgresql":
            self._register_postgres(ids, wanted, outcome, now)
            return outcome
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                existing = dict(
                    conn.execute(
                        sa.select(TRACKS.c.track_id, TRACKS.c.uri).where(
                            TRACKS.c.track_id.in_(chunk)
                        )
                    ).all()
                )
                rows = []
                for track_id in chunk:
                    if track_id not in existing:
                        rows.append(
                            {"track_id": track_id, "uri": wanted[track_id], "added_at": now}
                        )
                        outcome.added.append(track_id)
                    elif existing[track_id] == wanted[track_id]:
                        outcome.known.append(track_id)
                    else:
                        outcome.conflicts[track_id] = (
                            f"track {track_id!r} is already registered for {existing[track_id]}, "
                            f"not {wanted[track_id]}"
                        )
                if rows:
                    conn.execute(TRACKS.insert(), rows)
        return outcome

    def _register_postgres(
        self, ids: Sequence[str], wanted: Mapping[str, str], outcome: Registration, now: float
    ) -> None:
        # One INSERT ... SELECT FROM unnest(arrays) per chunk, new rows in the given order:
        # an executemany of row dicts costs ~50 us a track in SQLAlchemy and psycopg2, this ~5.
        # (Imported here: ~45 ms that a `klio-assets run` answered from a SQLite catalog skips.)
        from sqlalchemy.dialects import postgresql  # noqa: PLC0415

        rows = (
            sa.func.unnest(
                sa.cast(sa.bindparam("ids"), postgresql.ARRAY(sa.Text)),
                sa.cast(sa.bindparam("uris"), postgresql.ARRAY(sa.Text)),
            )
            .table_valued("track_id", "uri", with_ordinality="ord")
            .render_derived()
        )
        insert = (
            postgresql.insert(TRACKS)
            .from_select(
                ["track_id", "uri", "added_at"],
                sa.select(rows.c.track_id, rows.c.uri, sa.literal(now, sa.Float)).order_by(
                    rows.c.ord
                ),
            )
            .on_conflict_do_nothing(index_elements=["track_id"])
            .returning(TRACKS.c.track_id)
        )
        existing = sa.select(TRACKS.c.track_id, TRACKS.c.uri).where(
            TRACKS.c.track_id
            == sa.func.any(sa.cast(sa.bindparam("ids"), postgresql.ARRAY(sa.Text)))
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(ids, _PG_CHUNK):
                added = set(
                    conn.execute(
                        insert, {"ids": list(chunk), "uris": [wanted[t] for t in chunk]}
                    ).scalars()
                )
                rest = [t for t in chunk if t not in added]
                found = dict(conn.execute(existing, {"ids": rest}).all()) if rest else {}
                for track_id in chunk:
                    if track_id in added:
                        outcome.added.append(track_id)
                    elif found.get(track_id) == wanted[track_id]:
                        outcome.known.append(track_id)
                    else:
                        outcome.conflicts[track_id] = (
                            f"track {track_id!r} is already registered for {found.get(track_id)}, "
                            f"not {wanted[track_id]}"
                        )

    def resolve(self, track_ids: Sequence[str]) -> dict[str, str]:
        """Source URIs of the registered IDs among ``track_ids``.

        On PostgreSQL one ``= ANY(array)`` query per chunk of :data:`_PG_CHUNK` IDs (the IDs
        one array parameter): a landing tick's 200,000 IDs (names and alternates) in ~0.4 s
        instead of ~1.7 s as ``IN`` lists of bound parameters (SQLite's way).
        """
        found: dict[str, str] = {}
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql  # noqa: PLC0415 (see _register_postgres)

            query = sa.select(TRACKS.c.track_id, TRACKS.c.uri).where(
                TRACKS.c.track_id
                == sa.func.any(sa.cast(sa.bindparam("ids"), postgresql.ARRAY(sa.Text)))
            )
            with self.engine.connect() as conn:
                for chunk in _chunks(list(track_ids), _PG_CHUNK):
                    found.update(conn.execute(query, {"ids": list(chunk)}).all())
            return found
        with self.engine.connect() as conn:
            for chunk in _chunks(list(track_ids)):
                found.update(
                    conn.execute(
                        sa.select(TRACKS.c.track_id, TRACKS.c.uri).where(
                            TRACKS.c.track_id.in_(chunk)
                        )
                    ).all()
                )
        return found

    def count(self) -> int:
        """Number of registered tracks (O(1): see :meth:`counts`)."""
        return self.counts()[0]

    def counts(self) -> tuple[int, dict[str, int]]:
        """Exact row counts, read in O(1) from what the catalog's triggers keep.

        Returns
        -------
        tracks : int
            Registered tracks.
        ledger : dict of str to int
            Per analysis, its rows in the ledger (outputs materialized, at any version).
        """
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(COUNTS.c.key, COUNTS.c.n)).all()
        tracks = 0
        ledger: dict[str, int] = {}
        for key, n in rows:
            if key == TRACKS_KEY:
                tracks = int(n)
            elif key.startswith(LEDGER_KEY_PREFIX):
                ledger[key[len(LEDGER_KEY_PREFIX) :]] = int(n)
        return tracks, ledger

    def failed_with_ledger(self, asset: str) -> set[str]:
        """Tracks with a recorded failure of ``asset`` and also a ledger row of it (an output
        of an earlier version, or of before the failure): O(failures), by the ledger's key."""
        query = (
            sa.select(FAILURES.c.track_id)
            .join(
                MATERIALIZED,
                sa.and_(
                    MATERIALIZED.c.asset == FAILURES.c.asset,
                    MATERIALIZED.c.track_id == FAILURES.c.track_id,
                ),
            )
            .where(FAILURES.c.asset == asset)
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def ledger_entry(self, asset: str, track_id: str) -> LedgerEntry | None:
        """The ledger's row of ``asset`` for ``track_id``; None if it has none."""
        query = sa.select(
            MATERIALIZED.c.version, MATERIALIZED.c.run_id, MATERIALIZED.c.materialized_at
        ).where(MATERIALIZED.c.asset == asset, MATERIALIZED.c.track_id == track_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return LedgerEntry(version=row[0], run_id=row[1], materialized_at=float(row[2]))

    def feature_row(self, asset: str, track_id: str) -> FeatureRow | None:
        """The latest scalar results of ``asset`` for ``track_id``; None if none are kept."""
        query = sa.select(FEATURES).where(
            FEATURES.c.asset == asset, FEATURES.c.track_id == track_id
        )
        with self.engine.connect() as conn:
            r = conn.execute(query).one_or_none()
        if r is None:
            return None
        return FeatureRow(r.seq, r.asset, r.track_id, r.version, r.uri, json.loads(r.fields))

    def track_ids(self) -> list[str]:
        """All registered IDs, in registration order."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(TRACKS.c.track_id).order_by(TRACKS.c.seq)).scalars())

    def record_outcomes(
        self,
        asset: str,
        *,
        version: str,
        run_id: str,
        failed: Mapping[str, str],
        succeeded: Iterable[str],
        source_stats: Mapping[str, SourceStat] | None = None,
    ) -> None:
        """Remember failure reasons of ``failed``, forget those of ``succeeded``, and enter
        ``succeeded`` in the ledger of materialized outputs at ``version``, with the stat of
        the source each was computed from where ``source_stats`` has it."""
        done = [t for t in succeeded if t not in failed]
        now = time.time()

        def write(conn: sa.Connection) -> None:
            for chunk in _chunks(done + list(failed)):
                conn.execute(
                    FAILURES.delete().where(
                        FAILURES.c.asset == asset, FAILURES.c.track_id.in_(chunk)
                    )
                )
            for chunk in _chunks(done):  # a success ends a remembered failure
                conn.execute(
                    FAILURE_MEMORY.delete().where(
                        FAILURE_MEMORY.c.asset == asset, FAILURE_MEMORY.c.track_id.in_(chunk)
                    )
                )
            _enter_materialized(
                conn, asset, version=version, run_id=run_id, track_ids=done, now=now
            )
            stats = {t: source_stats[t] for t in done if source_stats and t in source_stats}
            _enter_source_stats(conn, asset, stats)
            if failed:
                conn.execute(
                    FAILURES.insert(),
                    [
                        {
                            "asset": asset,
                            "track_id": t,
                            "version": version,
                            "reason": reason,
                            "run_id": run_id,
                            "failed_at": now,
                        }
                        for t, reason in failed.items()
                    ],
                )

        self.replacing(write)

    def record_features(
        self, asset: str, *, version: str, rows: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Store the latest scalar results of ``asset``: ``{track_id: (uri, fields)}``.

        A track's previous row is replaced (and so gets a new ``seq``).
        """
        if not rows:
            return
        now = time.time()
        replaced = {
            t: {
                "version": version,
                "uri": uri,
                "fields": json.dumps(dict(fields), sort_keys=True, allow_nan=False),
                "updated_at": now,
            }
            for t, (uri, fields) in rows.items()
        }
        self.replacing(lambda conn: _replace_rows(conn, FEATURES, asset, replaced))

    def mark_materialized(
        self, asset: str, *, version: str, run_id: str, track_ids: Sequence[str]
    ) -> None:
        """Enter ``track_ids`` in the ledger as materialized at ``version`` (e.g. found so in Dagster)."""
        now = time.time()
        self.replacing(
            lambda conn: _enter_materialized(
                conn, asset, version=version, run_id=run_id, track_ids=track_ids, now=now
            )
        )

    def replacing(self, write: Callable[[sa.Connection], None]) -> None:
        """Run ``write`` in one transaction, again when it lost a race to another run.

        Catalog writes replace a track's rows: delete, then insert. When two runs write the
        same tracks at once (overlapping batches), PostgreSQL lets both deletes find nothing
        and the second insert then fails on the first one's new row (a unique violation;
        SQLite runs one writer at a time). Tried again, the write sees those rows committed
        and replaces them, as it would have a moment later.

        Parameters
        ----------
        write : callable
            Does the writes on the connection it is given; may run more than once.

        Raises
        ------
        sqlalchemy.exc.IntegrityError
            Still, after :data:`WRITE_ATTEMPTS` attempts.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    write(conn)
                return
            except sa.exc.IntegrityError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(0.01 * attempt)

    def not_materialized(
        self, asset: str, version: str, track_ids: Sequence[str] | None = None
    ) -> list[str]:
        """Registered tracks (all, or those among ``track_ids``) the ledger has no ``version`` of.

        Unregistered IDs among ``track_ids`` are returned too: they are not materialized.
        """
        ledger = sa.and_(
            MATERIALIZED.c.track_id == TRACKS.c.track_id,
            MATERIALIZED.c.asset == asset,
            MATERIALIZED.c.version == version,
        )
        query = (
            sa.select(TRACKS.c.track_id)
            .select_from(TRACKS.outerjoin(MATERIALIZED, ledger))
            .where(MATERIALIZED.c.track_id.is_(None))
        )
        with self.engine.connect() as conn:
            if track_ids is None:
                return list(conn.execute(query.order_by(TRACKS.c.seq)).scalars())
            missing: set[str] = set()
            for chunk in _chunks(list(dict.fromkeys(track_ids))):
                found = set(
                    conn.execute(
                        sa.select(MATERIALIZED.c.track_id).where(
                            MATERIALIZED.c.asset == asset,
                            MATERIALIZED.c.version == version,
                            MATERIALIZED.c.track_id.in_(chunk),
                        )
                    ).scalars()
                )
                missing.update(t for t in chunk if t not in found)
            return [t for t in track_ids if t in missing]

    def source_stats(self, asset: str, track_ids: Sequence[str]) -> dict[str, SourceStat]:
        """The recorded source stats of ``asset``'s outputs, for those of ``track_ids`` known."""
        query = sa.select(
            SOURCE_STATS.c.track_id, SOURCE_STATS.c.size_bytes, SOURCE_STATS.c.modified
        ).where(SOURCE_STATS.c.asset == asset)
        found: dict[str, SourceStat] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(track_ids))):
                for track_id, size, modified in conn.execute(
                    query.where(SOURCE_STATS.c.track_id.in_(chunk))
                ):
                    found[track_id] = SourceStat(size_bytes=int(size), modified=str(modified))
        return found

    def features_since(self, assets: Sequence[str], after_seq: int = 0) -> list[FeatureRow]:
        """Rows of ``assets`` written after ``after_seq``, and the removals (asset
        :data:`REMOVED`) since, in ``seq`` order."""
        query = (
            sa.select(FEATURES)
            .where(FEATURES.c.asset.in_([*assets, REMOVED]), FEATURES.c.seq > after_seq)
            .order_by(FEATURES.c.seq)
        )
        with self.engine.connect() as conn:
            return [
                FeatureRow(r.seq, r.asset, r.track_id, r.version, r.uri, json.loads(r.fields))
                for r in conn.execute(query)
            ]

    def latest_feature_seq(self, assets: Sequence[str] | None = None) -> int:
        """The highest ``seq`` of the feature rows (of ``assets`` and removals, or of all); 0
        if none."""
        query = sa.select(sa.func.max(FEATURES.c.seq))
        if assets is not None:
            query = query.where(FEATURES.c.asset.in_([*assets, REMOVED]))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def failures(
        self,
        asset: str,
        track_ids: Sequence[str] | None = None,
        *,
        registered_only: bool = False,
    ) -> dict[str, str]:
        """Latest failure reason per track of ``asset`` (optionally only for ``track_ids``).

        ``registered_only`` leaves out tracks the catalog does not know (a run of a Dagster
        partition without a catalog row records its failure: "not registered").
        """
        query = sa.select(FAILURES.c.track_id, FAILURES.c.reason).where(FAILURES.c.asset == asset)
        if registered_only:
            query = query.where(sa.exists().where(TRACKS.c.track_id == FAILURES.c.track_id))
        with self.engine.connect() as conn:
            if track_ids is None:
                return dict(conn.execute(query.order_by(FAILURES.c.track_id)).all())
            found: dict[str, str] = {}
            for chunk in _chunks(list(track_ids)):
                found.update(conn.execute(query.where(FAILURES.c.track_id.in_(chunk))).all())
            return found

    def get_state(self, key: str) -> dict[str, Any]:
        """The JSON document stored under ``key`` (empty if none)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(STATE.c.value).where(STATE.c.key == key)
            ).scalar_one_or_none()
        return json.loads(value) if value else {}

    def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Store the JSON document ``value`` under ``key`` (replacing it)."""
        row = {"key": key, "value": json.dumps(dict(value), sort_keys=True)}

        def write(conn: sa.Connection) -> None:
            conn.execute(STATE.delete().where(STATE.c.key == key))
            conn.execute(STATE.insert(), [{**row, "updated_at": time.time()}])

        self.replacing(write)

    # -- the catalog as the CLI lists and edits it (`klio-assets tracks`, `remove`) ---------

    def seq_of(self, track_id: str) -> int | None:
        """The registration number of ``track_id`` (its place in the listing), None if unknown."""
        with self.engine.connect() as conn:
            seq = conn.execute(
                sa.select(TRACKS.c.seq).where(TRACKS.c.track_id == track_id)
            ).scalar_one_or_none()
        return None if seq is None else int(seq)

    def tracks_page(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        failed: bool = False,
        missing: tuple[str, str] | None = None,
    ) -> list[tuple[int, str, str, float]]:
        """One page of registered tracks in registration order: ``(seq, track_id, uri,
        added_at)`` with ``seq > after_seq``; keyset-paginated, so each page costs the same.

        Parameters
        ----------
        failed : bool
            Only tracks with a recorded failure of some analysis.
        missing : (str, str), optional
            ``(asset, version)``: only tracks the ledger has no output of ``asset`` at
            ``version`` for.
        """
        query = sa.select(TRACKS.c.seq, TRACKS.c.track_id, TRACKS.c.uri, TRACKS.c.added_at).where(
            TRACKS.c.seq > after_seq
        )
        if failed:
            # One probe of the failures' track index per track scanned: a whole listing costs
            # O(tracks), however many failed (an IN (subquery) costs O(failures) per page).
            query = query.where(sa.exists().where(FAILURES.c.track_id == TRACKS.c.track_id))
        if missing is not None:
            asset, version = missing
            query = query.where(
                ~sa.exists().where(
                    MATERIALIZED.c.track_id == TRACKS.c.track_id,
                    MATERIALIZED.c.asset == asset,
                    MATERIALIZED.c.version == version,
                )
            )
        query = query.order_by(TRACKS.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [(int(r[0]), r[1], r[2], float(r[3])) for r in conn.execute(query)]

    def failures_of(self, track_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Track to ``{analysis: reason}`` of its recorded failures (tracks without any left out)."""
        found: dict[str, dict[str, str]] = {}
        query = sa.select(FAILURES.c.track_id, FAILURES.c.asset, FAILURES.c.reason)
        with self.engine.connect() as conn:
            for chunk in _chunks(list(track_ids)):
                for track_id, asset, reason in conn.execute(
                    query.where(FAILURES.c.track_id.in_(chunk)).order_by(FAILURES.c.asset)
                ):
                    found.setdefault(track_id, {})[asset] = reason
        return found

    def remove(self, track_ids: Sequence[str]) -> list[str]:
        """Forget ``track_ids``: their registration and every row kept about them (failures,
        ledger, source stats, features, and any other table keyed by track). Returns those
        that were registered.

        Each removed track leaves one features row of asset :data:`REMOVED` (a new ``seq``):
        the next ``track_features`` and ``duplicate_groups`` updates see it and drop the track
        (from the table, and from the fingerprint index).
        """
        ids = list(dict.fromkeys(track_ids))
        removed: list[str] = []
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                found = list(
                    conn.execute(
                        sa.select(TRACKS.c.track_id).where(TRACKS.c.track_id.in_(chunk))
                    ).scalars()
                )
                removed.extend(found)
                # the removal rows first: inserted after the deletes, SQLite (without
                # AUTOINCREMENT) could reuse a deleted row's seq, one a reader has passed
                tombstone = {"version": "", "uri": "", "fields": "{}", "updated_at": time.time()}
                _replace_rows(conn, FEATURES, REMOVED, dict.fromkeys(found, tombstone))
                for table in _METADATA.sorted_tables:
                    if "track_id" in table.c:
                        query = table.delete().where(table.c.track_id.in_(chunk))
                        if table is FEATURES:
                            query = query.where(FEATURES.c.asset != REMOVED)
                        conn.execute(query)
        return [t for t in ids if t in set(removed)]


def _replace_rows(
    conn: sa.Connection, table: sa.Table, asset: str, rows: Mapping[str, Mapping[str, Any]]
) -> None:
    """Replace ``table``'s rows of ``asset`` for the tracks in ``rows`` (track ID to the other
    columns), in chunks: delete, then insert (portable across SQLite and PostgreSQL)."""
    for chunk in _chunks(list(rows)):
        conn.execute(table.delete().where(table.c.asset == asset, table.c.track_id.in_(chunk)))
        conn.execute(table.insert(), [{"asset": asset, "track_id": t, **rows[t]} for t in chunk])


def _enter_materialized(
    conn: sa.Connection,
    asset: str,
    *,
    version: str,
    run_id: str,
    track_ids: Sequence[str],
    now: float,
) -> None:
    row = {"version": version, "run_id": run_id, "materialized_at": now}
    _replace_rows(conn, MATERIALIZED, asset, dict.fromkeys(track_ids, row))


def _enter_source_stats(conn: sa.Connection, asset: str, stats: Mapping[str, SourceStat]) -> None:
    rows = {t: {"size_bytes": s.size_bytes, "modified": s.modified} for t, s in stats.items()}
    _replace_rows(conn, SOURCE_STATS, asset, rows)


def get_catalog(url: str) -> TrackCatalog:
    """A :class:`TrackCatalog` for ``url``, raising a clear error if it cannot be opened."""
    try:
        catalog = TrackCatalog(url)
        catalog.engine  # noqa: B018 - opens (and creates) the database now
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(f"cannot open the track catalog at {url}: {exc}") from exc
    return catalog
