"""Excitation backprop, contrastive excitation backprop and linear approximation: xaijax vs
TorchRay on the same converted weights, agreement and throughput in one run.

Agreement: float64 on both sides at 64x64 (``--parity-size``; batch 2, random torchvision weights,
the pairs of the parity tests), max |difference| / max |TorchRay| of the map at TorchRay's
benchmark layers (VGG16 pool4 ``features.23`` / ResNet ``layer3``), with the contrast of
contrastive MWP at two layers (TorchRay's benchmark one and one further down), and of linear
approximation at the last convolutional features; xaijax uses ``variant="torchray"``. The same in
float32 shows what rounding does (contrastive MWP subtracts two nearly equal distributions).

Throughput: float32 at ``--size`` (224 by default), batch ``--batch``; TorchRay is called once per
batch (its target argument takes one class per image). xaijax's one-off compilation is reported
separately.

    python benchmarks/bench_excitation.py            # VGG16 and ResNet-18, 224x224
    python benchmarks/bench_excitation.py --smoke    # ResNet-18, tiny setting
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, parse_args  # noqa: E402
from tests.helpers import float64_pair, to_nchw, torch_pair  # noqa: E402

SMOKE = {"models": ["resnet18"], "size": 32, "batch": 1, "repeats": 1, "parity_size": 32}
LAYERS = {"vgg16": ("features.23", ("classifier.4", "features.30"), "features.29"),
          "resnet18": ("layer3", ("avgpool", "layer4"), "layer4")}
TARGETS = [3, 7]


def _torch_model(tm, name):
    from torchray.attribution.excitation_backprop import update_resnet

    # a private copy gets TorchRay's EltwiseSum skip connection, as its benchmark does
    return update_resnet(copy.deepcopy(tm)) if name.startswith("resnet") else tm


def _relative(a, e) -> float:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-300))


def agreement(name: str, dtype: str, size: int = 64):
    """``[(method, layer, relative difference)]`` for one model in ``dtype``."""
    import torch
    from torchray.attribution.excitation_backprop import (contrastive_excitation_backprop,
                                                          excitation_backprop)
    from torchray.attribution.linear_approx import linear_approx

    f64 = dtype == "float64"
    tm, m = float64_pair(name) if f64 else torch_pair(name)
    tm = _torch_model(tm, name)
    eb_layer, contrasts, la_layer = LAYERS[name]
    x = np.random.default_rng(0).standard_normal((2, size, size, 3))
    xt = torch.tensor(to_nchw(x), dtype=torch.float64 if f64 else torch.float32)

    def run(mm, xx, tt):
        kw = dict(variant="torchray")
        return (xj.methods.excitation_backprop(mm, xx, tt, **kw).extras["low_res"],
                xj.methods.contrastive_excitation_backprop(mm, xx, tt, **kw).extras["low_res"],
                xj.methods.linear_approx(mm, xx, tt).heatmap)

    with jax.enable_x64(f64):
        eb, ceb, la = jax.jit(run)(m, jnp.asarray(x, dtype), jnp.asarray(TARGETS, jnp.int32))
    rows = [("excitation_backprop", eb_layer, _relative(
        eb, excitation_backprop(tm, xt, TARGETS, saliency_layer=eb_layer)[:, 0]))]
    for c in contrasts:
        ref = contrastive_excitation_backprop(tm, xt, TARGETS, saliency_layer=eb_layer,
                                              contrast_layer=c)
        rows.append(("contrastive_excitation_backprop", f"{eb_layer}, contrast {c}",
                     _relative(ceb, ref[:, 0])))
    ref = linear_approx(tm, xt, TARGETS, saliency_layer=la_layer, resize=True)
    rows.append(("linear_approx", la_layer, _relative(la, ref.detach()[:, 0])))
    return rows


def throughput(name: str, size: int, batch: int, repeats: int):
    """``[(method, xaijax img/s, TorchRay img/s, compile s)]`` in float32."""
    import torch
    from torchray.attribution.excitation_backprop import (contrastive_excitation_backprop,
                                                          excitation_backprop)

    tm, m = torch_pair(name)
    tm = _torch_model(tm, name)
    eb_layer, contrasts, _ = LAYERS[name]
    x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, size, size, 3)), jnp.float32)
    xt = torch.tensor(to_nchw(x))
    t = [TARGETS[i % 2] for i in range(batch)]
    peers = {"excitation_backprop": lambda: excitation_backprop(
                 tm, xt, t, saliency_layer=eb_layer, resize=True),
             "contrastive_excitation_backprop": lambda: contrastive_excitation_backprop(
                 tm, xt, t, saliency_layer=eb_layer, contrast_layer=contrasts[0], resize=True)}
    rows = []
    for method, peer in peers.items():
        def ours():
            return jax.block_until_ready(
                xj.explain(m, x, t, method=method, variant="torchray").heatmap)

        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        rows.append((method, batch / best_time(ours, repeats), batch / best_time(peer, repeats),
                     compile_s))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet18"], choices=list(LAYERS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parity-size", type=int, default=64, help="image side of the agreement run")
    args = parse_args(p, argv, SMOKE)
    warnings.simplefilter("ignore")
    print(f"{'model':9s} {'method':32s} {'layer':32s} {'float64 rel':>12s} {'float32 rel':>12s}")
    for name in args.models:
        for (meth, layer, r64), (_, _, r32) in zip(
                agreement(name, "float64", args.parity_size),
                agreement(name, "float32", args.parity_size)):
            print(f"{name:9s} {meth:32s} {layer:32s} {r64:12.2e} {r32:12.2e}")
    print(f"\n{'model':9s} {'method':32s} {'xaijax img/s':>13s} {'TorchRay img/s':>15s} "
          f"{'speed-up':>9s} {'compile s':>10s}   ({args.size}x{args.size}, batch {args.batch})")
    for name in args.models:
        for meth, a, b, c in throughput(name, args.size, args.batch, args.repeats):
            print(f"{name:9s} {meth:32s} {a:13.3f} {b:15.3f} {a / b:9.2f} {c:10.1f}")


if __name__ == "__main__":
    main()
