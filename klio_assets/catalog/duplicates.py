"""Duplicate recordings across the catalog: an incremental index of Chromaprint fingerprints.

``duplicate_groups`` (a catalog-level asset) groups the track IDs that hold the same recording:
other encodings (FLAC, MP3, Opus, AAC...), sample rates or bit depths of one master. It reads
each track's ``fingerprint`` (:mod:`klio_assets.analyses.fingerprint`) and keeps this index in
the catalog database (SQLite locally, PostgreSQL in production), so that tracks arriving later
are matched against everything indexed before without recomputing anything.

How a new track is matched (cost proportional to its candidates, not to the catalog):

1. **Prefix.** The first :data:`STORED_ITEMS` fingerprint items (~60 s) are kept, as
   little-endian uint32 bytes. Items equal to Chromaprint's digital-silence value are
   *uninformative* and never count as agreement.
2. **Matchable or not.** A track with fewer than :data:`MIN_ITEMS` informative items (shorter
   than ~4.5 s, or silent) or a near-constant fingerprint (distinct keys below
   :data:`MIN_DISTINCT_RATIO` of its informative items: a test tone, a hum) carries too little
   information to tell recordings apart: it gets a group of its own and is never a candidate.
3. **Candidates.** Keys are the top 28 bits of each item (the 4 low bits are dropped, as
   AcoustID's index does). Each indexed track stores :data:`INDEX_KEYS` of its distinct keys,
   chosen by smallest hash (a bottom-k sketch: the same values are picked in any track that
   has them). A new track looks up *all* of its keys; indexed tracks sharing at least
   :data:`MIN_SHARED_KEYS` of them, with a duration within :func:`duration_tolerance`, are
   candidates (at most :data:`MAX_CANDIDATES`, most shared keys first). Measured on real
   music, 36-46 % of items survive a 32 kbit/s Opus transcode exactly in their top 28 bits
   (75-90 % for MP3/AAC at 128 kbit/s, 100 % for other rates and bit depths), so a true
   original shares ~10 of its 32 sketch keys even then; across 41 unrelated tracks, 19 of
   29,584 keys occur in more than one track.
4. **Verification.** Bit error rate (differing bits / compared bits) at the best alignment
   within :data:`MAX_OFFSET_ITEMS` items (~3 s) either way, over the positions where not both
   items are silence. Same recording if it is at most :data:`MATCH_BER`. Measured: transcodes
   0.000-0.032 (Opus 32 kbit/s the worst); different recordings (41 orchestral tracks by one
   composer, speech prompts) 0.36 or more. 0.15 sits far from both.
5. **Groups.** A match joins the candidate's group; a new track matching several groups merges
   them into the one founded first. A group is named after its first-indexed track.

The duration check keeps apart recordings that share a beginning but are not the same
master: a DJ mix that opens with a track, a radio edit and the album version.

Nothing here imports Dagster; the asset wraps :class:`FingerprintIndex`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from klio_assets.errors import CatalogError, ParameterError

#: Chromaprint's (algorithm 2) item for a frame of digital silence.
SILENCE_ITEM = 627964279
#: Fingerprint items kept per track (~59.5 s at 0.124 s per item).
STORED_ITEMS = 480
#: Low bits dropped from an item to make an index key (AcoustID drops 4 as well).
KEY_SHIFT = 4
#: Keys stored per indexed track (bottom-k sketch).
INDEX_KEYS = 32
#: Candidates share at least this many keys with the new track.
MIN_SHARED_KEYS = 2
#: Candidates verified per new track, most shared keys first.
MAX_CANDIDATES = 64
#: Same recording when the bit error rate at the best alignment is at most this.
MATCH_BER = 0.15
#: Alignments tried either way, in items (24 items ~ 3 s).
MAX_OFFSET_ITEMS = 24
#: Fewer informative items than this (~2 s of fingerprint, a ~4.5 s track): not matchable.
MIN_ITEMS = 16
#: Fewer distinct keys than this fraction of the informative items: near-constant, not matchable.
MIN_DISTINCT_RATIO = 0.2
#: Absolute and relative duration tolerance between two encodings of one master.
DURATION_TOLERANCE_S = 2.0
DURATION_TOLERANCE_RATIO = 0.01
#: What an index was built with; another format means rebuilding it (see :meth:`ensure_tables`).
INDEX_FORMAT = f"chromaprint-2/items{STORED_ITEMS}/key{32 - KEY_SHIFT}/bottom{INDEX_KEYS}"
#: Tracks per transaction in :meth:`FingerprintIndex.add`; IDs per ``IN`` list.
CHUNK = 500
#: PostgreSQL statistics are refreshed after this many new tracks in one call, then at
#: every doubling (see :meth:`FingerprintIndex._analyze`).
ANALYZE_AFTER = 1000

_METADATA = sa.MetaData()
TRACKS = sa.Table(
    "klio_fp_tracks",
    _METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(128), nullable=False, unique=True),
    sa.Column("group_id", sa.String(128), nullable=False, index=True),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("matchable", sa.Boolean, nullable=False),
    # STORED_ITEMS little-endian uint32 (empty when not matchable)
    sa.Column("prefix", sa.LargeBinary, nullable=False),
)
KEYS = sa.Table(
    "klio_fp_keys",
    _METADATA,
    sa.Column("key", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
)
SETTINGS = sa.Table(
    "klio_fp_settings",
    _METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)


@dataclass(frozen=True)
class FingerprintItem:
    """One track's fingerprint, as the ``fingerprint`` analysis computed it.

    Attributes
    ----------
    track_id : str
    fingerprint : sequence of int or np.ndarray [shape=(n,)]
        Chromaprint raw items, unsigned 32-bit.
    duration_s : float
        Duration of the whole track, seconds.
    """

    track_id: str
    fingerprint: Sequence[int] | np.ndarray
    duration_s: float

    @classmethod
    def from_result(cls, track_id: str, result: Mapping[str, Any]) -> FingerprintItem:
        """From the JSON document the ``fingerprint`` analysis wrote for ``track_id``."""
        try:
            return cls(track_id, result["fingerprint"], float(result["duration_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(
                f"track {track_id!r}: not a fingerprint result (missing or bad {exc})"
            ) from exc


@dataclass(frozen=True)
class _Prepared:
    track_id: str
    duration_s: float
    items: np.ndarray  # uint32, at most STORED_ITEMS
    keys: np.ndarray  # distinct informative keys (query side)
    sketch: np.ndarray  # the INDEX_KEYS keys stored in the index
    matchable: bool


def duration_tolerance(duration_s: float) -> float:
    """Largest duration difference (s) between two encodings of one master:
    ``max(2 s, 1 %)`` (encoder delay and padding are tens of milliseconds; some rips keep a
    second more of silence)."""
    return max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_RATIO * duration_s)


def _mix(keys: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash of each key (splitmix64 finaliser), to pick sketch keys."""
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _prepare(item: FingerprintItem) -> _Prepared:
    raw = np.asarray(item.fingerprint)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
        raise ParameterError(f"track {item.track_id!r}: a fingerprint is a list of integers")
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= 2**32):
        raise ParameterError(f"track {item.track_id!r}: fingerprint items must be in [0, 2**32)")
    duration = float(item.duration_s)
    if not math.isfinite(duration) or duration < 0:
        raise ParameterError(f"track {item.track_id!r}: duration_s={duration} is not valid")
    items = raw[:STORED_ITEMS].astype(np.uint32)
    informative = items[items != SILENCE_ITEM]
    keys = np.unique(informative >> np.uint32(KEY_SHIFT)).astype(np.int64)
    matchable = len(informative) >= MIN_ITEMS and len(keys) >= MIN_DISTINCT_RATIO * len(informative)
    sketch = keys[np.argsort(_mix(keys), kind="stable")[:INDEX_KEYS]] if matchable else keys[:0]
    return _Prepared(item.track_id, duration, items, keys, sketch, bool(matchable))


