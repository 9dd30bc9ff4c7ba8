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


def test_exit_now_skips_the_teardown_only_in_the_cli_process():
    """The all-done answer leaves without the interpreter's teardown (~40 ms), its output
    flushed and its status kept; a program calling the CLI in-process gets a SystemExit."""
    from klio_assets.cli.common import exit_now

    with pytest.raises(SystemExit) as raised:
        exit_now(3)
    assert raised.value.code == 3
    probe = (
        "import atexit, sys\n"
        "sys.argv[0] = '/somewhere/bin/klio-assets'\n"
        "from klio_assets.cli.common import exit_now\n"
        "atexit.register(lambda: print('teardown'))\n"
        "print('answer', end='')\n"  # still in the buffer of a pipe
        "exit_now(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (3, "answer")
    called = subprocess.run(
        [sys.executable, "-c", probe.replace("/somewhere/bin/klio-assets", "script.py")],
        capture_output=True,
        text=True,
    )
    assert (called.returncode, called.stdout) == (3, "answerteardown\n")
