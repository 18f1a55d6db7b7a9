"""Oramas et al. (2019) on the synthetic an8Flower-style data: Fig. 4 (ablating the relevant
filters) and Fig. 8-9 (IoU of the visual feedback with the mask of the discriminative part).

For every data set (``single6``, ``double12``, and sklearn's ``digits`` for Fig. 4 only: the
paper's MNIST analogue, without masks) a zoo CNN
is trained with :func:`xaijax.train.train_classifier` (or loaded from ``--models-dir``), then:

* **relevant filters** (§3.1): :func:`xaijax.interpretation.fit_relevant_filters` on
  ``--n-fit`` training images, μ = 10, for the *All* (every Conv and Dense layer but the last)
  and *OnlyConv* (Conv layers only) pools;
* **Fig. 4** (§4.1): held-out accuracy of the original network, with the relevant filters of
  each selection zeroed, and with as many random filters zeroed (``--draws`` draws, mean ± std;
  "uniform": drawn from all filters of the same layers, the paper's control; "per layer": the
  same count from every layer as the selection, a stricter control);
* **Fig. 8-9** (§4.3): for ``--n-eval`` held-out images, the top ``--k`` relevant *All* features
  of the predicted class (:func:`xaijax.interpretation.explain_by_interpretation`) visualised by
  the three feedbacks — upsampled activation maps, Deconv+GB, and Deconv+GB with the stride fix
  (the paper's). Each feature's heatmap is divided by its maximum and the explanation of an
  image is the pixel-wise maximum over its ``k`` features (a Dense feature has no upsampled
  activation map: it contributes nothing to that feedback, §4.2 "not applicable"). The
  explanation is thresholded at ``t = 0, 0.05, ..., 1`` (pixels ``>= t``) and compared with the
  mask of the discriminative part: the IoU curve is the mean IoU over images at each ``t``;
  "AUC" is its area (trapezoid over ``[0, 1]``, the paper's Fig. 8 measure) and "mIoU" the
  mean IoU at the best single threshold (our reading of Fig. 9 right, whose numbers the paper
  text does not give).

    python benchmarks/oramas_reproduce.py                 # the figures in docs/RESULTS.md
    python benchmarks/oramas_reproduce.py --smoke         # tiny setting, every code path
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from xaijax import interpretation as xi  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402

FEEDBACK_NAMES = {"upsampled": "Upsampled act.", "deconv_gb": "Deconv+GB",
                  "stride_fix": "Deconv+GB + stride fix (ours)"}
PAPER_AUC = {"single6": {"upsampled": 0.15, "deconv_gb": 0.22, "stride_fix": 0.23},
             "double12": {"upsampled": 0.19, "deconv_gb": 0.20, "stride_fix": 0.21}}
THRESHOLDS = np.linspace(0.0, 1.0, 21)
SMOKE = {"variants": ["single6"], "size": 16, "n_train": 96, "n_test": 48, "steps": 4,
         "n_fit": 96, "n_eval": 8, "draws": 2, "width": 4, "batch_size": 32}


def get_model(variant, args, log):
    """A trained model and its data set (training images drawn from ``args.seed``)."""
    n_train, n_test = args.n_train, args.n_test
    if variant == "digits":  # sklearn's 1,797 digits: a fixed 1,347 / 450 split
        n_train, n_test = min(n_train, 1347), min(n_test, 450)
    ds = xj.train.load_dataset(variant, size=args.size, n_train=n_train, n_test=n_test,
                               seed=args.seed)
    path = None
    if args.models_dir:
        path = os.path.join(args.models_dir, f"{args.arch}_{variant}_{args.size}_s{args.seed}")
        if os.path.exists(path):
            log(f"[{variant}] loading {path}")
            return xj.train.load(path), ds
    t0 = time.perf_counter()
    res = xj.train.train_classifier(variant, args.arch, steps=args.steps, seed=args.seed,
                                    size=args.size, width=args.width, dataset=ds,
                                    batch_size=args.batch_size, n_train=n_train, n_test=n_test)
    log(f"[{variant}] trained {args.arch} in {time.perf_counter() - t0:.0f} s: held-out "
        f"accuracy {res.accuracy:.4f}")
    if path:
        xj.train.save(res, path)
    return res.model, ds


def iou_curve(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean IoU over images of ``heat >= t`` with ``masks`` for every threshold ``t``."""
    pred = heat[None] >= THRESHOLDS[:, None, None, None]
    inter = np.logical_and(pred, masks[None]).sum((2, 3))
    union = np.logical_or(pred, masks[None]).sum((2, 3))
    return (inter / np.maximum(union, 1)).mean(1)


