#!/usr/bin/env bash
# Fresh machine to first results: install, then run source_audio and downsampled_audio on a
# small generated catalog with the embedded local defaults (SQLite, local folder, Beam's
# FnApiRunner), and print how to open the Dagster UI on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/klio-assets demo "$@"
