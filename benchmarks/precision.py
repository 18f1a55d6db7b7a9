"""bfloat16 against float32: the error of every registered method's heatmap under
``xj.explain(..., dtype="bfloat16")`` (issue 20, "Precision").

For each method: the same model, weights, images, targets and options are explained once in
float32 and once in bfloat16 (variables and input cast inside the compiled program, float32
accumulation in the convolutions and dense layers, float32 output). Printed per method:

* ``rel max``: ``max |h_bf16 - h_f32| / max |h_f32|`` over the batch,
* ``spearman``: the rank correlation of the two heatmaps (pixels of one image; the smallest over
  the images),
* ``top10 IoU``: the overlap of the 10 % highest pixels (smallest over the images).

A method whose bfloat16 run fails is listed with the error. Cheap options (few steps / samples)
keep the run to minutes on CPU; the targets are fixed (float32 ``top1``) so both runs explain
the same class.

    python benchmarks/precision.py [--model resnet18] [--size 64] [--batch 2] [--methods a,b]
    python benchmarks/precision.py --smoke      # small_cnn, two methods
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from scipy.stats import spearmanr

import xaijax as xj

# options that keep each method cheap; a method not listed runs with its defaults
CHEAP = {
    "blur_ig": dict(steps=8, internal_batch_size=8),
    "dssr": dict(iterations=20),
    "extremal_perturbation": dict(max_iter=20),
    "feature_ablation": dict(num_segments=16),
    "fgvis": dict(iterations=20, lam=1e-4),
    "gradient_shap": dict(n_samples=8),
    "guided_ig": dict(steps=8),
    "integrated_gradients": dict(steps=16),
    "kernel_shap": dict(num_samples=64, num_segments=16),
    "lime": dict(num_samples=64, num_segments=16),
    "meaningful_perturbation": dict(iterations=20),
    "rise": dict(num_masks=128),
    "shapley_sampling": dict(num_samples=4, num_segments=16),
    "smoothgrad": dict(n_samples=8),
    "vargrad": dict(n_samples=8),
    "xrai": dict(steps=8, resize_image=None),
}
# needs a trained generator (xj.train), not a plain model: not measured
SKIP = {"adversarial_explainer": "needs a trained explainer network"}
SMOKE_METHODS = ("gradient", "gradcam")


def compare(h32: np.ndarray, h16: np.ndarray):
    """``(rel max, min spearman, min top-10 % IoU)`` of two ``(N, H, W)`` heatmaps."""
    scale = np.abs(h32).max()
    rel = np.abs(h16 - h32).max() / scale if scale > 0 else float(np.abs(h16).max())
    rho, iou = [], []
    for a, b in zip(h32.reshape(len(h32), -1), h16.reshape(len(h16), -1)):
        r = spearmanr(a, b).statistic if a.std() > 0 and b.std() > 0 else float(
            np.array_equal(a, b))
        rho.append(r)
        k = max(1, a.size // 10)
        ta, tb = set(np.argsort(-a)[:k]), set(np.argsort(-b)[:k])
        iou.append(len(ta & tb) / len(ta | tb))
    return float(rel), float(np.nanmin(rho)), float(min(iou))


def measure(model, x, target, name):
    opts = dict(CHEAP.get(name, {}))
    if "key" in xj.methods.info(name).options:
        opts["key"] = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    h32 = np.asarray(xj.explain(model, x, target, method=name, **opts).heatmap)
    ex = xj.explain(model, x, target, method=name, dtype="bfloat16", **opts)
    h16 = np.asarray(ex.heatmap)
    assert ex.heatmap.dtype == np.float32, ex.heatmap.dtype
    return compare(h32, h16) + (time.perf_counter() - t0,)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    p.add_argument("--smoke", action="store_true", help="small_cnn at 32 px, two methods")
    a = p.parse_args(argv)
    if a.smoke:
        a.model, a.size, a.methods = "small_cnn", 32, ",".join(SMOKE_METHODS)
    kw = {"num_classes": 10} if a.model == "small_cnn" else {}
    model = xj.models.get(a.model, **kw)
    x = np.random.RandomState(0).randn(a.batch, a.size, a.size, 3).astype(np.float32)
    target = np.asarray(np.argmax(model(x), axis=-1), np.int32)
    names = a.methods.split(",") if a.methods else [m for m in xj.methods.available()]
    print(f"# {a.model} (random weights) {a.size}x{a.size}, batch {a.batch}, jax "
          f"{jax.__version__} on {jax.default_backend()}")
    print(f"{'method':<34}{'rel max':>10}{'spearman':>10}{'top10 IoU':>11}{'s':>7}")
    for name in names:
        if name in SKIP:
            print(f"{name:<34}skipped: {SKIP[name]}")
            continue
        try:
            rel, rho, iou, s = measure(model, x, target, name)
        except Exception as e:  # a method that cannot run in bfloat16 is reported, not fatal
            print(f"{name:<34}error: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        print(f"{name:<34}{rel:>10.2e}{rho:>10.4f}{iou:>11.3f}{s:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
