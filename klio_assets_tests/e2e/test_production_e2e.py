"""The core end-to-end run on production parts, each started here for real, with the same
assertions as locally:

* ``gcs``: outputs and source audio on ``gs://`` in a GCS emulator (gcp-storage-emulator);
* ``s3``: the same on ``s3://`` in moto's S3 server;
* ``portable``: Beam's ``PortableRunner`` against the local job service, SDK workers in a
  separate worker-pool process (``--environment_type=EXTERNAL``), run from another folder;
* ``postgres``: the production ``deploy/dagster.yaml`` (dagster-postgres, run queue) on a real
  PostgreSQL server, and the track catalog in PostgreSQL too;
* ``local``: the reference (FnApiRunner, SQLite, a folder).

Each registers four tracks (one broken), runs ``source_audio`` + ``downsampled_audio`` through
the CLI's code path, checks outputs exist, decode, and that no temporary object was left, then
runs again: every good track is skipped (by the CLI's existence check and inside Beam).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dagster as dg
import pytest
import soundfile as sf

from klio_assets.catalog.database import get_catalog
from klio_assets.cli.main import _planned
from klio_assets.orchestration import launch
from klio_assets.orchestration.registration import register_tracks
from klio_assets.settings import Settings
from klio_assets.worker.storage import Storage
from klio_assets_tests.support import services
from klio_assets_tests.support.postgres import running_postgres

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ORDER = ["wav44", "broken", "flac48", "ogg32"]
GOOD = ["wav44", "flac48", "ogg32"]
SELECTED = ["source_audio", "downsampled_audio"]
BUCKET = "klio-e2e"


def _all_names(storage: Storage) -> list[str]:
    """Every file or object under the storage root."""
    if storage.remote:
        return list(storage.fs.find(storage.root))
    return [os.path.join(d, f) for d, _, files in os.walk(storage.root) for f in files]


def _upload_sources(storage_root: str, tracks, options=None) -> dict[str, str]:
    """Copy the generated tracks into the bucket; their URIs by track ID."""
    bucket = Storage(storage_root, options)
    uris = {}
    for track_id in ORDER:
        path = tracks[track_id].path
        uri = f"{storage_root}/audio/{os.path.basename(path)}"
        bucket.fs.put_file(path, uri)
        uris[track_id] = uri
    return uris


@contextlib.contextmanager
def scenario(name, tmp_path, monkeypatch, catalog_tracks):
    """Set up the environment of one deployment; yield the source URIs by track ID."""
    local = {t: catalog_tracks[t].path for t in ORDER}
    if name == "local":
        yield local
    elif name == "gcs":
        with services.gcs_emulator(tmp_path / "gcs", bucket=BUCKET) as endpoint:
            for key, value in services.gcs_emulator_env(endpoint).items():
                monkeypatch.setenv(key, value)
            monkeypatch.setenv("KLIO_ASSETS_STORAGE", f"gs://{BUCKET}/outputs")
            yield _upload_sources(f"gs://{BUCKET}", catalog_tracks)
    elif name == "s3":
        with services.s3_server(tmp_path / "s3", bucket=BUCKET) as endpoint:
            for key, value in services.s3_server_env(endpoint).items():
                monkeypatch.setenv(key, value)
            monkeypatch.setenv("KLIO_ASSETS_STORAGE", f"s3://{BUCKET}/outputs")
            yield _upload_sources(f"s3://{BUCKET}", catalog_tracks)
    elif name == "portable":
        with services.portable_beam(tmp_path / "beam") as beam:
            monkeypatch.setenv("KLIO_ASSETS_BEAM_OPTIONS", " ".join(beam.pipeline_args()))
            yield local
            # The work was done by SDK workers the pool started, not in this process.
            assert "Starting worker with command" in beam.worker_pool_log.read_text()
    elif name == "postgres":
        with running_postgres(tmp_path / "pg") as pg:
            pg.create_database("dagster")
            monkeypatch.setenv("KLIO_ASSETS_CATALOG", pg.create_database("catalog"))
            for key, value in {
                "DAGSTER_PG_HOST": pg.host,
                "DAGSTER_PG_PORT": str(pg.port),
                "DAGSTER_PG_USER": pg.user,
                "DAGSTER_PG_PASSWORD": "",
                "DAGSTER_PG_DB": "dagster",
            }.items():
                monkeypatch.setenv(key, value)
            home = Path(os.environ["KLIO_ASSETS_HOME"])
            (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
            yield local
    else:
        raise AssertionError(name)


@pytest.mark.parametrize("deployment", ["local", "gcs", "s3", "portable", "postgres"])
def test_core_run_on_production_parts(deployment, home, tmp_path, monkeypatch, catalog_tracks):
    with scenario(deployment, tmp_path, monkeypatch, catalog_tracks) as uris:
        settings = Settings.from_env()
        storage = Storage(settings.storage)
        instance = dg.DagsterInstance.get()
        try:
            _check_deployment(deployment, instance, storage)
            catalog = get_catalog(settings.catalog_url)
            register_tracks(instance, catalog, [(t, uris[t]) for t in ORDER])

            first = launch.execute_range(
                instance, selected=SELECTED, track_ids=ORDER, storage=storage
            )
            assert not first.success, "the broken track must fail the run (after the rest is saved)"
            detail = first.summary["tracks_detail"]
            assert {t: detail[t]["downsampled_audio"]["status"] for t in ORDER} == {
                "wav44": "computed",
                "flac48": "computed",
                "ogg32": "computed",
                "broken": "failed",
            }, {t: detail[t]["downsampled_audio"].get("reason") for t in ORDER}
            assert "cannot decode" in detail["broken"]["downsampled_audio"]["reason"]
            for name in SELECTED:
                assert set(instance.get_materialized_partitions(dg.AssetKey(name))) == set(GOOD)
            for track_id in GOOD:
                uri = detail[track_id]["downsampled_audio"]["uri"]
                assert uri.startswith(f"{settings.storage}/downsampled_audio/v")
                assert storage.exists(uri)
                with storage.local_copy(uri) as path:
                    info = sf.info(path)
                assert info.samplerate == 22050 and info.channels == 1
                assert info.duration == pytest.approx(catalog_tracks[track_id].seconds, abs=1e-3)
            leftovers = [n for n in _all_names(storage) if ".tmp-" in n]
            assert leftovers == [], "temporary names must never survive a commit"
            if deployment == "portable":
                assert first.summary["beam_job_id"].startswith("job-"), "a job of the job service"

            # Rerun: the CLI's check finds every good track done (Dagster + outputs exist) ...
            todo, done = launch.tracks_to_run(
                instance, storage, _planned(settings), SELECTED, ORDER
            )
            assert todo == ["broken"] and done["downsampled_audio"] == sorted(GOOD)
            # ... and a forced launch over the same range skips them inside Beam.
            again = launch.execute_range(
                instance, selected=SELECTED, track_ids=ORDER, storage=storage
            )
            statuses = {
                t: again.summary["tracks_detail"][t]["downsampled_audio"]["status"] for t in ORDER
            }
            assert statuses == {
                "wav44": "skipped",
                "flac48": "skipped",
                "ogg32": "skipped",
                "broken": "failed",
            }, {
                t: again.summary["tracks_detail"][t]["downsampled_audio"].get("reason")
                for t in ORDER
            }
        finally:
            instance.dispose()


def _check_deployment(deployment, instance, storage):
    """The scenario really runs on what it claims (not silently on local defaults)."""
    if deployment in ("gcs", "s3"):
        assert storage.remote and storage.root.startswith(("gs://", "s3://"))
    if deployment == "gcs":
        # Dagster-side code gets a client through dagster-gcp's GCSResource, on the emulator.
        from klio_assets.resources import StorageResource

        client = StorageResource(root=storage.root).gcs_client()
        assert sorted(b.name for b in client.list_blobs(BUCKET, prefix="audio/")) == [
            "audio/broken.mp3",
            "audio/flac48.flac",
            "audio/ogg32.ogg",
            "audio/wav44.wav",
        ]
    if deployment == "postgres":
        from dagster_postgres import PostgresEventLogStorage

        from klio_assets.postgres_events import BatchedPostgresEventLogStorage

        # deploy/dagster.yaml's event log: dagster-postgres' storage with batched inserts.
        assert type(instance.event_log_storage) is BatchedPostgresEventLogStorage
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
        assert type(instance.schedule_storage).__name__ == "PooledPostgresScheduleStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 4
    if deployment == "portable":
        assert "--environment_type=EXTERNAL" in os.environ["KLIO_ASSETS_BEAM_OPTIONS"]
