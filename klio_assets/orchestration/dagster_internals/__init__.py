"""Every use of Dagster's private API (``dagster._core``), each with its public-API fallback."""
