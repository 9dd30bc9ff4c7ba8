"""What is left to do, asked of the catalog in SQL: the window's retention and catalog ranges.

The ledger (``klio_materialized``) says, per analysis and track, which output version is
done; ``klio_failures`` which failed, at which version. A track has work to do for an analysis
when the ledger has no row of the analysis' current version and it has not failed at that
version (a failure is retried by the window, :mod:`klio_assets.automation.catalog_ranges`).
Every query here is keyset-paginated on the registration sequence or keyed by track ID, so
what it costs follows the page or the tracks asked about, never the catalog: a version bump
over 10M tracks is read a page at a time, each page one indexed scan that stops at its
``LIMIT``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from klio_assets.catalog.database import FAILURES, MATERIALIZED, TRACKS, TrackCatalog
from klio_assets.catalog.failures import RetryPolicy, remembered

#: Track IDs per ``IN (...)`` query.
_CHUNK = 5000


def _needs(asset: str, version: str, track_id: Any) -> Any:
    """SQL: the track (column ``track_id``) needs ``asset`` at ``version``."""
    done = sa.exists().where(
        MATERIALIZED.c.track_id == track_id,
        MATERIALIZED.c.asset == asset,
        MATERIALIZED.c.version == version,
    )
    failed = sa.exists().where(
        FAILURES.c.track_id == track_id,
        FAILURES.c.asset == asset,
        FAILURES.c.version == version,
    )
    return sa.and_(~done, ~failed)


def pending_page(
    catalog: TrackCatalog,
    versions: Mapping[str, str],
    *,
    after_seq: int,
    limit: int,
    last_seq: int | None = None,
) -> list[tuple[int, str]]:
    """Registered tracks with work to do for some of ``versions``, in registration order.

    Parameters
    ----------
    versions : mapping of str to str
        Analysis name to its current output version.
    after_seq : int
        Keyset: only tracks registered after this sequence number.
    limit : int
        Most tracks returned.
    last_seq : int, optional
        Only tracks up to this sequence number (a range).

    Returns
    -------
    list of (int, str)
        ``(seq, track_id)``.
    """
    if not versions:
        return []
    needs = sa.or_(*(_needs(a, v, TRACKS.c.track_id) for a, v in versions.items()))
    query = sa.select(TRACKS.c.seq, TRACKS.c.track_id).where(TRACKS.c.seq > after_seq, needs)
    if last_seq is not None:
        query = query.where(TRACKS.c.seq <= last_seq)
    query = query.order_by(TRACKS.c.seq).limit(limit)
    with catalog.engine.connect() as conn:
        return [(int(seq), track_id) for seq, track_id in conn.execute(query)]


def last_seq(catalog: TrackCatalog) -> int:
    """The highest registration sequence number (0 for an empty catalog): one index lookup."""
    with catalog.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(TRACKS.c.seq))).scalar_one() or 0)


def needs_in_range(
    catalog: TrackCatalog, versions: Mapping[str, str], *, first_seq: int, last_seq: int
) -> dict[str, list[str]]:
    """Per analysis of ``versions``, the tracks registered from ``first_seq`` to ``last_seq``
    (inclusive) that need it, in registration order: one indexed range scan per analysis."""
    out: dict[str, list[str]] = {}
    with catalog.engine.connect() as conn:
        for asset, version in versions.items():
            query = (
                sa.select(TRACKS.c.track_id)
                .where(
                    TRACKS.c.seq >= first_seq,
                    TRACKS.c.seq <= last_seq,
                    _needs(asset, version, TRACKS.c.track_id),
                )
                .order_by(TRACKS.c.seq)
            )
            out[asset] = list(conn.execute(query).scalars())
    return out


def current_in_ledger(
    catalog: TrackCatalog, track_ids: Sequence[str], versions: Mapping[str, str]
) -> dict[str, set[str]]:
    """Per analysis of ``versions``, those of ``track_ids`` the ledger has at its current
    version (O(tracks asked): one indexed query per analysis and chunk)."""
    out: dict[str, set[str]] = {asset: set() for asset in versions}
    ids = list(dict.fromkeys(track_ids))
    with catalog.engine.connect() as conn:
        for asset, version in versions.items():
            for start in range(0, len(ids), _CHUNK):
                query = sa.select(MATERIALIZED.c.track_id).where(
                    MATERIALIZED.c.asset == asset,
                    MATERIALIZED.c.version == version,
                    MATERIALIZED.c.track_id.in_(ids[start : start + _CHUNK]),
                )
                out[asset].update(conn.execute(query).scalars())
    return out


def settled_failures(
    catalog: TrackCatalog,
    track_ids: Sequence[str],
    versions: Mapping[str, str],
    policy: RetryPolicy,
    inputs: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, set[str]]:
    """Per analysis of ``versions`` (topological order), those of ``track_ids`` whose failure at
    the current version is not retried on its own: permanent, or transient with its retries
    used up (:meth:`~klio_assets.catalog.failures.RememberedFailure.retry_at`); with
    ``inputs``, an upstream's settled failure settles its readers too. Such a track has no
    work to do until its file or the analysis' version changes."""
    out: dict[str, set[str]] = {}
    for asset, version in versions.items():
        found = remembered(catalog, asset, list(track_ids))
        out[asset] = {
            t for t, f in found.items() if f.version == version and f.retry_at(policy) is None
        }
        for upstream in (inputs or {}).get(asset, ()):
            out[asset] |= out.get(upstream, set())
    return out


def seq_range(catalog: TrackCatalog, first_seq: int, last_seq: int) -> list[tuple[int, str]]:
    """``(seq, track_id)`` of the tracks registered from ``first_seq`` to ``last_seq``."""
    query = (
        sa.select(TRACKS.c.seq, TRACKS.c.track_id)
        .where(TRACKS.c.seq >= first_seq, TRACKS.c.seq <= last_seq)
        .order_by(TRACKS.c.seq)
    )
    with catalog.engine.connect() as conn:
        return [(int(seq), track_id) for seq, track_id in conn.execute(query)]


__all__ = [
    "current_in_ledger",
    "last_seq",
    "needs_in_range",
    "pending_page",
    "seq_range",
    "settled_failures",
]
