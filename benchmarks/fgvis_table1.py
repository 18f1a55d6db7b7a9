"""Reproduce FGVis Table 1 (Wagner et al. 2019, §3.2): how often the generation game creates
an *adversarial* explanation for a class that is not in the image, without and with the
gradient-filter defense.

Protocol (§3.2 "Validating the Adversarial Defense" and footnote 4): generation game (mask
initialised to 0), no sparsity term (λ = 0), φ = cross-entropy to the target; the target c_A is
the image's least-likely class, or the second least-likely when the least-likely class is the
zero image's prediction. An image counts as adversarial when its explanation e = m·x is
classified as c_A. The paper reports ~100 % without the defense and ≤ 0.2 % with it (1000
ImageNet validation images with p(c_true) ≥ 0.995, VGG16/AlexNet/ResNet50/GoogleNet).

Here: the pretrained EfficientNet-Lite0 over real photos shipped offline (the bundled photos,
skimage / sklearn sample photos) and horizontal flips and crops of them (no labels here, so no
p(c_true) filter). The script also reports how many activations of the filtered
nonlinearities end outside their Eq. 5 bounds, and how far, with and without the defense.

Run (CPU, 2 cores: ~3 s per image-iteration at 224x224, so keep the counts small):

    python benchmarks/fgvis_table1.py --images 8 --iterations 40
    python benchmarks/fgvis_table1.py --images 8 --iterations 40 --mask-init 0.01
    python benchmarks/fgvis_table1.py --smoke     # tiny setting, every code path (seconds)

On EfficientNet-Lite0 the defended gradient at m = 0 is zero on most images and ~1e-7 on some
(see ``xaijax/methods/fgvis.py``), so with the paper's initialisation the defended run stays
put on some images and moves on others; ``--mask-init 0.01`` starts where gradients flow and
tests the filter itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402

# two batches of one image each: the batch loop runs twice per defense
SMOKE = {"images": 2, "iterations": 2, "size": 64, "batch": 1}


def photos():
    """Real photos available offline: (name, uint8 HxWx3)."""
    out = list(xj.data.sample_images().items())
    try:
        import skimage.data as skd

        for name in ("retina", "immunohistochemistry", "hubble_deep_field"):
            try:
                out.append((name, np.asarray(getattr(skd, name)())[..., :3]))
            except Exception:  # noqa: BLE001 - optional images needing a download
                pass
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for name, im in zip(("china", "flower"), load_sample_images().images):
            out.append((name, np.asarray(im)))
    except ImportError:
        pass
    return out


def variants(items):
    """Originals first, then horizontal flips, then centre crops (70 %) of each photo."""
    flips = [(f"{n}/flip", im[:, ::-1]) for n, im in items]
    crops = []
    for n, im in items:
        h, w = im.shape[:2]
        dh, dw = int(0.15 * h), int(0.15 * w)
        crops.append((f"{n}/crop", im[dh:h - dh, dw:w - dw]))
    return list(items) + flips + crops


def load_model(name: str):
    if name == "efficientnet_lite0":
        return xj.models.get(name, pretrained=True)
    return xj.models.get(name)


def adversarial_targets(model, x):
    """Least-likely class per image, the second least-likely if it is the zero image's class."""
    # one compiled forward pass of the images and the zero image (the zero image's eager forward
    # took 19 s on EfficientNet-Lite0 on 2 CPU cores: one compilation per operation)
    logits = np.asarray(model(jnp.concatenate([x, jnp.zeros_like(x[:1])])))
    logits, zero_pred = logits[:-1], int(np.argmax(logits[-1]))
    order = np.argsort(logits, axis=-1)
    t = np.where(order[:, 0] == zero_pred, order[:, 1], order[:, 0])
    return jnp.asarray(t, jnp.int32), zero_pred


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--learning-rate", type=float, default=0.1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--mask-init", type=float, default=0.0,
                    help="initial mask value (the paper's generation game: 0)")
    args = parse_args(ap, argv, SMOKE)

    model = load_model(args.model)
    items = variants(photos())[: args.images]
    x = xj.models.preprocess(model, [im for _, im in items], size=(args.size, args.size))
    target, zero_pred = adversarial_targets(model, x)
    print(f"model {args.model}, {len(items)} images at {args.size}x{args.size}, generation game, "
          f"lambda=0, {args.iterations} Adam iterations (lr {args.learning_rate}), mask init "
          f"{args.mask_init}; zero image predicts class {zero_pred}")

    run = jax.jit(xj.methods.fgvis, static_argnames=("game", "iterations", "defense"))
    predict = model  # compiled forward pass (once per batch shape)
    results = {}
    for defense in (False, True):
        hits, p_t, stats = [], [], []
        t0 = time.time()
        for s in range(0, x.shape[0], args.batch):
            xb, tb = x[s:s + args.batch], target[s:s + args.batch]
            ex = run(model, xb, tb, game="generation", lam=0.0, iterations=args.iterations,
                     learning_rate=args.learning_rate, defense=defense,
                     mask_init=args.mask_init)
            e = ex.extras["explanation"]
            pred = np.asarray(jnp.argmax(predict(e), axis=-1))
            hits.append(pred == np.asarray(tb))
            p_t.append(np.asarray(ex.extras["score_explanation"]))
            # the generation game starts from e = 0 (m = 0)
            stats.append(xj.metrics.violation_summary(model, xb, e,
                                                      e_start=args.mask_init * xb))
        dt = time.time() - t0
        hits = np.concatenate(hits)
        results[defense] = hits
        v = {k: float(np.concatenate([np.asarray(s[k]) for s in stats]).mean())
             for k in stats[0]}
        label = "defended " if defense else "no defense"
        print(f"{label}: adversarial class generated for {hits.mean() * 100:5.1f} % of images "
              f"({hits.sum()}/{hits.size}); mean p(c_A | e) {np.concatenate(p_t).mean():.3f}; "
              f"{dt:.0f} s, {x.shape[0] / dt:.3f} images/s\n"
              f"    activations outside their Eq. 5 bounds: {v['outside'] * 100:.2f} % (mean "
              f"excess {v['excess']:.4f}); created by the optimisation (outside now, inside for "
              f"the initial e): {v['new_outside'] * 100:.2f} % (mean excess growth "
              f"{v['excess_growth']:.4f})")
    for (name, _), a, b in zip(items, results[False], results[True]):
        print(f"  {name:28s} target {int(target[[n for n, _ in items].index(name)])}: "
              f"no defense {'ADV' if a else '-'}, defended {'ADV' if b else '-'}")
    print(f"Table 1 (FGVis, {args.model}): No Defense {results[False].mean() * 100:.1f} %, "
          f"Defended {results[True].mean() * 100:.1f} %")


if __name__ == "__main__":
    main()
