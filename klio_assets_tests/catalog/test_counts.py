"""The catalog's exact counts (``klio_counts``): kept by triggers through every write path,
on SQLite and on a real PostgreSQL server, and filled once on a catalog from before them."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from klio_assets.catalog import database
from klio_assets.catalog.database import MATERIALIZED, TRACKS, TrackCatalog
from klio_assets_tests.support.postgres import running_postgres


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server, one per module."""
    with running_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_url(request, tmp_path):
    """A factory of URLs of new, empty catalog databases, on SQLite or PostgreSQL."""

    def make() -> str:
        name = f"counts_{uuid.uuid4().hex[:8]}"
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        return request.getfixturevalue("postgres").create_database(name)

    return make


def truth(catalog: TrackCatalog) -> tuple[int, dict[str, int]]:
    """What the counts must say, counted the slow way."""
    with catalog.engine.connect() as conn:
        tracks = conn.execute(sa.select(sa.func.count()).select_from(TRACKS)).scalar_one()
        ledger = conn.execute(
            sa.select(MATERIALIZED.c.asset, sa.func.count()).group_by(MATERIALIZED.c.asset)
        ).all()
    return tracks, {asset: n for asset, n in ledger}


def nonzero(counts: tuple[int, dict[str, int]]) -> tuple[int, dict[str, int]]:
    tracks, ledger = counts
    return tracks, {asset: n for asset, n in ledger.items() if n}


def pairs(ids) -> list[tuple[str, str]]:
    return [(t, f"/music/{t}.wav") for t in ids]


def test_counts_follow_every_write_path(new_url):
    catalog = TrackCatalog(new_url())
    assert catalog.counts() == (0, {})
    first = catalog.register(pairs(f"t{i}" for i in range(50)))
    assert len(first.added) == 50
    # known, added and conflicting IDs in one call: only the added ones count
    again = catalog.register([*pairs(["t1", "t2", "t50", "t51"]), ("t3", "/elsewhere/t3.wav")])
    assert (len(again.added), len(again.known), len(again.conflicts)) == (2, 2, 1)
    assert catalog.counts() == (52, {}) and catalog.count() == 52

    ids = [f"t{i}" for i in range(52)]
    catalog.record_outcomes(
        "loudness", version="1", run_id="r1", failed={"t0": "bad"}, succeeded=ids
    )
    assert catalog.counts() == (52, {"loudness": 51})
    # the same tracks again, at another version: the ledger's delete + insert counts 0
    catalog.record_outcomes("loudness", version="2", run_id="r2", failed={}, succeeded=ids[1:])
    catalog.mark_materialized("loudness", version="2", run_id="", track_ids=ids[:10])
    catalog.mark_materialized("beats", version="1", run_id="", track_ids=ids[:7])
    assert catalog.counts() == (52, {"loudness": 52, "beats": 7}) == truth(catalog)
    # a failure keeps the ledger's earlier row: a row of the ledger and a failed track
    catalog.record_outcomes(
        "loudness", version="3", run_id="r3", failed={"t5": "bad", "t6": "bad"}, succeeded=[]
    )
    assert catalog.counts() == (52, {"loudness": 52, "beats": 7})
    # (t0 failed at version 1, then was entered in the ledger, which keeps its failure)
    assert catalog.failed_with_ledger("loudness") == {"t0", "t5", "t6"}
    assert catalog.failed_with_ledger("beats") == set()

    removed = catalog.remove(["t0", "t5", "t40", "ghost"])
    assert sorted(removed) == ["t0", "t40", "t5"]
    assert nonzero(catalog.counts()) == (49, {"loudness": 49, "beats": 5}) == truth(catalog)
    assert catalog.failed_with_ledger("loudness") == {"t6"}
    catalog.register(pairs(["t0", "t40"]))  # back, without outputs
    assert nonzero(catalog.counts()) == (51, {"loudness": 49, "beats": 5}) == truth(catalog)


@pytest.mark.postgres
def test_statement_triggers_stay_exact_under_concurrent_writers(postgres):
    """Writers at the same time on PostgreSQL: each statement adds its grouped delta to the
    same counts rows (SQLite has one writer at a time)."""
    catalog = TrackCatalog(postgres.create_database(f"counts_{uuid.uuid4().hex[:8]}"))
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for batch in range(5):
                # its own tracks, and tracks that every writer registers at the same time
                own = [f"w{k}-{batch}-{i}" for i in range(200)]
                shared = [f"shared-{batch}-{i}" for i in range(100)]
                catalog.register(pairs(own + shared))
                catalog.record_outcomes(
                    f"a{k % 2}", version=str(batch), run_id=f"r{k}", failed={}, succeeded=own
                )
            catalog.remove([f"w{k}-0-{i}" for i in range(50)])
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = (4 * (5 * 200 - 50) + 5 * 100, {"a0": 2 * 950, "a1": 2 * 950})
    assert catalog.counts() == truth(catalog) == expected


def test_a_catalog_from_before_the_counts_gets_them_filled_once(new_url):
    url = new_url()
    # The schema of before the counts, written without the triggers.
    engine = sa.create_engine(url)
    tables = [t for t in TRACKS.metadata.sorted_tables if t.name != database.COUNTS.name]
    TRACKS.metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        conn.execute(
            TRACKS.insert(),
            [
                {"track_id": t, "uri": u, "added_at": 0.0}
                for t, u in pairs(f"old{i}" for i in range(30))
            ],
        )
        conn.execute(
            MATERIALIZED.insert(),
            [
                {
                    "asset": a,
                    "track_id": f"old{i}",
                    "version": "1",
                    "run_id": "",
                    "materialized_at": 0.0,
                }
                for a, n in (("loudness", 30), ("beats", 12))
                for i in range(n)
            ],
        )
        assert not sa.inspect(conn).has_table(database.COUNTS.name)
    engine.dispose()

    catalog = TrackCatalog(url)  # opening it adds the table and the triggers, and fills it
    assert catalog.counts() == (30, {"loudness": 30, "beats": 12})
    catalog.register(pairs(["new"]))
    catalog.remove(["old0"])
    catalog.record_outcomes("beats", version="2", run_id="r", failed={}, succeeded=["new", "old1"])
    assert nonzero(catalog.counts()) == (30, {"loudness": 29, "beats": 12}) == truth(catalog)
