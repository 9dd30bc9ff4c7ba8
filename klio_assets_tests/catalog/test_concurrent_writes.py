"""Two runs recording the same tracks at the same moment (overlapping batches, one track
failing in both): every catalog write replaces a track's rows (delete, then insert), and on
PostgreSQL the second of two such transactions used to die on the first one's new row
(a unique violation), failing its whole Dagster run."""

from __future__ import annotations

import threading
import uuid

import pytest

from klio_assets.catalog.database import TrackCatalog
from klio_assets.catalog.failures import remember_failures
from klio_assets.worker.records import AnalysisOutcome, SourceStat, Status, TrackResult
from klio_assets_tests.support.postgres import running_postgres

pytestmark = pytest.mark.postgres

ROUNDS = 30
TRACKS = [f"t{i:03d}" for i in range(40)]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    with running_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


def _at_once(write) -> list[BaseException]:
    """``write(run_id)`` from two threads released together, ``ROUNDS`` times; the errors."""
    errors: list[BaseException] = []
    for _ in range(ROUNDS):
        barrier = threading.Barrier(2)

        def one(run_id: str, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                write(run_id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(f"run-{k}",)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return errors


def test_two_runs_record_the_same_outcomes_at_once(postgres):
    catalog = TrackCatalog(postgres.create_database(f"conc_{uuid.uuid4().hex[:8]}"))
    catalog.register([(t, f"/audio/{t}.flac") for t in TRACKS])
    stats = {t: SourceStat(size_bytes=1, modified="1") for t in TRACKS}

    def write(run_id: str) -> None:
        catalog.record_outcomes(
            "downsampled_audio", version="v1", run_id=run_id,
            failed={"t000": "track 't000': broken"}, succeeded=TRACKS[1:], source_stats=stats,
        )  # fmt: skip
        catalog.record_features(
            "downsampled_audio", version="v1",
            rows={t: (f"/out/{t}.flac", {"duration_s": 1.0}) for t in TRACKS[1:]},
        )  # fmt: skip

    assert _at_once(write) == []
    assert catalog.not_materialized("downsampled_audio", "v1", TRACKS[1:]) == []


def test_two_runs_remember_the_same_failure_at_once(postgres):
    catalog = TrackCatalog(postgres.create_database(f"conc_{uuid.uuid4().hex[:8]}"))
    catalog.register([(t, f"/audio/{t}.flac") for t in TRACKS])
    failed = TrackResult(
        track_id="t000",
        uri="/audio/t000.flac",
        analyses={
            "downsampled_audio": AnalysisOutcome(
                Status.FAILED, reason="track 't000': broken", error="DecodeError"
            )
        },
    )

    def write(run_id: str) -> None:
        remember_failures(
            catalog, "downsampled_audio", version="v1", run_id=run_id, results=[failed]
        )

    assert _at_once(write) == []
