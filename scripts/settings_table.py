#!/usr/bin/env python
"""Rewrite the README's settings tables from the settings model's field descriptions.

    python scripts/settings_table.py           rewrite README.md in place
    python scripts/settings_table.py --check   exit 1 if README.md differs from the model

Each table sits between ``<!-- settings-table:start GROUP -->`` and
``<!-- settings-table:end -->`` (see :func:`klio_assets.settings.update_settings_tables`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from klio_assets.settings import update_settings_tables

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check``, compare) the README's settings tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report a difference")
    parser.add_argument("--readme", type=pathlib.Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    updated = update_settings_tables(text)
    if updated == text:
        return 0
    if args.check:
        print(f"{args.readme}: settings tables differ from klio_assets.settings; "
              "run python scripts/settings_table.py", file=sys.stderr)  # fmt: skip
        return 1
    args.readme.write_text(updated)
    print(f"{args.readme}: settings tables rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
