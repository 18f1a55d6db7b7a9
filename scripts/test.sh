#!/usr/bin/env bash
# The whole test suite: install xaijax with the test and torch extras (peer libraries for the
# parity tests), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,torch
. .venv/bin/activate
# Headless Chromium opens the HTML report in tests/viz (Debian's package; apt-get needs root, as
# on CI). Without it that test skips, and under CI=true the skip is a failure.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing chromium (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null || echo "scripts/test.sh: apt-get install chromium failed" >&2
  else
    echo "scripts/test.sh: chromium is missing and cannot be installed here (run as root:" \
      "apt-get install chromium); the HTML report test will skip" >&2
  fi
fi
# Keep freed heap memory in the process instead of handing it back to the kernel: on this
# project's CI VM (Firecracker with free-page reporting) memory handed back is reclaimed by the
# host within seconds and costs ~1-3 s/GB to touch again. With these glibc settings the suite
# took 12m11s instead of 14m26s (2026-12-03, 2 cores; peak "used" memory 20 GB of 23 GB).
# A bounded alternative if memory gets tight: MALLOC_TRIM_THRESHOLD_=3221225472 (3 GB).
export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000
# More than half of the suite's time is XLA:CPU compiling small programs (thousands of kernels,
# ~50 ms of LLVM each). The legacy CPU fusion emitters and LLVM -O1 compile them faster: summed
# compile time 1153 s -> 664 s, suite 18m02s -> 13m12s (2026-12-03, same machine). Results
# differ only in rounding (VGG16's float64 gradient and IG came out bit-identical, EfficientNet's
# float32 gradient moved in the last bits), and the whole suite passed both ways. They are test
# settings, not library defaults: a user's own XLA_FLAGS are kept (after these), and
# XAIJAX_TEST_XLA_DEFAULTS=1 runs the suite under XLA's defaults. Single-threaded Eigen
# kernels: with two pytest-xdist workers on two cores, two processes each running a VGG16
# float64 gradient took 0.65-0.67 s per call instead of 0.69-0.77 s (tests/conftest.py gives
# torch one thread per worker for the same reason).
if [ -z "${XAIJAX_TEST_XLA_DEFAULTS:-}" ]; then
  export XLA_FLAGS="--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1 --xla_cpu_multi_thread_eigen=false ${XLA_FLAGS:-}"
fi
exec python -m pytest -q -n 2 "$@"
