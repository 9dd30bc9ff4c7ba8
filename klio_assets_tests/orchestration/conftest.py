"""Fixtures shared by the orchestration tests that need PostgreSQL."""

import pytest

from klio_assets_tests.support.postgres import running_postgres


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server, one per test module."""
    with running_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server
