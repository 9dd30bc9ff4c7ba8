"""The track catalog: track IDs, discovery, the ledger of what is done, the duplicates index.

No Dagster here: the catalog is a plain SQL database, read by the CLI, the automation and
the orchestration alike."""
