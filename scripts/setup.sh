#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for klio-assets: system packages, then a virtualenv
# (.venv) with the package installed in editable mode.
#   scripts/setup.sh            runtime (ffmpeg for M4A/AAC/Opus, fpcalc for fingerprints)
#   scripts/setup.sh --test     plus what the tests need (PostgreSQL server binaries, test extras)
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: M4A/AAC/Opus decoding; libchromaprint-tools: fpcalc, the fingerprint analysis.
want=(ffmpeg libchromaprint-tools)
extras="[dagster,models]"
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
# The Beam the images run (docker/beam-worker.Dockerfile's BEAM_VERSION), whatever newer release
# the index offers: tests and local runs use the Beam that deploys (klio_assets_tests/test_deploy.py).
# A Beam upgrade is a change of its own: that ARG in both Dockerfiles, then this follows.
beam=$(sed -n 's/^ARG BEAM_VERSION=//p' docker/beam-worker.Dockerfile)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "apache-beam==${beam}" > "$constraints"
.venv/bin/python -m pip install -q -e ".${extras}" -c "$constraints"
# The model weights of speech_segments and note_events ship inside these packages; their own
# dependencies (torch for silero-vad, an old TensorFlow for basic-pitch) are not needed to run
# the ONNX models, so they are installed without them (the `models` extra has what is needed).
.venv/bin/python -m pip install -q --no-deps "silero-vad==6.2.3" "basic-pitch==0.4.0"
if [ "${1:-}" = "--test" ]; then
  # PyTorch models (TorchModel) are tested with the CPU build; pinned so that pip takes it
  # from the machine's wheel cache instead of a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
