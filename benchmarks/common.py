"""Shared pieces of the benchmark scripts: best-of-N wall time, the ``--smoke`` flag and the
torch/xaijax model pair (the one the parity tests use, so benchmarks and tests run identical
weights)."""

from __future__ import annotations

import argparse
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


def parse_args(parser: argparse.ArgumentParser, argv=None, smoke: dict | None = None):
    """``parser.parse_args(argv)`` with a ``--smoke`` flag added: with it, the values in
    ``smoke`` (``dest -> value``) replace the parser's defaults, so the script runs every code
    path on a tiny setting (seconds, for tests/benchmarks); options given explicitly still win."""
    def show(v):
        return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    parser.add_argument("--smoke", action="store_true",
                        help="tiny setting that runs every code path in seconds: "
                             + ", ".join(f"--{k.replace('_', '-')} {show(v)}"
                                         for k, v in (smoke or {}).items()))
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**(smoke or {}))
    return parser.parse_args(argv)


def captum_ready(tm, model):
    """``(torch copy whose ReLUs are not in-place, xaijax model on the device)`` from a shared
    parity pair: Captum's ReLU hooks refuse in-place ReLUs, the shared pair must not be
    modified, and numpy leaves would be copied to the device again on every call."""
    import copy

    import jax
    import torch

    tm = copy.deepcopy(tm)
    for mod in tm.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return tm, jax.device_put(model)