def bit_error_rate(
    a: np.ndarray, b: np.ndarray, *, max_offset: int = MAX_OFFSET_ITEMS, min_items: int = MIN_ITEMS
) -> tuple[float, int]:
    """Smallest bit error rate between two fingerprints over alignments within ``max_offset``.

    Positions where both items are digital silence are left out (silence agrees with
    silence whatever the recording).

    Parameters
    ----------
    a, b : np.ndarray [shape=(n,), (m,)], uint32
        Chromaprint raw fingerprints.
    max_offset : int
        Alignments tried: ``b`` shifted by ``-max_offset..max_offset`` items.
    min_items : int
        Alignments comparing fewer positions are not considered.

    Returns
    -------
    ber : float
        Differing bits / compared bits, in [0, 1]; 1.0 when no alignment compares enough.
    offset : int
        At the best alignment ``a[offset + i]`` faces ``b[i]`` (positive: ``a`` has a lead-in).
    """
    a = np.asarray(a, dtype=np.uint32)
    b = np.asarray(b, dtype=np.uint32)
    best, best_offset = 1.0, 0
    for offset in range(-max_offset, max_offset + 1):
        x = a[offset:] if offset > 0 else a
        y = b[-offset:] if offset < 0 else b
        n = min(len(x), len(y))
        if n < min_items:
            continue
        x, y = x[:n], y[:n]
        keep = (x != SILENCE_ITEM) | (y != SILENCE_ITEM)
        compared = int(keep.sum())
        if compared < min_items:
            continue
        ber = int(np.bitwise_count(x[keep] ^ y[keep]).sum(dtype=np.int64)) / (32 * compared)
        if ber < best:
            best, best_offset = ber, offset
    return best, best_offset


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@functools.lru_cache(maxsize=8)
def _candidate_query(dialect: str) -> sa.Select[Any]:
    """Indexed tracks sharing at least :data:`MIN_SHARED_KEYS` keys with a new track, within
    a duration window (bound parameters ``keys``, ``lo``, ``hi``).

    The keys (up to :data:`STORED_ITEMS`) travel as one parameter, a JSON array on SQLite and
    an array on PostgreSQL: SQLAlchemy spends ~5 ms expanding 480 separate parameters, more
    than the query itself takes. Other databases get SQLAlchemy's expanding ``IN``.
    """
    if dialect == "sqlite":
        listed = sa.func.json_each(sa.bindparam("keys", type_=sa.String)).table_valued("value")
        in_keys: sa.ColumnElement[bool] = KEYS.c.key.in_(sa.select(listed.c.value))
    elif dialect == "postgresql":
        in_keys = KEYS.c.key == sa.any_(sa.bindparam("keys", type_=postgresql.ARRAY(sa.Integer)))
    else:
        in_keys = KEYS.c.key.in_(sa.bindparam("keys", expanding=True))
    shared = sa.func.count().label("shared")
    return (
        sa.select(KEYS.c.seq, shared)
        .select_from(KEYS.join(TRACKS, TRACKS.c.seq == KEYS.c.seq))
        .where(in_keys, TRACKS.c.duration_s.between(sa.bindparam("lo"), sa.bindparam("hi")))
        .group_by(KEYS.c.seq)
        .having(shared >= MIN_SHARED_KEYS)
        .order_by(shared.desc(), KEYS.c.seq)
        .limit(MAX_CANDIDATES)
    )


