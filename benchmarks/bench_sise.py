"""SISE vs RISE, speed and Drop %, same run (issue 18): the SISE paper's runtime claim.

Sattarzadeh et al. 2021 report 9.21 s per image for SISE against 26.08 s for RISE (ResNet-50,
Tesla T4). Here both run on the pretrained EfficientNet-Lite0 and the bundled photos (top-1
class as the target): SISE at each ``mu`` (Eq. 7) next to RISE at each mask count. Each setting
is compiled ahead of time (``jit(...).lower(...).compile()``, reported in its own column; one
SISE program serves every ``mu``, which is traced) and then timed over the whole batch, best of
``--repeats``; s/image is that time over the number of images. "masks scored" is the number of
masked images the model scores per image (for SISE the mean over the images: it scores the maps
that pass Eq. 7, in whole chunks of ``--batch-size``; in a batch the loop of each block runs as
long as its image needing most chunks); "masks used" is the mean number that enter Eq. 12. Drop % is SISE's metric
(``xj.metrics.drop_increase``, top 15 % of the pixels kept), the mean over the images.

Usage:
  python benchmarks/bench_sise.py [--images 2] [--size 224] [--rise-masks 4000,8000]
                                  [--mus 0,0.3,0.5] [--batch-size 64] [--repeats 1]
  python benchmarks/bench_sise.py --smoke     # 1 image, 64 px, RISE 64,128 masks, mu 0,0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, parse_args  # noqa: E402

SMOKE = {"images": 1, "size": 64, "rise_masks": "64,128", "mus": "0,0.5"}
PAPER = "paper (SISE Sec. runtime; ResNet-50, Tesla T4): SISE 9.21 s/image, RISE 26.08 s/image"


def _floats(s: str):
    return [float(v) for v in s.split(",") if v.strip()]


def _ints(s: str):
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2,
                    help=f"bundled photos, in the order of xj.data.SAMPLE_NAMES (at most "
                         f"{len(xj.data.SAMPLE_NAMES)})")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rise-masks", default="4000,8000", help="comma-separated mask counts")
    ap.add_argument("--mus", default="0,0.3,0.5", help="comma-separated SISE mu values")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="masked images per model call and image, both methods")
    ap.add_argument("--repeats", type=int, default=1)
    args = parse_args(ap, argv, SMOKE)

    names = xj.data.SAMPLE_NAMES
    if not 1 <= args.images <= len(names):
        ap.error(f"--images must be in 1..{len(names)}")
    model = jax.device_put(xj.models.get("efficientnet_lite0", pretrained=True))
    n, s, b = args.images, args.size, args.batch_size
    x = xj.models.preprocess(model, [xj.data.load_image(k) for k in names[:n]], size=(s, s))
    target = jnp.argmax(model(x), axis=-1).astype(jnp.int32)
    print(f"efficientnet_lite0 (pretrained) {s}x{s}, {n} image(s) {', '.join(names[:n])} "
          f"(top-1 targets), batch {b}, best of {args.repeats}, device "
          f"{jax.devices()[0].platform} ({jax.device_count()})")

    rows = []

    def timed(compiled, *ops):
        out = {}

        def go():
            out["ex"] = jax.block_until_ready(compiled(*ops))

        return best_time(go, args.repeats), out["ex"]

    def drop(heat):
        return float(np.mean(np.asarray(xj.metrics.drop_increase(model, x, heat, target).drop)))

    # SISE: one program for every mu (traced)
    sise = jax.jit(lambda m, z, t, mu: xj.methods.sise(m, z, t, mu=mu, batch_size=b))
    t0 = time.perf_counter()
    sise_c = sise.lower(model, x, target, jnp.float32(0.0)).compile()
    sise_compile = time.perf_counter() - t0
    for mu in _floats(args.mus):
        sec, ex = timed(sise_c, model, x, target, jnp.float32(mu))
        scored = float(np.mean(np.sum(np.asarray(ex.extras["num_scored"]), axis=1)))
        used = float(np.mean(np.sum(np.asarray(ex.extras["num_selected"]), axis=1)))
        rows.append(("sise", f"mu={mu:g}", scored, used, sec / n, drop(ex.heatmap),
                     sise_compile))

    # RISE: num_masks is static, one program per count
    key = jax.random.PRNGKey(0)
    for m in _ints(args.rise_masks):
        rise = jax.jit(lambda mdl, z, t, k, m=m: xj.methods.rise(mdl, z, t, num_masks=m,
                                                                   batch_size=b, key=k))
        t0 = time.perf_counter()
        rise_c = rise.lower(model, x, target, key).compile()
        comp = time.perf_counter() - t0
        sec, ex = timed(rise_c, model, x, target, key)
        rows.append(("rise", f"masks={m}", float(m), float(m), sec / n, drop(ex.heatmap), comp))

    print(f"{'method':7s} {'setting':12s} {'masks scored':>13s} {'masks used':>11s} "
          f"{'s/image':>9s} {'Drop %':>8s} {'compile s':>10s}")
    for name, setting, scored, used, spi, d, c in rows:
        print(f"{name:7s} {setting:12s} {scored:13.1f} {used:11.1f} {spi:9.3f} {d:8.2f} {c:10.1f}")
    print(PAPER)
    sise_best = min(r[4] for r in rows if r[0] == "sise") if any(r[0] == "sise" for r in rows) \
        else None
    rise_first = next((r for r in rows if r[0] == "rise"), None)
    if sise_best is not None and rise_first is not None:
        print(f"ours: fastest SISE / RISE {rise_first[1]}: {sise_best / rise_first[4]:.2f} "
              f"(paper 9.21 / 26.08 = {9.21 / 26.08:.2f})")


if __name__ == "__main__":
    main()
