"""``klio-assets``: the command line (thin commands over the automation and orchestration)."""

# Through the submodule ``main`` (loaded here, then the name rebound to the group), so that a
# later ``import klio_assets.cli.main`` cannot turn ``klio_assets.cli.main`` into the module.
from klio_assets.cli.main import main

__all__ = ["main"]
