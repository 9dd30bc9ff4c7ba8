"""A ``klio-assets run`` with everything done is mostly Python imports: it imports what it uses.

The figure is ``benchmarks/rerun.py`` (issue 15: a rerun at most 0.01x the first run); these
tests keep the modules the all-done answer does not need out of it.
"""

import os
import shutil
import subprocess
import sys

import pytest

from klio_assets_tests.conftest import cli_json, run_cli

#: Modules the all-done ``run --json`` must not import: Dagster (~1.2 s); the progress bar and
#: tables (nothing is drawn with --json); pyarrow (no catalog table was asked for);
#: SQLAlchemy (a SQLite catalog is read with sqlite3); numpy and soundfile (analyses import them
#: where used, not to be listed); the profiler and the demo's command modules.
NOT_ON_THE_FAST_PATH = (
    "dagster",
    "sqlalchemy",
    "klio_assets.catalog.database",
    "rich",
    "rich.progress",
    "rich.table",
    "rich.console",
    "pyarrow",
    "numpy",
    "soundfile",
    "sqlalchemy.dialects.postgresql",
    "klio_assets.profiling",
    "klio_assets.cli.profile",
    "klio_assets.cli.render_profile",
    "klio_assets.cli.demo",
)


def _imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def test_loading_the_cli_leaves_each_command_module_to_its_command():
    """The group lists every command but imports only the one invoked (all for --help)."""
    probe = (
        "import sys, klio_assets.cli.main as m\n"
        f"print(sorted(x for x in {NOT_ON_THE_FAST_PATH!r} if x in sys.modules))\n"
        "print('klio_assets.cli.run' in sys.modules)\n"
        "from klio_assets.cli.app import main\n"
        "print(sorted(main.list_commands(None)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, run_loaded, names = done.stdout.strip().splitlines()
    assert loaded == "[]"
    assert run_loaded == "False"
    assert "'profile'" in names and "'run'" in names and "'demo'" in names


@pytest.mark.e2e
def test_all_done_run_imports_no_dagster_no_rich_no_pyarrow_no_sqlalchemy(tmp_path, catalog_tracks):
    """The second run of the same batch answers from the ledger with the lean import set."""
    folder = tmp_path / "library"
    folder.mkdir()
    track = catalog_tracks["wav44"]
    shutil.copyfile(track.path, folder / os.path.basename(track.path))
    home = str(tmp_path / "home")
    run_cli("add", str(folder), home=home, check=True)
    first, _ = cli_json("run", "downsampled_audio", home=home)
    assert first["assets"]["downsampled_audio"] == {"computed": 1}

    again, done = cli_json(
        "run", "downsampled_audio", home=home, env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    imported = _imported(done.stderr)
    assert "klio_assets.catalog.sqlite_reader" in imported  # the trace works
    assert again["runs"] == [] and again["assets"]["downsampled_audio"] == {"skipped": 1}
    assert sorted(m for m in NOT_ON_THE_FAST_PATH if m in imported) == []


def test_the_package_exports_its_authoring_api_on_first_use():
    """``import klio_assets.<anything>`` runs the package's __init__: it imports no numpy."""
    probe = (
        "import sys, klio_assets.errors, klio_assets.settings\n"
        "print(sorted(m for m in ('numpy', 'soundfile', 'klio_assets.worker.analysis') "
        "if m in sys.modules))\n"
        "import klio_assets\n"
        "from klio_assets import Json, ModelHandler, analysis\n"
        "print(all(getattr(klio_assets, n) is not None for n in klio_assets.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]


_LEAVE_PROBE = """
import atexit, sys, threading, time
class Finalized:
    def __del__(self):
        print("finalized")
kept = Finalized()  # freed by the interpreter's teardown, if there is one
atexit.register(lambda: print("exit handler"))
{setup}
print("answer", end="")  # still in the buffer of a pipe
from klio_assets.cli.main import console_main
console_main({argv})
"""


def _leave(argv: list[str], setup: str = "") -> subprocess.CompletedProcess[str]:
    probe = _LEAVE_PROBE.format(argv=argv, setup=setup)
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)


def test_the_command_line_leaves_without_the_interpreters_teardown():
    """The command's output flushed, its exit handlers run and its status kept, but no
    module torn down (0.25 s on one core after a run that imported Dagster)."""
    helped = _leave(["--help"])
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("answerUsage: klio-assets")
    assert helped.stdout.endswith("exit handler\n")
    assert "finalized" not in helped.stdout
    refused = _leave(["no-such-command"])
    assert refused.returncode == 2 and "No such command" in refused.stderr
    assert "finalized" not in refused.stdout


def test_the_command_line_waits_for_a_thread_that_is_not_a_daemon():
    waiting = _leave(
        ["--help"],
        setup="threading.Thread(target=lambda: (time.sleep(0.3), print('late'))).start()",
    )
    assert waiting.returncode == 0, waiting.stderr
    assert "late" in waiting.stdout and "finalized" in waiting.stdout


def test_the_console_script_and_python_m_reach_console_main():
    from importlib.metadata import entry_points

    import klio_assets.cli.__main__ as module_main
    from klio_assets.cli.main import console_main

    (script,) = entry_points(group="console_scripts", name="klio-assets")
    assert script.value == "klio_assets.cli.main:console_main"
    assert module_main.console_main is console_main
