#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for klio-assets: system packages, then a virtualenv
# (.venv) with the package installed in editable mode.
#   scripts/setup.sh            runtime (ffmpeg for M4A/AAC/Opus, fpcalc for fingerprints)
#   scripts/setup.sh --test     plus what the tests need (PostgreSQL server binaries, test extras)
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: M4A/AAC/Opus decoding; libchromaprint-tools: fpcalc, the fingerprint analysis.
want=(ffmpeg libchromaprint-tools)
extras="[dagster]"
if [ "${1:-}" = "--test" ]; then
  want+=(postgresql)
  extras="[test]"
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]} (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
