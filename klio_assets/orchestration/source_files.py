"""``source_files``: the tracks' source files, an external asset observed by stat.

Dagster cannot see a file change on disk: ``source_audio``'s data version (the content's hash)
is recorded only when it is computed. So ``source_files`` (partitioned by ``tracks``, upstream
of ``source_audio``) is observed: each observation's data version is the source's stat
(``size:modification stamp``, :func:`klio_assets.worker.storage.source_stat`; no read, no
hash), and ``source_audio``'s materializations record the observation they read (Dagster's
provenance). A newer observation with another stat makes exactly that track's
``source_audio`` stale in Dagster's resolver (the UI's "Unsynced"); Dagster 1.13 flags only
direct children of new data, ``klio-assets run --stale`` recomputes the track's whole chain.

Observed when a file is seen changed: ``klio-assets run --stale`` (also ``--dry-run``) stats
the sources before it asks what is stale, and writes an observation only for a track whose
stat differs from its latest observation or, never observed, from the stat its
``source_audio`` was computed from (the catalog's ``klio_source_stats``). An unchanged file is
never observed: ``source_audio`` recorded its input as ``NULL`` (no observation), which is
still the current one, so it is fresh. Registration writes nothing to Dagster's event log for
sources: at 0.2-0.35 ms an observation (serializing the event is most of it), observing every
new file made registering a million tracks cost 200-350 s more. The latest observations are
read in one indexed query per 1,000 tracks, and new ones are stored in batches
(:func:`~klio_assets.orchestration.dagster_internals.observations.store_observations`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from klio_assets.catalog.database import TrackCatalog
from klio_assets.orchestration.dagster_internals.latest_versions import latest_versions
from klio_assets.orchestration.dagster_internals.observations import store_observations
from klio_assets.orchestration.partitions import tracks_partitions
from klio_assets.worker.plan import SOURCE_ASSET
from klio_assets.worker.records import SourceStat
from klio_assets.worker.storage import source_stats

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
        description="The tracks' source files, as registered (an external asset). A file seen "
        "changed since its source_audio was computed is observed by `klio-assets run --stale` "
        "(also with --dry-run): the data version is the file's size and modification stamp, so "
        "it makes its track's source_audio stale. An unchanged file has no observation.",
    )


def observe_sources(
    instance: dg.DagsterInstance,
    catalog: TrackCatalog,
    track_ids: Sequence[str],
    current: Mapping[str, SourceStat | None] | None = None,
) -> list[str]:
    """Observe the sources of ``track_ids`` seen changed; returns those tracks.

    A source is changed when its stat differs from its latest observation or, never observed,
    from the stat recorded when its ``source_audio`` was computed. A track never computed and
    never observed has nothing to compare with: not observed (its ``source_audio`` is missing
    anyway). Sources that cannot be stat'ed (missing, unreachable) are not observed: unknown,
    not changed. ``current``: stats already made (track ID to stat), not made again.
    """
    uris = catalog.resolve(list(track_ids))
    if not uris:
        return []
    ids = [t for t in track_ids if t in uris]
    observed = latest_versions(instance, SOURCE_FILES, ids, observations=True)
    computed_from = catalog.source_stats(SOURCE_ASSET, [t for t in ids if t not in observed])
    known: dict[str, str | None] = {}
    for track_id in ids:
        last = observed.get(track_id)
        baseline = computed_from.get(track_id)
        if last is not None:
            known[track_id] = last.data_version
        elif baseline is not None:
            known[track_id] = stat_version(baseline)
    stats = dict(current or {})
    stats.update(source_stats({t: uris[t] for t in known if t not in stats}))
    new: list[dg.AssetObservation] = []
    for track_id in known:
        stat = stats.get(track_id)
        if stat is None or stat_version(stat) == known[track_id]:
            continue
        new.append(
            dg.AssetObservation(
                asset_key=SOURCE_FILES,
                partition=track_id,
                tags={_DATA_VERSION_TAG: stat_version(stat), _USER_PROVIDED_TAG: "true"},
                metadata={"uri": uris[track_id], "size_bytes": stat.size_bytes},
            )
        )
    store_observations(instance, new)
    return [o.partition for o in new if o.partition is not None]


def stat_version(stat: SourceStat) -> str:
    """A source's data version: its size and modification stamp."""
    return f"{stat.size_bytes}:{stat.modified}"
