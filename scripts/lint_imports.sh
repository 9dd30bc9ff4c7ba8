#!/usr/bin/env bash
# Check the architecture rules (import-linter contracts in pyproject.toml) on the package as it
# is installed: the repository keeps `resources/` and `sensors/` at the top level, installed as
# klio_assets.resources and klio_assets.sensors (setup.cfg's package_dir). The check runs on a
# copy laid out like the wheel, so those two are checked in their installed place.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r klio_assets "$stage/klio_assets"
cp -r resources "$stage/klio_assets/resources"
cp -r sensors "$stage/klio_assets/sensors"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
cp pyproject.toml "$stage/"
cd "$stage"
PYTHONPATH="$stage" exec "$OLDPWD/.venv/bin/lint-imports" --no-cache "$@"
