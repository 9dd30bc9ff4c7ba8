"""End-to-end tests: what a user starts (dagster dev, production services, hostile corpora, full disks)."""
