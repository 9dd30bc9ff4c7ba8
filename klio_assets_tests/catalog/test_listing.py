"""The catalog's listing and removal (``klio-assets tracks``/``remove``), on SQLite and on a
real PostgreSQL server."""

import sqlalchemy as sa

from klio_assets.catalog.database import TrackCatalog
from klio_assets_tests.support.postgres import running_postgres


def _exercise(catalog: TrackCatalog) -> None:
    ids = [f"t{i:03d}" for i in range(250)]
    catalog.register([(t, f"/m/{t}.wav") for t in ids])
    assert catalog.resolve([*ids, "nope"]) == {t: f"/m/{t}.wav" for t in ids}
    catalog.record_outcomes(
        "loudness", version="2", run_id="r", failed={"t007": "bad", "t200": "worse"},
        succeeded=ids[:100],
    )  # fmt: skip
    catalog.record_outcomes("beats", version="1", run_id="r", failed={"t007": "bad"}, succeeded=[])

    # Keyset pages: every track once, in registration order, whatever the page size.
    seen, after = [], 0
    while page := catalog.tracks_page(after_seq=after, limit=37):
        seen += [row[1] for row in page]
        after = page[-1][0]
    assert seen == ids
    assert catalog.seq_of("t100") is not None and catalog.seq_of("nope") is None
    after_100 = catalog.tracks_page(after_seq=catalog.seq_of("t100") or 0, limit=2)
    assert [row[1] for row in after_100] == ["t101", "t102"]

    failed = catalog.tracks_page(limit=10, failed=True)
    assert [row[1] for row in failed] == ["t007", "t200"]
    assert catalog.failures_of(["t007", "t200", "t001"]) == {
        "t007": {"beats": "bad", "loudness": "bad"},
        "t200": {"loudness": "worse"},
    }
    missing = catalog.tracks_page(limit=1000, missing=("loudness", "2"))
    assert [row[1] for row in missing] == ["t007", *ids[100:]]  # failed: not materialized
    assert len(catalog.tracks_page(limit=1000, missing=("loudness", "3"))) == 250

    assert catalog.remove(["t007", "ghost", "t050"]) == ["t007", "t050"]
    assert catalog.resolve(["t007", "t050", "t051"]) == {"t051": "/m/t051.wav"}
    assert catalog.failures_of(["t007"]) == {}
    assert catalog.tracks_page(limit=10, failed=True)[0][1] == "t200"
    assert catalog.count() == 248
    # Registered again, t050 has no output in the ledger any more: its rows went with it.
    catalog.register([("t050", "/m/t050.wav")])
    assert "t050" in [r[1] for r in catalog.tracks_page(limit=1000, missing=("loudness", "2"))]


def test_listing_and_removal_on_sqlite(tmp_path):
    _exercise(TrackCatalog(f"sqlite:///{tmp_path}/catalog.db"))


def test_listing_and_removal_on_postgresql(tmp_path):
    with running_postgres(tmp_path) as pg:
        pg.create_database("catalog")
        _exercise(TrackCatalog(pg.url("catalog")))


def test_an_older_catalog_gets_the_failures_index(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the failures table as catalogs before the index had it
        conn.exec_driver_sql(
            "CREATE TABLE klio_failures (asset VARCHAR(128), track_id VARCHAR(128), "
            "version VARCHAR(128) NOT NULL, reason TEXT NOT NULL, run_id VARCHAR(64) NOT NULL, "
            "failed_at FLOAT NOT NULL, PRIMARY KEY (asset, track_id))"
        )
    TrackCatalog(url).count()
    assert "ix_klio_failures_track_id" in {
        i["name"] for i in sa.inspect(engine).get_indexes("klio_failures")
    }
