#!/usr/bin/env bash
# The whole test suite: install xaijax with the test and torch extras (peer libraries for the
# parity tests), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,torch
. .venv/bin/activate
exec python -m pytest -q -n 2 "$@"
