#!/usr/bin/env bash
# Create ./.venv (if missing) and install xaijax with the given extras.
# Usage: scripts/setup_env.sh [EXTRAS]   e.g. scripts/setup_env.sh test,torch
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [[ ",$extras," == *",torch,"* ]]; then
  # CPU use of the pinned torch/torchvision wheels (installed first so nothing pulls another)
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
if [ -n "$extras" ]; then
  python -m pip install -q -e ".[${extras}]"
else
  python -m pip install -q -e .
fi
