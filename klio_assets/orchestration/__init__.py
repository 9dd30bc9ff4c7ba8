"""The Dagster side: assets, the run (resolve -> launch -> collect -> report), partitions,
lineage and the catalog-level assets."""
