"""The all-done answer's stdlib reader of a SQLite catalog answers exactly as SQLAlchemy's.

One real catalog, filled through :class:`TrackCatalog` and the failure memory (every table the
reader reads, with several versions, assets, stats and failure kinds), then every question
the all-done answer asks, put to both.
"""

import os
import sqlite3

import pytest

from klio_assets.catalog.database import get_catalog
from klio_assets.catalog.failures import RetryPolicy, held_failures, remember_failures, remembered
from klio_assets.catalog.ledger import all_done
from klio_assets.catalog.sqlite_reader import SqliteCatalogReader, open_sqlite_reader
from klio_assets.errors import CatalogError, DecodeError, StorageError
from klio_assets.worker.plan import PlannedAnalysis
from klio_assets.worker.records import AnalysisOutcome, SourceStat, TrackResult
from klio_assets.worker.storage import Storage, source_stat


def _filled(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = get_catalog(url)
    paths = {}
    for i in range(12):
        path = tmp_path / f"t{i:02d}.wav"
        path.write_bytes(b"x" * (100 + i))
        paths[f"t{i:02d}"] = str(path)
    # registered out of name order: answers keep registration order
    catalog.register(sorted(paths.items(), reverse=True))
    ids = list(paths)
    stats = {t: SourceStat(size_bytes=100 + i, modified=f"{i}000") for i, t in enumerate(ids)}
    catalog.record_outcomes(
        "loudness", version="v1", run_id="r1", failed={}, succeeded=ids[:8], source_stats=stats
    )
    catalog.record_outcomes("loudness", version="v2", run_id="r2", failed={}, succeeded=ids[:3])
    catalog.record_outcomes(
        "beats", version="b1", run_id="r3", failed={"t05": "boom"}, succeeded=ids[2:7]
    )
    catalog.record_features(
        "loudness", version="v1", rows={t: (paths[t], {"lufs": -14.0}) for t in ids[:4]}
    )
    catalog.remove(["t11"])
    catalog.record_features("key", version="k1", rows={"t01": (paths["t01"], {"key": "C"})})
    outcomes = {
        "t08": AnalysisOutcome.failed("track 't08': not audio", DecodeError("t08", "u", "p")),
        "t09": AnalysisOutcome.failed("disk full", StorageError("full")),
        "t10": AnalysisOutcome.failed("a bug", ValueError("bug")),
    }
    results = [
        TrackResult(t, paths[t], {"loudness": o}, source_stat=source_stat(paths[t]))
        for t, o in outcomes.items()
    ]
    remember_failures(catalog, "loudness", version="v1", run_id="r4", results=results)
    results[1] = TrackResult("t09", paths["t09"], {"loudness": outcomes["t09"]})  # no stat
    remember_failures(catalog, "loudness", version="v1", run_id="r5", results=results[1:2])
    return url, catalog, ids


def test_the_sqlite_reader_answers_like_the_sqlalchemy_catalog(tmp_path):
    url, catalog, ids = _filled(tmp_path)
    reader = open_sqlite_reader(url)
    assert isinstance(reader, SqliteCatalogReader)
    some = ["t03", "t00", "nope", "t03", "t09"]  # order, an unknown ID and a repeat kept
    assert reader.track_ids() == catalog.track_ids() and len(reader.track_ids()) == 11
    assert reader.resolve(some) == catalog.resolve(some) and "t00" in reader.resolve(some)
    for asset, version in [("loudness", "v1"), ("loudness", "v2"), ("beats", "b1"), ("x", "1")]:
        for wanted in (None, some, ids, []):
            assert reader.not_materialized(asset, version, wanted) == catalog.not_materialized(
                asset, version, wanted
            ), (asset, version, wanted)
        assert reader.source_stats(asset, ids) == catalog.source_stats(asset, ids)
        assert reader.failure_memory(asset) is not None
        assert remembered(reader, asset) == remembered(catalog, asset)
        assert remembered(reader, asset, some) == remembered(catalog, asset, some)
    assert len(reader.source_stats("loudness", ids)) == 8
    found = remembered(reader, "loudness")
    assert set(found) == {"t08", "t09", "t10"} and found["t09"].attempts == 1
    assert found["t08"].permanent is True and found["t09"].permanent is False
    for assets in (None, ["loudness"], ["key"], ["fingerprint"], []):
        assert reader.latest_feature_seq(assets) == catalog.latest_feature_seq(assets)
    # removals count for every asset
    assert reader.latest_feature_seq() > reader.latest_feature_seq(["fingerprint"]) > 0

    planned = {
        "loudness": PlannedAnalysis("loudness", "m", "a", "v1", {}, ".json"),
        "beats": PlannedAnalysis("beats", "m", "a", "b1", {}, ".json"),
    }
    policy = RetryPolicy(max_transient_retries=3, backoff_s=600)
    for wanted in (None, some):
        held = held_failures(reader, planned, ["loudness", "beats"], wanted, policy)
        assert held == held_failures(catalog, planned, ["loudness", "beats"], wanted, policy)
    assert set(held_failures(reader, planned, ["loudness"], None, policy)["loudness"]) == {
        "t08",
        "t10",  # t09's stat is unknown now: not held (its file is there)
    }
    storage = Storage(str(tmp_path / "outputs"))
    for selected, wanted in ((["loudness"], None), (["beats"], ids[2:7]), (["beats"], None)):
        assert all_done(reader, storage, planned, selected, wanted) == all_done(
            catalog, storage, planned, selected, wanted
        )
    reader.close()


def test_the_reader_leaves_to_sqlalchemy_what_it_cannot_read_as_it_is(tmp_path):
    missing = tmp_path / "none" / "catalog.db"
    assert open_sqlite_reader(f"sqlite:///{missing}") is None
    assert not missing.parent.exists()  # nothing created
    assert open_sqlite_reader("postgresql+psycopg2://u@localhost/db") is None
    assert open_sqlite_reader("sqlite://") is None
    assert open_sqlite_reader(f"sqlite:///{tmp_path / 'c.db'}?timeout=5") is None
    # a catalog from before some table: SQLAlchemy adds it on the full path
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE klio_tracks (seq INTEGER PRIMARY KEY, track_id TEXT)")
    conn.close()
    assert open_sqlite_reader(f"sqlite:///{old}") is None


def test_the_reader_writes_nothing_and_names_the_catalog_when_it_cannot_read(tmp_path):
    url, catalog, _ = _filled(tmp_path)
    catalog.engine.dispose()
    before = sorted(os.listdir(tmp_path))
    reader = open_sqlite_reader(url)
    assert reader is not None
    with pytest.raises(Exception, match=r"readonly|query_only|attempt to write"):
        reader._conn.execute("DELETE FROM klio_tracks")
    assert reader.track_ids()
    reader.close()
    assert sorted(os.listdir(tmp_path)) == before  # no -wal/-shm left behind
    broken = open_sqlite_reader(url)
    assert broken is not None
    broken._conn.execute("PRAGMA query_only = OFF")
    broken._conn.execute("DROP TABLE klio_source_stats")
    with pytest.raises(
        CatalogError, match=r"cannot read the track catalog at sqlite:///.*klio_source_stats"
    ):
        broken.source_stats("loudness", ["t00"])
    broken.close()
