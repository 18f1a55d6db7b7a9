"""Shared pieces of the benchmark scripts: best-of-N wall time and the torch/xaijax model pair
(the one the parity tests use, so benchmarks and tests run identical weights)."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.helpers import torch_pair  # noqa: E402,F401


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds); ``fn`` must block until done."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
