"""Helpers shared by the tests: generated audio, the hostile corpus, services (PostgreSQL, emulators), sample analyses."""
