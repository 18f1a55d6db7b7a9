#!/usr/bin/env bash
# The whole test suite: install xaijax with the test and torch extras (peer libraries for the
# parity tests), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,torch
. .venv/bin/activate
# Keep freed heap memory in the process instead of handing it back to the kernel: on this
# project's CI VM (Firecracker with free-page reporting) memory handed back is reclaimed by the
# host within seconds and costs ~1-3 s/GB to touch again. With these glibc settings the suite
# took 12m11s instead of 14m26s (2026-12-03, 2 cores; peak "used" memory 20 GB of 23 GB).
# A bounded alternative if memory gets tight: MALLOC_TRIM_THRESHOLD_=3221225472 (3 GB).
export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000
exec python -m pytest -q -n 2 "$@"
