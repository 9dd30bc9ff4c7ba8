#!/usr/bin/env bash
# Fresh machine to test results: install (ffmpeg, PostgreSQL binaries, test extras), then run
# the whole test suite (unit, component and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
