"""``source_files``: the tracks' source files, an external asset observed by stat.

Dagster cannot see a file change on disk: ``source_audio``'s data version (the content's hash)
is recorded only when it is computed. So ``source_files`` (partitioned by ``tracks``, upstream
of ``source_audio``) is observed: each observation's data version is the source's stat
(``size:modification stamp``, :func:`klio_assets.worker.storage.source_stat`; no read, no
hash), and ``source_audio``'s materializations record the observation they read (Dagster's
provenance). A newer observation with another stat makes exactly that track's
``source_audio`` stale in Dagster's resolver (the UI's "Unsynced"); Dagster 1.13 flags only
direct children of new data, ``klio-assets run --stale`` recomputes the track's whole chain.

Observed at registration (``klio-assets add``, the landing sensor) and by ``run --stale``
before it asks what is stale. Only tracks whose stat differs from their latest observation get
a new one: the latest observations are read in one indexed query per 1,000 tracks, and new
ones are stored in batches
(:func:`~klio_assets.orchestration.dagster_internals.observations.store_observations`).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.orchestration.dagster_internals.latest_versions import latest_versions
from klio_assets.orchestration.dagster_internals.observations import store_observations
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.worker.storage import source_stat

#: The external asset's name.
SOURCE_FILES = "source_files"
#: Dagster's data version tag (``dagster._core.definitions.data_version``).
_DATA_VERSION_TAG = "dagster/data_version"
_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"


def source_files_spec(group_name: str) -> dg.AssetSpec:
    """The external ``source_files`` asset: one partition per track."""
    return dg.AssetSpec(
        key=SOURCE_FILES,
        partitions_def=tracks_partitions,
        group_name=group_name,
        description="The tracks' source files, as registered (an external asset). Observed at "
        "registration and by `klio-assets run --stale`: the data version is the file's size and "
        "modification stamp, so a file changed on disk makes its track's source_audio stale.",
    )


def observe_sources(
    instance: dg.DagsterInstance, catalog: TrackCatalog, track_ids: Sequence[str]
) -> list[str]:
    """Observe the sources of ``track_ids`` whose stat changed since their last observation
    (or that have none); returns those tracks.

    Sources that cannot be stat'ed (missing, unreachable) are not observed: unknown, not
    changed.
    """
    uris = catalog.resolve(list(track_ids))
    if not uris:
        return []
    ids = [t for t in track_ids if t in uris]
    observed = latest_versions(instance, SOURCE_FILES, ids, observations=True)
    new: list[dg.AssetObservation] = []
    for track_id in ids:
        stat = source_stat(uris[track_id])
        if stat is None:
            continue
        version = f"{stat.size_bytes}:{stat.modified}"
        last = observed.get(track_id)
        if last is None or last.data_version != version:
            new.append(
                dg.AssetObservation(
                    asset_key=SOURCE_FILES,
                    partition=track_id,
                    tags={_DATA_VERSION_TAG: version, _USER_PROVIDED_TAG: "true"},
                    metadata={"uri": uris[track_id], "size_bytes": stat.size_bytes},
                )
            )
    store_observations(instance, new)
    return [o.partition for o in new if o.partition is not None]
