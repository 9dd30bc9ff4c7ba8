"""Dagster resources of klio-assets (installed as ``klio_assets.resources``).

* :class:`~klio_assets.resources.beam.BeamRunnerResource`: which Beam runner runs a batch.
* :class:`~klio_assets.resources.storage.StorageResource`: where outputs live.
* :class:`~klio_assets.resources.catalog.CatalogResource`: track ID to source audio.
"""

from klio_assets.resources.beam import BeamJob, BeamRunnerResource, DataflowConfig
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource

__all__ = ["BeamJob", "BeamRunnerResource", "CatalogResource", "DataflowConfig", "StorageResource"]
