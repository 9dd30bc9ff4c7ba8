#!/usr/bin/env bash
# Fresh machine to first results: install, then generate a small catalog (10 files by default:
# --tracks N), register it and run every analysis on it with the embedded local defaults
# (SQLite, local folder, Beam's FnApiRunner), and print how to open the Dagster UI on it.
# Safe to run again: what is already there is reused, only what is missing is computed, and the
# UI hint is printed whatever happened (the exit status is 1 if a track failed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/klio-assets demo "$@"
