"""Tests of the catalog: track IDs, untrusted input, the ledger."""
