"""``klio-assets``: the command line (thin commands over the automation and orchestration)."""

from klio_assets.cli.app import main

__all__ = ["main"]
