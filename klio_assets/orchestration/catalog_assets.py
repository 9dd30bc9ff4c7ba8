"""Catalog-level assets: ``duplicate_groups`` and ``track_features`` (unpartitioned).

Both are updated incrementally. Per-track runs write each track's scalar results to the
catalog's features table (:meth:`~klio_assets.catalog.database.TrackCatalog.record_features`), each
write with a new sequence number; these assets read only the rows written since their last
materialization (the sequence number they reached is kept with their output), so their cost
follows what changed, not the size of the catalog:

* ``duplicate_groups`` adds the new fingerprints to the fingerprint index
  (:mod:`klio_assets.catalog.duplicates`) and writes the groups of two or more tracks as Parquet;
* ``track_features`` merges the changed rows into the previous Parquet table (one row per
  track: duration, sample rate, channels, loudness, tempo, duplicate group, and the versions
  that produced them) and writes it again: what a researcher opens in a notebook.

They run on the Dagster side, not in Beam: reading rows and a table is cheap next to decoding.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from klio_assets.catalog.database import (
    DUPLICATE_GROUPS,
    REMOVED,
    TRACK_FEATURES,
    FeatureRow,
    TrackCatalog,
)
from klio_assets.errors import KlioAssetsError
from klio_assets.resources.catalog import CatalogResource
from klio_assets.resources.storage import StorageResource
from klio_assets.worker.analysis import Analysis
from klio_assets.worker.storage import Storage

if TYPE_CHECKING:
    import pandas as pd

    from klio_assets.catalog.duplicates import FingerprintIndex

GROUP_NAME = "catalog"
#: Columns each analysis contributes to ``track_features`` (its scalar results' names).
FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "source_audio": ("duration_s", "sample_rate", "channels", "container", "codec"),
    "loudness": ("loudness_lufs", "loudness_range_lu", "true_peak_dbtp", "sample_peak_dbfs"),
    "beats": ("tempo_bpm", "beat_count"),
    "fingerprint": (),
    "key": ("key", "mode"),
    "speech_segments": ("speech_ratio",),
    "note_events": ("note_count",),
}
#: Columns every ``track_features`` table has, in this order (a contract).
BASE_COLUMNS = (
    "track_id",
    "duration_s",
    "sample_rate",
    "channels",
    "loudness_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "tempo_bpm",
    "duplicate_group",
)
_SEQ_KEY = b"klio_features_seq"


def _table_uri(store: Storage, name: str) -> str:
    return store.join(name, f"{name}.parquet")


def _read_seq(store: Storage, uri: str) -> int:
    """The features sequence number a table reached (0 if there is no table yet)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    if not store.exists(uri):
        return 0
    with store.local_copy(uri) as path:
        metadata = pq.read_schema(path).metadata or {}
    return int(metadata.get(_SEQ_KEY, b"0"))


def _markdown(frame: "pd.DataFrame") -> str:
    """A small DataFrame as a Markdown table."""
    import pandas as pd  # noqa: PLC0415 - keeps pandas out of runs that do not need it

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _read_table(store: Storage, uri: str) -> tuple["pd.DataFrame | None", int]:
    """The previous table and the features sequence number it reached (0 if none)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - pandas' Parquet engine

    if not store.exists(uri):
        return None, 0
    with store.local_copy(uri) as path:
        table = pq.read_table(path)
    seq = int((table.schema.metadata or {}).get(_SEQ_KEY, b"0"))
    return table.to_pandas(), seq


def _write_table(store: Storage, uri: str, frame: "pd.DataFrame", seq: int) -> None:
    """Write ``frame`` as Parquet at ``uri`` atomically, with ``seq`` in its metadata."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _SEQ_KEY: str(seq).encode()}
    )
    with store.atomic_path(uri) as tmp:
        pq.write_table(table, tmp)


