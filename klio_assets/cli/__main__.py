"""``python -m klio_assets.cli``: the ``klio-assets`` command."""

from klio_assets.cli.main import main

if __name__ == "__main__":
    main()
