"""The deletion metric over a batch of images: xaijax's one compiled program vs RISE's reference
protocol (a per-image loop, one model call per step), same run, same weights and heatmaps.

The reference is the causal-metric loop of Petsiuk et al. 2018 (RISE, "Deletion" in §4): for
each image, rank the pixels by decreasing saliency, then for ``steps + 1`` rounds score the
current image and set the next ``step`` pixels to the substrate (zeros); the AUC is the
trapezoid of the scores. It runs in torch (eval mode, no grad) on the torchvision twin of the
xaijax model. Both sides must give the same AUCs; the largest difference is printed.

Usage:
  python benchmarks/bench_metrics.py [--model resnet18] [--images 64] [--size 64] [--repeats 1]
  python benchmarks/bench_metrics.py --smoke     # 2 images, 32 px (seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, parse_args, torch_pair  # noqa: E402,F811
from tests.helpers import to_nhwc  # noqa: E402

SMOKE = {"images": 2, "size": 32, "repeats": 1}


def reference_deletion(tm, x, heat, target, step):
    """RISE's per-image causal-metric loop (softmax score of the target, zeros substrate):
    ``(N,)`` AUCs and ``(N, steps + 1)`` curves. ``x`` NCHW torch, ``heat`` (N, H, W) numpy."""
    import torch

    n, c, h, w = x.shape
    p = h * w
    steps = -(-p // step)
    aucs, curves = [], []
    with torch.no_grad():
        for i in range(n):
            order = np.argsort(-heat[i].reshape(-1), kind="stable")
            img = x[i:i + 1].clone()
            flat = img.view(1, c, p)
            scores = []
            for s in range(steps + 1):
                prob = torch.softmax(tm(img), dim=1)[0, int(target[i])]
                scores.append(float(prob))
                if s < steps:
                    flat[:, :, torch.as_tensor(order[s * step:(s + 1) * step])] = 0.0
            frac = np.minimum(np.arange(steps + 1) * step, p) / p
            curves.append(scores)
            aucs.append(float(np.trapezoid(scores, frac)))
    return np.asarray(aucs), np.asarray(curves)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256,
                    help="perturbed images per model call on the xaijax side")
    ap.add_argument("--repeats", type=int, default=1)
    args = parse_args(ap, argv, SMOKE)

    import torch

    tm, m = torch_pair(args.model)
    n, s = args.images, args.size
    x = np.random.RandomState(0).randn(n, 3, s, s).astype(np.float32)
    xt = torch.tensor(x)
    xj_x = to_nhwc(x)
    target = np.arange(n, dtype=np.int32) * 7 % 1000
    heat = np.asarray(xj.explain(m, xj_x, target, method="gradient").heatmap)
    step = s
    print(f"{args.model} {s}x{s}, random weights, {n} images, deletion with step {step} "
          f"({-(-s * s // step) + 1} model calls per image), CPU ({jax.devices()[0].platform}, "
          f"torch threads {torch.get_num_threads()})")

    def ours():
        r = xj.metrics.deletion(m, xj_x, heat, target, step=step, batch_size=args.batch_size)
        return jax.block_until_ready(r)

    t0 = time.perf_counter()
    r = ours()
    compile_s = time.perf_counter() - t0
    t_ours = best_time(ours, args.repeats)
    ref = {}
    t_ref = best_time(lambda: ref.update(out=reference_deletion(tm, xt, heat, target, step)),
                      args.repeats)
    auc_diff = float(np.abs(np.asarray(r.auc) - ref["out"][0]).max())
    curve_diff = float(np.abs(np.asarray(r.curve) - ref["out"][1]).max())
    print(f"{'side':40s} {'images/s':>10s} {'seconds':>9s}")
    print(f"{'xaijax (one compiled program)':40s} {n / t_ours:10.2f} {t_ours:9.2f}"
          f"   (first call {compile_s:.1f} s incl. compile)")
    print(f"{'RISE reference loop (torch, per image)':40s} {n / t_ref:10.2f} {t_ref:9.2f}")
    print(f"speed-up {t_ref / t_ours:.1f}x; max |AUC difference| {auc_diff:.2e}, "
          f"max |curve difference| {curve_diff:.2e}")
    if auc_diff > 1e-3:
        raise SystemExit(f"the two sides disagree: max |AUC difference| {auc_diff:.3g}")


if __name__ == "__main__":
    main()