def merge_features(
    previous: "pd.DataFrame | None", rows: Sequence[FeatureRow], groups: Mapping[str, str]
) -> "pd.DataFrame":
    """``previous`` with the changed ``rows`` applied and every track's duplicate group.

    Parameters
    ----------
    previous : DataFrame or None
        The last table (``track_id`` column), or None for the first.
    rows : sequence of FeatureRow
        Rows written since, in sequence order (a later row of a track wins; a removal,
        asset :data:`~klio_assets.catalog.database.REMOVED`, drops the track's earlier row).
    groups : mapping of str to str
        Track ID to duplicate group.
    """
    import pandas as pd  # noqa: PLC0415 - keeps pandas out of runs that do not need it

    frame = (
        previous.set_index("track_id") if previous is not None and len(previous) else pd.DataFrame()
    )
    removed = {row.track_id for row in rows if row.asset == REMOVED}
    if removed and len(frame):
        frame = frame.drop(index=[t for t in frame.index if t in removed])
    changed = _changed_rows(rows)
    if changed is not None:
        frame = frame.reindex(frame.index.union(changed.index))
        for column in changed.columns:
            if column not in frame:
                frame[column] = None
            present = changed[column].notna()
            frame.loc[changed.index[present], column] = changed.loc[present, column]
    frame.index.name = "track_id"
    frame = frame.reset_index()
    frame["duplicate_group"] = frame["track_id"].map(groups).fillna(frame["track_id"])
    for column in BASE_COLUMNS:
        if column not in frame:
            frame[column] = None
    rest = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    frame = (
        frame[list(BASE_COLUMNS) + rest]
        .sort_values("track_id", kind="stable")
        .reset_index(drop=True)
    )
    return _typed_columns(frame)


def _changed_rows(rows: Sequence[FeatureRow]) -> "pd.DataFrame | None":
    """One row per changed track (a later row of a track wins), indexed by track ID."""
    import pandas as pd  # noqa: PLC0415 - keeps pandas out of runs that do not need it

    updates: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.asset == REMOVED:  # what a removed track had is gone; later rows start anew
            updates.pop(row.track_id, None)
            continue
        entry = updates.setdefault(row.track_id, {})
        for column in FEATURE_COLUMNS.get(row.asset, ()):
            entry[column] = row.fields.get(column)
        if row.asset != "source_audio":  # every analysis knows the source's duration
            for column in ("duration_s", "sample_rate", "channels"):
                if column in row.fields and column not in entry:
                    entry.setdefault(f"_{column}", row.fields[column])
        entry[f"{row.asset}_version"] = row.version
    if not updates:
        return None
    changed = pd.DataFrame.from_dict(updates, orient="index")
    for column in ("duration_s", "sample_rate", "channels"):
        fallback = f"_{column}"
        if fallback in changed:
            if column in changed:
                changed[column] = changed[column].where(changed[column].notna(), changed[fallback])
            else:
                changed[column] = changed[fallback]
            changed = changed.drop(columns=fallback)
    return changed


#: Columns of ``track_features`` stored as floats and as nullable integers.
_FLOAT_COLUMNS = (
    "duration_s",
    "loudness_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "tempo_bpm",
    "sample_peak_dbfs",
    "speech_ratio",
)
_INT_COLUMNS = ("sample_rate", "channels", "beat_count", "note_count")