class FingerprintIndex:
    """Incremental grouping of tracks that hold the same recording, kept in SQL tables
    (``klio_fp_*``) beside the track catalog.

    One writer at a time: :meth:`add` is meant to run from the one ``duplicate_groups``
    materialization (Dagster does not run two materializations of one unpartitioned asset
    at once unless asked to); a concurrent writer fails with :class:`CatalogError`.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The catalog database (SQLite or PostgreSQL).
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def ensure_tables(self) -> None:
        """Create the tables if needed; refuse an index built with another format.

        Raises
        ------
        CatalogError
            The index was built with other key or prefix settings: drop the ``klio_fp_*``
            tables and rematerialize ``duplicate_groups`` from the stored fingerprints.
        """
        _METADATA.create_all(self.engine)
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(SETTINGS.c.value).where(SETTINGS.c.name == "index_format")
            ).scalar()
            if found is None:
                conn.execute(SETTINGS.insert(), [{"name": "index_format", "value": INDEX_FORMAT}])
            elif found != INDEX_FORMAT:
                raise CatalogError(
                    f"the fingerprint index was built as {found!r}, this code uses "
                    f"{INDEX_FORMAT!r}: drop the klio_fp_* tables and rebuild duplicate_groups"
                )

    def known(self, track_ids: Iterable[str]) -> set[str]:
        """The IDs among ``track_ids`` that are already indexed."""
        ids = list(dict.fromkeys(track_ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                found.update(
                    conn.execute(
                        sa.select(TRACKS.c.track_id).where(TRACKS.c.track_id.in_(chunk))
                    ).scalars()
                )
        return found

    def add(self, items: Iterable[FingerprintItem]) -> dict[str, str]:
        """Index new tracks and group them; tracks already indexed are left as they are.

        New tracks are taken in track ID order (so that the outcome does not depend on the
        order they are listed in), :data:`CHUNK` per transaction.

        Parameters
        ----------
        items : iterable of FingerprintItem
            The first item of a repeated ID counts.

        Returns
        -------
        dict of str to str
            Group of every new track and of every indexed track whose group was merged into
            another, by track ID.
        """
        pending: dict[str, FingerprintItem] = {}
        for item in items:
            pending.setdefault(item.track_id, item)
        prepared = [_prepare(pending[t]) for t in sorted(pending)]  # validate before writing
        changed: dict[str, str] = {}
        next_analyze = ANALYZE_AFTER
        for done, chunk in enumerate(_chunks(prepared), start=1):
            try:
                with self.engine.begin() as conn:
                    changed.update(self._add_chunk(conn, chunk))
            except sa.exc.IntegrityError as exc:
                raise CatalogError(
                    "duplicate_groups: the fingerprint index changed under this update (is "
                    f"another process indexing at the same time?); run it again: {exc.orig}"
                ) from exc
            last = done * CHUNK >= len(prepared)
            if done * CHUNK >= next_analyze or (last and len(prepared) >= ANALYZE_AFTER):
                with self.engine.begin() as conn:
                    self._analyze(conn)
                next_analyze *= 2
        return changed

    def remove(self, track_ids: Iterable[str]) -> list[str]:
        """Take tracks out of the index (their keys too); returns those that were indexed.

        A group named after a removed track is renamed after its oldest remaining member
        (groups are named after their first-indexed track).
        """
        ids = list(dict.fromkeys(track_ids))
        removed: list[str] = []
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    sa.select(TRACKS.c.seq, TRACKS.c.track_id).where(TRACKS.c.track_id.in_(chunk))
                ).all()
                if not rows:
                    continue
                seqs = [r.seq for r in rows]
                conn.execute(KEYS.delete().where(KEYS.c.seq.in_(seqs)))
                conn.execute(TRACKS.delete().where(TRACKS.c.seq.in_(seqs)))
                removed.extend(r.track_id for r in rows)
            for group in removed:  # only groups named after a removed track change name
                heir = conn.execute(
                    sa.select(TRACKS.c.track_id)
                    .where(TRACKS.c.group_id == group)
                    .order_by(TRACKS.c.seq)
                    .limit(1)
                ).scalar()
                if heir is not None:
                    conn.execute(
                        TRACKS.update().where(TRACKS.c.group_id == group).values(group_id=heir)
                    )
        return removed

    @staticmethod
    def _analyze(conn: sa.Connection) -> None:
        """Refresh PostgreSQL's statistics after a large load.

        Planned on the statistics of a near-empty table, the candidate query scans every key
        (350 ms per track at 100k tracks) instead of using the index (2 ms); autovacuum
        catches up only later. Geometric spacing keeps the total cost logarithmic.
        """
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"ANALYZE {TRACKS.name}, {KEYS.name}"))

    def _add_chunk(self, conn: sa.Connection, chunk: Sequence[_Prepared]) -> dict[str, str]:
        ids = [p.track_id for p in chunk]
        known = set(
            conn.execute(sa.select(TRACKS.c.track_id).where(TRACKS.c.track_id.in_(ids))).scalars()
        )
        added: list[str] = []
        relabelled: set[str] = set()
        for track in chunk:
            if track.track_id in known:
                continue
            groups = self._matching_groups(conn, track) if track.matchable else set()
            group = track.track_id
            if groups:
                group, *losers = self._by_age(conn, groups)
                if losers:
                    moved = conn.execute(
                        sa.select(TRACKS.c.track_id).where(TRACKS.c.group_id.in_(losers))
                    ).scalars()
                    relabelled.update(moved)
                    conn.execute(
                        TRACKS.update().where(TRACKS.c.group_id.in_(losers)).values(group_id=group)
                    )
            inserted = conn.execute(
                TRACKS.insert(),
                {
                    "track_id": track.track_id,
                    "group_id": group,
                    "duration_s": track.duration_s,
                    "matchable": track.matchable,
                    "prefix": track.items.astype("<u4").tobytes() if track.matchable else b"",
                },
            ).inserted_primary_key
            assert inserted is not None  # a single-row insert reports its key
            seq = inserted[0]
            if len(track.sketch):
                conn.execute(KEYS.insert(), [{"key": int(k), "seq": seq} for k in track.sketch])
            added.append(track.track_id)
        report = added + sorted(relabelled - set(added))
        out: dict[str, str] = {}
        for part in _chunks(report):
            out.update(
                conn.execute(
                    sa.select(TRACKS.c.track_id, TRACKS.c.group_id).where(
                        TRACKS.c.track_id.in_(part)
                    )
                ).all()
            )
        return out

    def _matching_groups(self, conn: sa.Connection, track: _Prepared) -> set[str]:
        """Groups of the indexed tracks that verify as the same recording as ``track``."""
        slack = duration_tolerance(track.duration_s / (1 - DURATION_TOLERANCE_RATIO))
        keys = [int(k) for k in track.keys]
        candidates = _candidate_query(conn.dialect.name)
        params: dict[str, Any] = {
            "lo": track.duration_s - slack,
            "hi": track.duration_s + slack,
            "keys": json.dumps(keys) if conn.dialect.name == "sqlite" else keys,
        }
        seqs = [row.seq for row in conn.execute(candidates, params)]
        if not seqs:
            return set()
        rows = conn.execute(
            sa.select(TRACKS.c.group_id, TRACKS.c.duration_s, TRACKS.c.prefix).where(
                TRACKS.c.seq.in_(seqs)
            )
        ).all()
        groups: set[str] = set()
        for group_id, duration_s, prefix in rows:
            if group_id in groups:
                continue
            if abs(duration_s - track.duration_s) > duration_tolerance(
                max(duration_s, track.duration_s)
            ):
                continue
            other = np.frombuffer(prefix, dtype="<u4")
            if bit_error_rate(track.items, other)[0] <= MATCH_BER:
                groups.add(group_id)
        return groups

    def _by_age(self, conn: sa.Connection, groups: set[str]) -> list[str]:
        """``groups`` oldest first (by when the track naming each was indexed)."""
        rows = conn.execute(
            sa.select(TRACKS.c.track_id, TRACKS.c.seq).where(TRACKS.c.track_id.in_(sorted(groups)))
        ).all()
        return [track_id for track_id, _ in sorted(rows, key=lambda r: r.seq)]

    def groups(self) -> pd.DataFrame:
        """Every indexed track and its group.

        Returns
        -------
        pandas.DataFrame
            Columns ``track_id``, ``duplicate_group`` (the first-indexed track of the group),
            ``group_size`` and ``matchable`` (``False``: too short, silent or near-constant to
            compare, so alone in its group), sorted by group then track.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(TRACKS.c.track_id, TRACKS.c.group_id, TRACKS.c.matchable)
            ).all()
        frame = pd.DataFrame(
            [(r.track_id, r.group_id, bool(r.matchable)) for r in rows],
            columns=["track_id", "duplicate_group", "matchable"],
        )
        frame["group_size"] = (
            frame.groupby("duplicate_group")["track_id"].transform("size").astype(int)
        )
        frame = frame.sort_values(["duplicate_group", "track_id"], ignore_index=True)
        return frame[["track_id", "duplicate_group", "group_size", "matchable"]]
