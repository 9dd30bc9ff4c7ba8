"""Data versions and provenance of per-track materializations, as Dagster's resolver reads them.

Dagster decides that a partition is stale ("Unsynced" in the UI) from the tags of its latest
materialization (``dagster._core.definitions.data_version``): its code version against the
asset's (``dagster/code_version``), and for each dependency the data version it read
(``dagster/input_data_version/<dep>``) and the storage ID of the dependency's materialization
it read (``dagster/input_event_pointer/<dep>``); a dependency materialized since with another
data version makes it stale. A materialization without those tags "has a new dependency" on
each of its parents, forever. So each per-track materialization carries them:

* ``source_audio``'s data version is the content hash of the source's bytes (BLAKE3, the one
  the engine computes), so only a file whose content changed gives it a new one; its input is
  the external ``source_files`` (:mod:`klio_assets.orchestration.source_files`), whose latest
  observation (the file's stat) it records, so a file changed on disk and observed makes it
  stale;
* every other analysis' data version is Dagster's own logical version: a hash of its code
  version and its inputs' data versions (:func:`logical_version`), so a skipped track
  materialized again keeps its data version and its children stay fresh;
* the inputs' data versions and storage IDs are read back per batch, one indexed query per
  input asset (:func:`~klio_assets.orchestration.dagster_internals.latest_versions.latest_versions`),
  after the inputs of the same batch were logged (the run logs assets in topological order).

An analysis' code version already folds in its parameters and its upstreams' versions
(:meth:`klio_assets.worker.analysis.Analysis.version`), so bumping one analysis makes it and
every descendant stale by code version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import dagster as dg

from klio_assets.orchestration.dagster_internals.latest_versions import (
    LatestVersion,
    latest_versions,
)
from klio_assets.orchestration.source_files import SOURCE_FILES
from klio_assets.worker.plan import SOURCE_ASSET
from klio_assets.worker.records import AnalysisOutcome, TrackResult

#: Dagster's provenance tags (``dagster._core.definitions.data_version``; a test checks they
#: match).
CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
DATA_VERSION_IS_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version"
INPUT_EVENT_POINTER_TAG_PREFIX = "dagster/input_event_pointer"
#: Dagster's data version of a partition never materialized, and its null event pointer.
NULL_DATA_VERSION = "NULL"
NULL_EVENT_POINTER = "NULL"


def logical_version(code_version: str, inputs: Mapping[str, str]) -> str:
    """Dagster's logical data version: sha256 of the code version and the inputs' data
    versions, in the order of the inputs' asset keys (``compute_logical_data_version``)."""
    ordered = [inputs[k] for k in sorted(inputs, key=lambda k: str(dg.AssetKey(k)))]
    return hashlib.sha256("".join((code_version, *ordered)).encode("utf8")).hexdigest()


def source_version(outcome: AnalysisOutcome, result: TrackResult) -> str | None:
    """``source_audio``'s data version: the content hash of the source, when known."""
    content_hash = (outcome.metadata or {}).get("content_hash") or result.content_hash
    return str(content_hash) if content_hash else None


def provenance_tags(
    name: str,
    *,
    code_version: str,
    outcome: AnalysisOutcome,
    result: TrackResult,
    inputs: Mapping[str, LatestVersion | None],
) -> dict[str, str]:
    """The tags of one per-track materialization of analysis ``name``.

    Parameters
    ----------
    code_version : str
        The analysis' planned version (the asset's code version).
    inputs : mapping
        Each dependency asset to its latest materialization for this track (None: never
        materialized).
    """
    tags = {CODE_VERSION_TAG: code_version}
    input_versions: dict[str, str] = {}
    for dep, latest in inputs.items():
        version = NULL_DATA_VERSION if latest is None else latest.data_version or "INITIAL"
        input_versions[dep] = version
        tags[f"{INPUT_DATA_VERSION_TAG_PREFIX}/{dep}"] = version
        tags[f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{dep}"] = (
            NULL_EVENT_POINTER if latest is None else str(latest.storage_id)
        )
    content = source_version(outcome, result) if name == SOURCE_ASSET else None
    if content is not None:
        tags[DATA_VERSION_TAG] = content
        tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
    else:
        tags[DATA_VERSION_TAG] = logical_version(code_version, input_versions)
    return tags


class InputVersions:
    """The latest materialization of each input asset, for one batch of tracks.

    Each input asset is read once per batch, when first asked for: the run logs a batch's
    assets in topological order, so an input of the batch is logged before it is read.

    Parameters
    ----------
    instance : dg.DagsterInstance
    parents : mapping
        Analysis name to the assets it depends on (:func:`klio_assets.orchestration.lineage.parents`).
    track_ids : sequence of str
        The batch's tracks.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        parents: Mapping[str, Sequence[str]],
        track_ids: Sequence[str],
    ):
        self.instance = instance
        self.parents = parents
        self.track_ids = list(track_ids)
        self._read: dict[str, dict[str, LatestVersion]] = {}
        self._cursor: int | None = None

    def of(self, name: str, track_id: str) -> dict[str, LatestVersion | None]:
        """Each dependency of ``name`` to its latest materialization for ``track_id``
        (``source_audio``'s ``source_files``: its latest observation)."""
        out: dict[str, LatestVersion | None] = {}
        deps = [SOURCE_FILES] if name == SOURCE_ASSET else []
        for dep in [*deps, *self.parents.get(name, ())]:
            if dep not in self._read:
                self._read[dep] = latest_versions(
                    self.instance, dep, self.track_ids, observations=dep == SOURCE_FILES
                )
            latest = self._read[dep].get(track_id)
            if latest is None and dep == SOURCE_FILES:
                latest = self._unobserved_source()
            out[dep] = latest
        return out

    def _unobserved_source(self) -> LatestVersion:
        """The input of a source never observed (an unchanged file is not, see
        :mod:`~klio_assets.orchestration.source_files`): no data version, and as event pointer
        the event log's last storage ID now. Dagster reads a partitioned input as changed when
        an event of it came after the pointer with another data version than the one at or
        before it: with a ``NULL`` pointer it finds none before, the same event both times,
        so the first observation of a changed file would never make ``source_audio`` stale;
        with this one, it finds none at or before and the new one after: stale."""
        if self._cursor is None:
            self._cursor = self.instance.event_log_storage.get_maximum_record_id() or 0
        return LatestVersion(storage_id=self._cursor, data_version=NULL_DATA_VERSION)
