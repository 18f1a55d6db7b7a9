"""Throughput of the relevance family: xaijax ``lrp`` vs zennit and ``deeplift`` vs Captum.

Images per second on CPU at batch 8, VGG16 with random torchvision weights, same run, same
weights and inputs. xaijax is timed after one warm-up call (compilation excluded; reported
separately).

Usage:
  python benchmarks/bench_relevance.py [--model vgg16] [--size 224] [--batch 8] [--repeats 3]
  python benchmarks/bench_relevance.py --smoke     # both methods, tiny setting (seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, parse_args, torch_pair  # noqa: E402,F811
from tests.helpers import to_nhwc  # noqa: E402

SMOKE = {"model": "alexnet", "size": 64, "batch": 1, "repeats": 1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16",
                    help="a torchvision model without BatchNorm: vgg16 or alexnet")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = parse_args(ap, argv, SMOKE)

    import torch
    from captum.attr import DeepLift
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    torch.set_grad_enabled(True)
    tm, m = torch_pair(args.model)
    m = jax.device_put(m)  # numpy leaves would be copied in again on every call
    n, s = args.batch, args.size
    x = np.random.RandomState(0).randn(n, 3, s, s).astype(np.float32)
    t = np.arange(n) % 1000
    xj_x = to_nhwc(x)
    print(f"{args.model} {s}x{s}, random weights, batch {n}, CPU ({jax.devices()[0].platform}, "
          f"torch threads {torch.get_num_threads()})")

    # ---- LRP (EpsilonPlus) ------------------------------------------------------------------
    def xj_lrp():
        ex = xj.explain(m, xj_x, t, method="lrp", composite="epsilon_plus")
        ex.attribution.block_until_ready()

    def zennit_lrp():
        xt = torch.tensor(x, requires_grad=True)
        with torch.no_grad():
            logits = tm(xt)
        out = torch.zeros_like(logits)
        out[range(n), t] = logits[range(n), t]
        with Gradient(model=tm, composite=EpsilonPlus()) as attr:
            attr(xt, out)

    # ---- DeepLIFT (Rescale) -------------------------------------------------------------------
    def xj_dl():
        ex = xj.explain(m, xj_x, t, method="deeplift", maxpool="gradient")
        ex.attribution.block_until_ready()

    def captum_dl():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DeepLift(tm).attribute(torch.tensor(x), baselines=torch.zeros_like(torch.tensor(x)),
                                   target=torch.tensor(t))

    for label, ours, peer, peer_name in (("lrp epsilon_plus", xj_lrp, zennit_lrp, "zennit"),
                                         ("deeplift rescale", xj_dl, captum_dl, "captum")):
        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        a = best_time(ours, args.repeats)
        b = best_time(peer, args.repeats)
        print(f"{label:18s} xaijax {n / a:7.2f} img/s (first call incl. compile {compile_s:.1f} s)"
              f" | {peer_name} {n / b:7.2f} img/s | ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()
