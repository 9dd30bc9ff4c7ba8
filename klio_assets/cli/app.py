"""The ``klio-assets`` click group: every command, registered in the order of ``--help``.

The command names and options are a contract: ``add``, ``tracks``, ``remove``, ``run``, ``status``, ``show``,
``profile``, ``automation`` (plus ``dev`` and ``demo``). Settings come from the environment
(:mod:`klio_assets.settings`); ``dagster dev`` started with ``klio-assets dev`` reads the same
ones. Each command parses its options, calls a use case in ``orchestration`` or
``automation``, and renders the outcome (:mod:`klio_assets.cli.render`).

Nothing imported here imports Dagster: ``klio-assets run`` answers "all done" without it.
Commands that need Dagster import their use case inside the command function. Each command's
module is imported when the command is looked up (``klio-assets run`` does not import the
profiler, its tables, or the demo's audio writer), all of them for ``--help``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from klio_assets.cli.common import quiet_third_party
from klio_assets.settings import settings_help

#: Command name to the module defining it (the function has the command's name).
COMMAND_MODULES = {
    "add": "klio_assets.cli.tracks",
    "tracks": "klio_assets.cli.tracks",
    "remove": "klio_assets.cli.tracks",
    "run": "klio_assets.cli.run",
    "status": "klio_assets.cli.status",
    "show": "klio_assets.cli.status",
    "profile": "klio_assets.cli.profile",
    "automation": "klio_assets.cli.automation",
    "dev": "klio_assets.cli.dev",
    "demo": "klio_assets.cli.dev",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first lookup (``commands`` imports them all)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        for name in COMMAND_MODULES:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._loaded = dict(value)

    def _load(self, name: str) -> click.Command | None:
        if name not in self._loaded and name in COMMAND_MODULES:
            command = getattr(importlib.import_module(COMMAND_MODULES[name]), name)
            assert isinstance(command, click.Command)
            self._loaded[name] = command
        return self._loaded.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self._loaded})


#: Every setting under `klio-assets --help`, generated from the settings model (its field
#: descriptions), so the help cannot drift from what is read; "\b" keeps click from rewrapping.
SETTINGS_EPILOG = "\b\n" + settings_help()


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=SETTINGS_EPILOG,
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show third-party warnings and decoder messages (kept in track metadata otherwise).",
)
def main(verbose: bool) -> None:
    """Klio-style audio analyses as partitioned Dagster assets, one Beam job per batch."""
    quiet_third_party(verbose=verbose)