def _typed_columns(frame: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd  # noqa: PLC0415 - keeps pandas out of runs that do not need it

    for column in _FLOAT_COLUMNS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("track_id", "duplicate_group"):
        frame[column] = frame[column].astype(str)
    for column in _INT_COLUMNS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def _fingerprint_index(catalog: TrackCatalog) -> "FingerprintIndex":
    from klio_assets.catalog.duplicates import FingerprintIndex  # noqa: PLC0415 - Dagster-free matcher

    index = FingerprintIndex(catalog.engine)
    index.ensure_tables()
    return index


def update_duplicate_groups(store: Storage, catalog: TrackCatalog) -> dict[str, Any]:
    """Index the fingerprints written since the last groups table; write the new table.

    Returns
    -------
    dict
        Metadata of the materialization.
    """
    from klio_assets.catalog.duplicates import FingerprintItem  # noqa: PLC0415

    uri = _table_uri(store, DUPLICATE_GROUPS)
    after_seq = _read_seq(store, uri)
    index = _fingerprint_index(catalog)
    rows = catalog.features_since(["fingerprint"], after_seq)
    # removed tracks leave the index first (a fingerprint row of the same ID is newer: `remove`
    # deleted the older ones, so it is a track registered again and is indexed anew)
    dropped = index.remove(sorted({row.track_id for row in rows if row.asset == REMOVED}))
    latest = {row.track_id: row for row in rows if row.asset != REMOVED}
    known = index.known(list(latest))
    items = []
    unreadable: dict[str, str] = {}
    for track_id, row in latest.items():
        if track_id in known:
            continue
        try:
            items.append(FingerprintItem.from_result(track_id, store.read_json(row.uri)))
        except (KlioAssetsError, ValueError) as exc:  # one bad document costs only its track
            unreadable[track_id] = f"{row.uri}: {exc}"
    started = time.perf_counter()
    assigned = index.add(items) if items else {}
    groups = index.groups()
    shared = groups[groups["group_size"] > 1][
        ["track_id", "duplicate_group", "group_size"]
    ].reset_index(drop=True)
    reached = max((row.seq for row in rows), default=after_seq)
    _write_table(store, uri, shared, reached)
    metadata: dict[str, Any] = {
        "uri": dg.MetadataValue.path(uri),
        "features_seq": reached,
        "new_tracks": len(items),
        "removed_tracks": len(dropped),
        "tracks_indexed": len(groups),
        "groups_with_duplicates": int(shared["duplicate_group"].nunique()) if len(shared) else 0,
        "tracks_in_shared_groups": len(shared),
        "new_tracks_joining_a_group": sum(1 for t, g in assigned.items() if g != t),
        "index_seconds": round(time.perf_counter() - started, 3),
    }
    if unreadable:
        metadata["unreadable"] = dg.MetadataValue.json(unreadable)
    return metadata


def update_track_features(
    store: Storage, catalog: TrackCatalog, assets: Sequence[str]
) -> dict[str, Any]:
    """Merge the feature rows written since the last table into it; write the new table."""
    uri = _table_uri(store, TRACK_FEATURES)
    previous, after_seq = _read_table(store, uri)
    rows = catalog.features_since(list(assets), after_seq)
    groups: dict[str, str] = {}
    if "fingerprint" in assets:
        frame = _fingerprint_index(catalog).groups()
        groups = dict(zip(frame["track_id"], frame["duplicate_group"], strict=True))
    table = merge_features(previous, rows, groups)
    reached = max((row.seq for row in rows), default=after_seq)
    _write_table(store, uri, table, reached)
    return {
        "uri": dg.MetadataValue.path(uri),
        "features_seq": reached,
        "rows": len(table),
        "rows_changed": len({row.track_id for row in rows}),
        "columns": dg.MetadataValue.json(list(table.columns)),
        "preview": dg.MetadataValue.md(_markdown(table.head(10))),
    }


def build_catalog_assets(graph: Mapping[str, Analysis]) -> list[dg.AssetsDefinition]:
    """``duplicate_groups`` (if ``fingerprint`` is an analysis) and ``track_features``."""
    assets: list[dg.AssetsDefinition] = []
    has_fingerprint = "fingerprint" in graph
    if has_fingerprint:

        @dg.asset(
            name=DUPLICATE_GROUPS,
            deps=["fingerprint"],
            group_name=GROUP_NAME,
            kinds={"pandas", "parquet"},
            description="Tracks that are the same recording (transcodes, other rates or bit depths "
            "of one master), from their fingerprints; updated with the tracks fingerprinted since "
            "the last materialization. Parquet: track_id, duplicate_group, group_size (groups of "
            "two or more).",
        )
        def duplicate_groups(
            storage: StorageResource, catalog: CatalogResource
        ) -> dg.MaterializeResult[None]:
            return dg.MaterializeResult(
                metadata=update_duplicate_groups(storage.get_storage(), catalog.get_catalog())
            )

        assets.append(duplicate_groups)

    feature_assets = [name for name in FEATURE_COLUMNS if name in graph]
    deps = [*feature_assets, *([DUPLICATE_GROUPS] if has_fingerprint else [])]

    @dg.asset(
        name=TRACK_FEATURES,
        deps=deps,
        group_name=GROUP_NAME,
        kinds={"pandas", "parquet"},
        description="One row per track: duration, sample rate, channels, loudness, tempo, duplicate "
        "group and the versions that produced them (Parquet). Updated from the results written "
        "since the last materialization.",
    )
    def track_features(
        storage: StorageResource, catalog: CatalogResource
    ) -> dg.MaterializeResult[None]:
        return dg.MaterializeResult(
            metadata=update_track_features(
                storage.get_storage(), catalog.get_catalog(), feature_assets
            )
        )

    assets.append(track_features)
    return assets
