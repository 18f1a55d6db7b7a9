"""Throughput of occlusion, RISE and extremal perturbation: xaijax vs Captum / TorchRay, same run.

Both sides use the same random AlexNet weights (torchvision layout converted to xaijax) on CPU,
each held in its own library's arrays (the xaijax variables are put on the device once, as the
torch module's tensors already are). xaijax is timed after one warm-up call (compile time
printed separately); the peers run eagerly.

    python benchmarks/bench_perturbation.py [--size 64] [--images 2] [--repeats 2]
    python benchmarks/bench_perturbation.py --smoke   # tiny run of every row (a few seconds)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, torch_pair  # noqa: E402,F811


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rise-masks", type=int, default=256)
    ap.add_argument("--ep-iters", type=int, default=20)
    ap.add_argument("--smoke", action="store_true",
                    help="1 image, 16 RISE masks, 2 EP iterations, 1 repeat: checks that every "
                         "row still runs on both sides (AlexNet needs >= 63 px, so 64)")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.images, args.repeats, args.rise_masks, args.ep_iters = 64, 1, 1, 16, 2

    import torch
    from captum.attr import Occlusion
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchray.attribution.extremal_perturbation import extremal_perturbation as tr_ep
        from torchray.attribution.rise import rise as tr_rise

    tm, model = torch_pair("alexnet")
    model = jax.device_put(model)  # numpy leaves would be copied in again on every call
    n, s = args.images, args.size
    x = jax.random.normal(jax.random.PRNGKey(0), (n, s, s, 3))
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
    target = [int(i) for i in np.arange(n) * 7 % 1000]
    print(f"device: {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}; "
          f"AlexNet (random weights), {n} images {s}x{s}, best of {args.repeats}")

    rows = []

    def run(name, settings, ours, peer):
        t0 = time.perf_counter()
        jax.block_until_ready(ours())
        compile_s = time.perf_counter() - t0
        t_ours = best_time(lambda: jax.block_until_ready(ours()), args.repeats)
        t_peer = best_time(peer, args.repeats)
        rows.append((name, settings, n / t_ours, n / t_peer, compile_s))

    # occlusion
    run("occlusion", "window 16x16, stride 8, batch 32 (Captum perturbations_per_eval=32)",
        lambda: xj.explain(model, x, target, method="occlusion", window=(16, 16),
                           strides=(8, 8), batch_size=32).heatmap,
        lambda: Occlusion(tm).attribute(xt, target=torch.tensor(target),
                                        sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8),
                                        perturbations_per_eval=32))

    # RISE
    m = args.rise_masks
    run("rise", f"{m} masks, 7x7 grid, p1=0.5, batch 64 (TorchRay rise, per image)",
        lambda: xj.explain(model, x, target, method="rise", num_masks=m, batch_size=64,
                           key=jax.random.PRNGKey(0)).heatmap,
        lambda: tr_rise(tm, xt, num_masks=m, num_cells=7, batch_size=64))

    # extremal perturbation
    it = args.ep_iters

    def peer_ep():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(n):
                tr_ep(tm, xt[i:i + 1], target[i], areas=[0.1], max_iter=it)

    run("extremal_perturbation", f"area 0.1, {it} iterations, defaults otherwise (TorchRay, "
        "one image per call)",
        lambda: xj.explain(model, x, target, method="extremal_perturbation", areas=(0.1,),
                           max_iter=it).heatmap,
        peer_ep)

    print(f"{'method':24s} {'xaijax img/s':>13s} {'peer img/s':>11s} {'speed-up':>9s} "
          f"{'compile s':>10s}  settings")
    for name, settings, a, b, c in rows:
        print(f"{name:24s} {a:13.3f} {b:11.3f} {a / b:9.2f} {c:10.1f}  {settings}")


if __name__ == "__main__":
    main()
