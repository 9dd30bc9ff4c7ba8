"""The storage resource: the root URI under which every analysis writes its outputs."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from klio_assets.worker.storage import Storage


class StorageResource(dg.ConfigurableResource):
    """Root of analysis outputs: a local folder, ``gs://bucket/prefix`` or ``s3://bucket/prefix``.

    Layout: ``<root>/<analysis>/v<version>/<shard>/<track_id>.<ext>``; writes are atomic.
    """

    root: str = Field(
        description="Output root: a folder, gs://bucket/prefix or s3://bucket/prefix."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for remote roots (credentials, emulator endpoint).",
    )
    fsync: bool = Field(True, description="Flush local outputs to disk before committing them.")
    gcp_project: str | None = Field(
        None, description="Google Cloud project of gcs_client() (default: the environment's)."
    )

    def get_storage(self) -> Storage:
        """The worker-side :class:`~klio_assets.worker.storage.Storage` for this root.

        Raises
        ------
        StorageError
            A remote root that does not answer (one line, within seconds: see
            :meth:`~klio_assets.worker.storage.Storage.check_reachable`).
        """
        storage = Storage(self.root, self.options, fsync=self.fsync)
        storage.check_reachable()
        return storage

    def gcs_client(self):
        """A ``google.cloud.storage.Client`` for Dagster-side code that needs one (sensors
        listing new audio in a bucket), from dagster-gcp's ``GCSResource``.

        Credentials are Application Default Credentials; with ``STORAGE_EMULATOR_HOST`` set the
        client talks to that emulator anonymously. Outputs themselves go through
        :meth:`get_storage` (atomic writes, existence checks), not through this client.
        """
        from dagster_gcp import GCSResource  # noqa: PLC0415 - the gcp extra

        return GCSResource(project=self.gcp_project).get_client()
