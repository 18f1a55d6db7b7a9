"""Throughput of the CAM family on CPU: xaijax vs pytorch-grad-cam in the same run.

ResNet-18 with random torchvision weights (the same converted weights on both sides), batch 8.
Grad-CAM and Grad-CAM++ run at 224x224 on ``layer4`` (the default CAM layer). Score-CAM and
Ablation-CAM run one forward pass per channel and image (512 x 8 for ``layer4``: thousands of
ResNet-18 passes per batch), which would take many minutes on a small CPU; by default they run on
``layer1`` (64 channels) at 64x64 (``--perturb-tap`` / ``--perturb-size`` change that). Both
libraries use the same layer, input and channel-chunk size (32). Timings exclude xaijax's
one-off compilation (reported separately), pytorch-grad-cam's first Grad-CAM / Grad-CAM++ call
and its progress bars.

The shared torch model's parameters do not require grad (``tests.helpers.torch_pair``), so for
Grad-CAM / Grad-CAM++ the input requires grad (as in tests/methods/test_cam_parity.py):
pytorch-grad-cam's backward then computes the activation gradients down to the input but no
weight gradients (xaijax differentiates the logits with respect to the tap only).

    python benchmarks/bench_cam.py                  # the figures in the report
    python benchmarks/bench_cam.py --smoke          # every method, tiny setting (seconds)
    python benchmarks/bench_cam.py --repeats 3 --perturb-tap layer4 --perturb-size 224
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, parse_args, torch_pair  # noqa: E402,F811

SMOKE = {"batch": 1, "size": 32, "perturb_size": 32, "repeats": 1}


def _quiet_tqdm():
    import pytorch_grad_cam.ablation_cam as ab
    import pytorch_grad_cam.score_cam as sc

    class _Q:
        @staticmethod
        def tqdm(it, *a, **k):
            return it

    ab.tqdm = sc.tqdm = _Q


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--tap", default="layer4")
    p.add_argument("--perturb-tap", default="layer1")
    p.add_argument("--perturb-size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=32, help="channels per chunk (both libraries)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--methods", default="gradcam,gradcam_pp,scorecam,ablationcam")
    a = parse_args(p, argv, SMOKE)

    import torch
    from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.set_num_threads(os.cpu_count() or 1)
    _quiet_tqdm()
    tm, model = torch_pair(a.model)
    model = jax.device_put(model)  # numpy leaves would be copied in again on every call
    peers = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "scorecam": ScoreCAM,
             "ablationcam": AblationCAM}
    print(f"{a.model}, random weights, batch {a.batch}, CPU ({os.cpu_count()} cores), "
          f"jax {jax.__version__}, torch {torch.__version__}")
    print(f"{'method':12s} {'layer':8s} {'size':>5s} {'xaijax img/s':>13s} "
          f"{'pytorch-grad-cam img/s':>23s} {'speed-up':>9s} {'xaijax compile s':>17s}")
    for method in a.methods.split(","):
        perturb = method in ("scorecam", "ablationcam")
        tap, size = (a.perturb_tap, a.perturb_size) if perturb else (a.tap, a.size)
        x = np.random.RandomState(0).randn(a.batch, size, size, 3).astype(np.float32)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        with torch.no_grad():
            t = tm(xt).argmax(1).numpy()
        if not perturb:  # the backward needs a graph; the model's parameters are frozen
            xt.requires_grad_()
        opts = {"tap": tap}
        if perturb:
            opts["batch_size"] = a.chunk
        if method == "scorecam":
            opts.update(softmax="channels", align_corners=True)  # pytorch-grad-cam's conventions

        def ours():
            xj.explain(model, x, t, method=method, **opts).heatmap.block_until_ready()

        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        ours_s = best_time(ours, a.repeats)

        cam = peers[method](tm, [tm.get_submodule(tap)])
        cam.batch_size = a.chunk
        targets = [ClassifierOutputTarget(int(i)) for i in t]

        def peer():
            xt.grad = None  # not accumulated across repeats
            cam(xt, targets)

        if not perturb:  # warm-up, as xaijax's first call (one Score/Ablation-CAM call is long)
            peer()
        peer_s = best_time(peer, a.repeats)
        cam.activations_and_grads.release()
        print(f"{method:12s} {tap:8s} {size:5d} {a.batch / ours_s:13.2f} "
              f"{a.batch / peer_s:23.2f} {peer_s / ours_s:8.2f}x {compile_s - ours_s:17.1f}",
              flush=True)


if __name__ == "__main__":
    main()
