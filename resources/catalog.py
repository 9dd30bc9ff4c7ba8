"""The catalog resource: which source audio each track ID stands for."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from klio_assets.catalog.database import TrackCatalog, get_catalog


class CatalogResource(dg.ConfigurableResource):
    """Track catalog in a SQL database (SQLite locally, PostgreSQL in production)."""

    url: str = Field(
        description="SQLAlchemy URL, e.g. sqlite:////data/klio/catalog.db or "
        "postgresql+psycopg2://user@host/db."
    )

    def get_catalog(self) -> TrackCatalog:
        """The :class:`~klio_assets.catalog.database.TrackCatalog` (opened, tables created)."""
        return get_catalog(self.url)
