"""Worker side of klio-assets: what runs inside Beam (decode, analyses, storage).

Nothing in this subpackage imports Dagster, so it ships to Beam workers (Dataflow, Flink,
Spark) with a small dependency set and can be tested on its own.
"""
