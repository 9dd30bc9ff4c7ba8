"""Names of the catalog's assets and tables, importable without SQLAlchemy.

:mod:`klio_assets.catalog.database` defines the tables under these names;
:mod:`klio_assets.catalog.sqlite_reader` reads the same tables with the standard library (the
all-done answer of ``klio-assets run``, which must not pay ~0.1 s to import SQLAlchemy).
"""

#: The catalog-level assets built from the catalog (:mod:`klio_assets.orchestration.catalog_assets`).
DUPLICATE_GROUPS = "duplicate_groups"
TRACK_FEATURES = "track_features"
#: The features rows' asset of a removal: ``klio-assets remove`` writes one per removed track,
#: so that the catalog-level tables, which read only what changed, drop the track.
REMOVED = "_removed"

TRACKS_TABLE = "klio_tracks"
FAILURES_TABLE = "klio_failures"
FEATURES_TABLE = "klio_features"
MATERIALIZED_TABLE = "klio_materialized"
SOURCE_STATS_TABLE = "klio_source_stats"
FAILURE_MEMORY_TABLE = "klio_failure_memory"
STATE_TABLE = "klio_state"
#: Exact row counts kept by triggers (registered tracks, ledger rows per analysis).
COUNTS_TABLE = "klio_counts"
