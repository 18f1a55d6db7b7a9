"""Throughput of the relevance family: xaijax ``lrp`` vs zennit and ``deeplift`` vs Captum.

Images per second on CPU at batch 8, VGG16 with random torchvision weights, same run, same
weights and inputs. xaijax is timed after one warm-up call (compilation excluded; reported
separately).

Usage:
  python benchmarks/bench_relevance.py [--size 224] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, torch_pair  # noqa: E402,F811
from tests.helpers import to_nhwc  # noqa: E402



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from captum.attr import DeepLift
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    torch.set_grad_enabled(True)
    tm, m = torch_pair("vgg16")
    n, s = args.batch, args.size
    x = np.random.RandomState(0).randn(n, 3, s, s).astype(np.float32)
    t = np.arange(n) % 1000
    xj_x = to_nhwc(x)
    print(f"VGG16 {s}x{s}, batch {n}, CPU ({jax.devices()[0].platform}, torch threads "
          f"{torch.get_num_threads()})")

    # ---- LRP (EpsilonPlus) ------------------------------------------------------------------
    def xj_lrp():
        xj.explain(m, xj_x, t, method="lrp", composite="epsilon_plus").attribution.block_until_ready()

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
        xj.explain(m, xj_x, t, method="deeplift", maxpool="gradient").attribution.block_until_ready()

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
