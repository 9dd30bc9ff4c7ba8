"""``klio_assets.cli.main:main``, kept importable for scripts, tests and benchmarks.

The commands live in :mod:`klio_assets.cli.app` and its sibling modules.
"""

from klio_assets.cli.app import main
from klio_assets.orchestration.selection import planned_analyses as _planned

__all__ = ["_planned", "main"]

if __name__ == "__main__":
    main()
