#!/usr/bin/env bash
# Creates ./.venv and installs mars_dist with everything it needs, on a fresh machine.
# torch and torchaudio are pinned as a matching pair (torchaudio's compiled extension must match
# torch exactly); DeepSpeed is built from source without build isolation and without its
# optional ops, so it needs torch installed first. Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
# setuptools below 82: torch 2.11 declares setuptools<82 (DeepSpeed builds against it)
$VPY -m pip install -q --upgrade pip "setuptools<82" wheel
$VPY -c "import torch, torchaudio, sys; sys.exit(0 if torch.__version__.startswith('2.11') and torchaudio.__version__.startswith('2.11') else 1)" 2>/dev/null \
  || $VPY -m pip install -q "torch==2.11.*" "torchaudio==2.11.*"
$VPY -c "import deepspeed" 2>/dev/null \
  || DS_BUILD_OPS=0 $VPY -m pip install -q --no-build-isolation "deepspeed>=0.16"
$VPY -m pip install -q -e ".[dev]"
echo "mars_dist installed in $(pwd)/.venv"
