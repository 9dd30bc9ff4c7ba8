"""The ``klio-assets`` click group: every command, registered in the order of ``--help``.

The command names and options are a contract: ``add``, ``tracks``, ``remove``, ``run``, ``status``, ``show``,
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
from klio_assets.cli.common import quiet_third_party
from klio_assets.cli.dev import demo, dev
from klio_assets.cli.profile import profile
from klio_assets.cli.run import run
from klio_assets.cli.status import show, status
from klio_assets.cli.tracks import add, remove, tracks
from klio_assets.settings import settings_help

#: Every setting under `klio-assets --help`, generated from the settings model (its field
#: descriptions), so the help cannot drift from what is read; "\b" keeps click from rewrapping.
SETTINGS_EPILOG = "\b\n" + settings_help()


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=SETTINGS_EPILOG)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show third-party warnings and decoder messages (kept in track metadata otherwise).",
)
def main(verbose: bool) -> None:
    """Klio-style audio analyses as partitioned Dagster assets, one Beam job per batch."""
    quiet_third_party(verbose=verbose)


for _command in (add, tracks, remove, run, status, show, profile, automation, dev, demo):
    main.add_command(_command)
