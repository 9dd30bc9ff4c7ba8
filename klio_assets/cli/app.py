"""The ``klio-assets`` click group: every command, registered in the order of ``--help``.

The command names and options are a contract: ``add``, ``run``, ``status``, ``show``,
``profile``, ``automation`` (plus ``dev`` and ``demo``). Settings come from the environment
(:mod:`klio_assets.settings`); ``dagster dev`` started with ``klio-assets dev`` reads the same
ones. Each command parses its options, calls a use case in ``orchestration`` or
``automation``, and renders the outcome (:mod:`klio_assets.cli.render`).

Nothing imported here imports Dagster: ``klio-assets run`` answers "all done" without it.
Commands that need Dagster import their use case inside the command function.
"""

from __future__ import annotations

import click

from klio_assets.cli.automation import automation
from klio_assets.cli.dev import demo, dev
from klio_assets.cli.profile import profile
from klio_assets.cli.run import run
from klio_assets.cli.status import show, status
from klio_assets.cli.tracks import add

# The settings table under `klio-assets --help` (settings slice: settings_help() goes here).
SETTINGS_EPILOG: str | None = None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=SETTINGS_EPILOG)
def main() -> None:
    """Klio-style audio analyses as partitioned Dagster assets, one Beam job per batch.

    Settings: KLIO_ASSETS_HOME (default ./.klio-assets), KLIO_ASSETS_STORAGE,
    KLIO_ASSETS_BEAM_OPTIONS, KLIO_ASSETS_BATCH_SIZE.
    """


for _command in (add, run, status, show, profile, automation, dev, demo):
    main.add_command(_command)
