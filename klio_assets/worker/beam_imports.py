"""Import Apache Beam without the optional parts a local worker never uses.

``import apache_beam`` brings in pandas and pyarrow (DataFrame type hints), the Google Cloud
Storage, BigQuery and Pub/Sub clients (its own I/O connectors) and apitools: 119 MB of the
248 MB a worker holds once its imports are done. boto3 (its S3 file system), pymongo (its
MongoDB connector) and the Dataflow API client add ~180 ms more to the start. Beam imports each of them inside
``try: ... except ImportError``, so a worker process that refuses them while Beam is imported
gets a working Beam without them. Only the local worker process (``python -m
klio_assets.worker``) does this, before anything else imports Beam; a process that launches
Dataflow jobs needs Beam's GCS file system to stage, and gets the whole of Beam.

After Beam is imported nothing is refused any more: an analysis that imports pandas gets it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

#: Modules refused while Beam is imported (with their submodules). Beam's connectors to
#: BigQuery, Pub/Sub and GCS are refused at their Beam module, so that Beam skips them
#: silently (it warns about a client library that fails below its own module).
BEAM_EXTRAS: tuple[str, ...] = (
    "pandas",
    "pyarrow",
    "apache_beam.io.gcp.bigquery",
    "apache_beam.io.gcp.gcsfilesystem",
    # The Pub/Sub client, not Beam's Pub/Sub module: Beam's direct runner imports that
    # module when it runs a job (to look for Pub/Sub reads), and with the client there it
    # brings ~360 modules (google.api_core, google.auth, cryptography, requests): 0.13 s
    # of every job's start on one core.
    "google.cloud.pubsub",
    "google.cloud.pubsub_v1",
    "google.pubsub_v1",
    "apache_beam.io.gcp.gcsio",
    "apache_beam.transforms.xlang.io",
    "google.cloud.storage",
    "google.cloud.bigquery",
    "apitools",
    # Beam's S3 file system (boto3), MongoDB connector (pymongo) and Dataflow API client:
    # ~180 ms of the worker's start (issue 15); outputs go through fsspec, not Beam's I/O.
    "apache_beam.io.aws",
    "pymongo",
    "bson",
    "google.cloud.dataflow",
    "google.cloud.dataflow_v1beta3",
)

#: Modules Beam's direct runner imports when it runs a job, imported with the rest (under
#: the refusals above: its Pub/Sub module without the client) so that the job's start does
#: not import them on its critical path.
RUN_TIME_MODULES: tuple[str, ...] = (
    "apache_beam.io.gcp.pubsub",
    "apache_beam.runners.direct.direct_runner",
    "apache_beam.testing.test_stream",
    "apache_beam.runners.portability.portable_runner",
    "apache_beam.runners.portability.prism_runner",
    "apache_beam.typehints.opcodes",
)

#: Loggers silenced while Beam is imported lean (warnings about the refused modules).
_QUIET_LOGGERS = ("apache_beam.io.mongodbio",)


class _Refuse(importlib.abc.MetaPathFinder):
    """A finder that answers "no such module" for ``names`` and their submodules."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def import_beam_without_extras(extras: Sequence[str] = BEAM_EXTRAS) -> ModuleType:
    """Import ``apache_beam`` with the modules of ``extras`` refused, and return it.

    Nothing changes when Beam (or one of ``extras``) was imported already.

    Parameters
    ----------
    extras : sequence of str
        Fully qualified module names refused while Beam is imported.

    Returns
    -------
    module
        ``apache_beam``.
    """
    if "apache_beam" in sys.modules or any(name in sys.modules for name in extras):
        import apache_beam  # noqa: PLC0415 - already there

        return apache_beam
    finder = _Refuse(extras)
    sys.meta_path.insert(0, finder)
    # Beam's MongoDB module warns when it finds no pymongo: that is the point here.
    quiet = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        import apache_beam  # noqa: PLC0415 - imported under the finder
        import apache_beam.runners.portability.fn_api_runner  # noqa: PLC0415 - the runner

        for name in RUN_TIME_MODULES:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(finder)
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return apache_beam