def explanation_maps(model, x, fit, k, feedback, batch):
    """``(N, H, W)``: per image the pixel-wise max of its top-k feature heatmaps, each divided
    by its maximum."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        pad = batch - len(xb)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, 0)])
        hm = np.asarray(xi.explain_by_interpretation(model, xb, fit, k=k,
                                                     feedback=feedback).heatmaps)
        hm = hm / np.maximum(hm.max(axis=(2, 3), keepdims=True), 1e-12)
        out.append(hm.max(1)[:batch - pad])
    return np.concatenate(out)


def run_variant(variant, args, log):
    model, ds = get_model(variant, args, log)
    x_fit = np.asarray(xj.train.normalise(model, ds.x_train[:args.n_fit]))
    y_fit = ds.y_train[:args.n_fit]
    x_te = np.asarray(xj.train.normalise(model, ds.x_test))
    y_te = ds.y_test
    row = {"variant": variant, "arch": args.arch, "n_fit": int(len(y_fit)),
           "n_test": int(len(y_te)), "mu": args.mu}
    fits = {}
    for sel, layers in (("All", "all"), ("OnlyConv", "conv")):
        t0 = time.perf_counter()
        fits[sel] = xi.fit_relevant_filters(model, x_fit, y_fit, mu=args.mu, layers=layers,
                                            num_classes=ds.num_classes)
        log(f"[{variant}] fit {sel}: {time.perf_counter() - t0:.1f} s")

    # ---- Fig. 4 ------------------------------------------------------------------------------
    base = xi.ablate_filters(model, x_te, y_te, {})
    fig4 = {"original": base}
    for sel, fit in fits.items():
        chosen = fit.selection()
        n = int(sum(len(v) for v in chosen.values()))
        acc = xi.ablate_filters(model, x_te, y_te, chosen)
        rnd = {}
        for mode, per_layer in (("uniform", False), ("per_layer", True)):
            accs = [xi.ablate_filters(model, x_te, y_te, xi.random_filters(
                fit, jax.random.key(1000 + d), per_layer=per_layer)) for d in range(args.draws)]
            rnd[mode] = (float(np.mean(accs)), float(np.std(accs)), accs)
        fig4[sel] = {"n_filters": n, "pool": int(sum(fit.sizes)), "ablated": acc,
                     "per_layer": {k: int(len(v)) for k, v in chosen.items()},
                     "widths": dict(zip(fit.layers, fit.sizes)), "random": rnd}
    row["fig4"] = fig4

    # ---- Fig. 8-9 ----------------------------------------------------------------------------
    if ds.masks_test is not None:
        x_ev, m_ev = x_te[:args.n_eval], ds.masks_test[:args.n_eval]
        fig8 = {}
        for fb in xi.FEEDBACKS:
            t0 = time.perf_counter()
            heat = explanation_maps(model, x_ev, fits["All"], args.k, fb, args.batch_size)
            curve = iou_curve(heat, m_ev)
            fig8[fb] = {"auc": float(np.trapezoid(curve, THRESHOLDS)),
                        "miou": float(curve.max()),
                        "best_t": float(THRESHOLDS[int(np.argmax(curve))]),
                        "curve": [float(c) for c in curve],
                        "seconds": time.perf_counter() - t0}
        row["fig8"] = fig8
    return row


def print_tables(rows):
    print("\nFig. 4 — held-out accuracy after ablating filters (random: mean ± std over "
          "draws)")
    print(f"{'data':10s} {'selection':10s} {'#filters':>9s} {'original':>9s} {'ablated':>9s} "
          f"{'random (uniform)':>18s} {'random (per layer)':>19s}")
    for r in rows:
        f4 = r["fig4"]
        for sel in ("All", "OnlyConv"):
            s = f4[sel]
            ru, rp = s["random"]["uniform"], s["random"]["per_layer"]
            print(f"{r['variant']:10s} {sel:10s} {s['n_filters']:>4d}/{s['pool']:<4d} "
                  f"{f4['original']:9.4f} {s['ablated']:9.4f} "
                  f"{ru[0]:9.4f} ± {ru[1]:.4f} {rp[0]:10.4f} ± {rp[1]:.4f}")
    print("relevant filters per layer (selected/width):")
    for r in rows:
        for sel in ("All", "OnlyConv"):
            s = r["fig4"][sel]
            print(f"  {r['variant']:10s} {sel:10s} " + ", ".join(
                f"{k} {v}/{s['widths'][k]}" for k, v in s["per_layer"].items()))
    if any("fig8" in r for r in rows):
        print("\nFig. 8-9 — IoU of the explanation with the mask of the discriminative part")
        print(f"{'data':10s} {'feedback':32s} {'AUC':>7s} {'paper AUC':>9s} {'mIoU':>7s} "
              f"{'at t':>5s}")
        for r in rows:
            for fb, v in r.get("fig8", {}).items():
                paper = PAPER_AUC.get(r["variant"], {}).get(fb)
                ps = f"{paper:9.2f}" if paper is not None else f"{'-':>9s}"
                print(f"{r['variant']:10s} {FEEDBACK_NAMES[fb]:32s} {v['auc']:7.4f} {ps} "
                      f"{v['miou']:7.4f} {v['best_t']:5.2f}")
        print("\nIoU curves (t = " + ", ".join(f"{t:.2f}" for t in THRESHOLDS[::4]) + ", ...)")
        for r in rows:
            for fb, v in r.get("fig8", {}).items():
                print(f"{r['variant']:10s} {fb:11s} "
                      + " ".join(f"{c:.3f}" for c in v["curve"][::4]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["single6", "double12", "digits"],
                   choices=["single6", "double12", "digits"])
    p.add_argument("--arch", default="small_vgg", help="zoo architecture to train")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=2000,
                   help="training images (digits: at most 1347)")
    p.add_argument("--n-test", type=int, default=500, help="held-out images (digits: at most 450)")
    p.add_argument("--n-fit", type=int, default=1000, help="training images for the μ-Lasso")
    p.add_argument("--n-eval", type=int, default=200, help="held-out images for Fig. 8-9")
    p.add_argument("--mu", type=float, default=10.0)
    p.add_argument("--k", type=int, default=3, help="top features per image (Fig. 8-9)")
    p.add_argument("--draws", type=int, default=5, help="random ablation draws (Fig. 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir", default=None, help="load / save trained models here")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = parse_args(p, argv, SMOKE)

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    rows = [run_variant(v, args, log) for v in args.variants]
    print_tables(rows)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
