#!/usr/bin/env bash
# The static checks CI runs before the tests (after scripts/setup.sh --test): lint, format,
# types (strict on the worker side and the catalog) and the architecture rules.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
echo "== ruff check"; "$bin/ruff" check .
echo "== ruff format --check"; "$bin/ruff" format --check .
echo "== mypy"; "$bin/mypy"
echo "== mypy (resources, sensors)"; "$bin/mypy" --explicit-package-bases resources sensors
echo "== import-linter"; scripts/lint_imports.sh
