"""What a run's Dagster side imports (a run's process memory is mostly imports)."""

import subprocess
import sys


def test_loading_the_definitions_does_not_import_pandas():
    """pandas and pyarrow are ~80 MB of a run's process; only the catalog assets use them."""
    probe = (
        "import sys, klio_assets.definitions\n"
        "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
