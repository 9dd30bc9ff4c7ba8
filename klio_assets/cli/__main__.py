"""``python -m klio_assets.cli``: the ``klio-assets`` command."""

from klio_assets.cli.main import console_main

if __name__ == "__main__":
    console_main()
