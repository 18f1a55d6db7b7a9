"""Grid artefacts of strided layers in DeconvNet / guided-backprop maps, with and without the
Oramas stride fix (Oramas et al. 2019, §3.3, Eq. 2-3).

Measure: ``xaijax.rules.stride.grid_energy`` — the fraction of the heatmap's 2-D FFT power
(mean removed) at the harmonics ``(k·H/S, l·W/S) ≠ (0, 0)`` of the cumulative stride ``S`` of the
visualised layer (white noise scores ``(S² − 1)/(HW − 1)``; a pure period-``S`` grid scores 1).

For each model, each low block tap whose cumulative stride ``S`` is 2, 4 or 8, each bundled photo
and each method, the backward pass starts from the image's most active filter of that tap
(``start="activation"``, Oramas §3.2) and the table shows the mean measure over the photos
without and with ``stride_fix=True``, and their ratio.

Models: VGG16 and ResNet-50 with random torchvision-style weights (no pretrained weights for
them are reachable here), EfficientNet-Lite0 with its shipped ImageNet weights.

    python benchmarks/stride_artifacts.py                 # 224x224, the figures in the report
    python benchmarks/stride_artifacts.py --size 112 --models vgg16
    python benchmarks/stride_artifacts.py --smoke     # tiny setting, every code path (seconds)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from xaijax.data.images import load_image  # noqa: E402
from xaijax.rules.stride import grid_energy  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# one randomly initialised and one pretrained model (both branches of load_model)
SMOKE = {"size": 32, "models": ["resnet18", "efficientnet_lite0"], "photos": ["chelsea"],
         "strides": [2]}


def load_model(name):
    if name == "efficientnet_lite0":
        return xj.models.get(name, pretrained=True)
    return xj.models.get(name)


def low_taps(model, size, strides=(2, 4, 8)):
    """Block taps at cumulative stride 2, 4, 8: ``[(tap, S)]``."""
    shapes = model.tap_shapes((size, size))
    out, seen = [], set()
    for t in model.block_taps:
        s = size // shapes[t][0]
        if s in strides and s not in seen and size % s == 0:
            out.append((t, s))
            seen.add(s)
    return out


@functools.partial(jax.jit, static_argnames="tap")
def tap_activation(model, x, tap):
    """The activation at ``tap``, compiled (eager, EfficientNet-Lite0's forward took 16 s at
    32x32 on 2 CPU cores: one compilation per operation)."""
    return model.forward(x, capture=[tap])[1][tap]


def measure(model, x, tap, period, method):
    filt = jnp.argmax(tap_activation(model, x, tap).sum((1, 2)), -1)
    res = []
    for fix in (False, True):
        ex = xj.explain(model, x, 0, method=method, tap=tap, filter=filt, stride_fix=fix)
        res.append(float(np.mean(np.asarray(grid_energy(ex.heatmap, period)))))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50", "efficientnet_lite0"])
    p.add_argument("--methods", nargs="+", default=["deconvnet", "guided_backprop"])
    p.add_argument("--photos", nargs="+", default=list(PHOTOS), help="bundled photos")
    p.add_argument("--strides", nargs="+", type=int, default=[2, 4, 8],
                   help="cumulative strides S of the taps")
    args = parse_args(p, argv, SMOKE)
    imgs = [load_image(n) for n in args.photos]
    rows = []
    t0 = time.time()
    for name in args.models:
        if name not in xj.models.available():
            print(f"# {name}: not in the zoo, skipped")
            continue
        model = load_model(name)
        x = xj.models.preprocess(model, imgs, size=(args.size, args.size))
        for tap, s in low_taps(model, args.size, tuple(args.strides)):
            for method in args.methods:
                off, on = measure(model, x, tap, s, method)
                rows.append((name, tap, s, method, off, on))
    noise = {s: (s * s - 1) / (args.size * args.size - 1) for s in args.strides}
    print(f"grid energy E_S at the stride harmonics, mean over {len(imgs)} photos at "
          f"{args.size}x{args.size} (white noise: " +
          ", ".join(f"S={s}: {v:.1e}" for s, v in noise.items()) + ")")
    print(f"{'model':<20}{'tap':<24}{'S':>3}  {'method':<16}{'no fix':>10}{'fix':>10}"
          f"{'fix/no fix':>12}")
    for name, tap, s, method, off, on in rows:
        print(f"{name:<20}{tap:<24}{s:>3}  {method:<16}{off:>10.2e}{on:>10.2e}"
              f"{on / max(off, 1e-30):>12.3f}")
    print(f"# {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
