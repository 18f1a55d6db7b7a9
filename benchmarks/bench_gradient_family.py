"""Throughput of the gradient / backprop family on CPU: xaijax vs Captum (and pytorch-grad-cam for
FullGrad) in the same run.

Same model on both sides (ResNet-18 with the parity tests' random weights, converted), batch 8
at 224x224 (``--model``, ``--size``, ``--batch`` change that), same options: IG with ``--steps``
path points (trapezoid) evaluated ``--steps`` at a time on both sides, SmoothGrad / VarGrad with
``--samples`` noisy copies of the gradient, all in one batch on both sides. xaijax timings are of
the jitted call after one warm-up call (compilation time is reported separately); each figure is
the best of ``--repeats`` runs, in images per second.

    python benchmarks/bench_gradient_family.py                 # the figures in the report
    python benchmarks/bench_gradient_family.py --model vgg16 --repeats 3
    python benchmarks/bench_gradient_family.py --smoke     # every method, tiny setting (seconds)
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
from benchmarks.common import best_time, captum_ready, parse_args, torch_pair  # noqa: E402

# AlexNet compiles in about half the time of ResNet-18 (8 methods, 2 CPU cores)
SMOKE = {"model": "alexnet", "size": 64, "batch": 1, "repeats": 1, "steps": 2, "samples": 2}


def captum_pair(name):
    """The pair the parity tests use (``tests.helpers.torch_pair``: frozen parameters, randomised
    BatchNorm statistics), with a torch copy whose ReLUs are not in-place (Captum's ReLU hooks
    refuse in-place ReLUs). Captum differentiates with respect to the input only; with frozen
    parameters pytorch-grad-cam's FullGrad backward computes no weight gradients either."""
    return captum_ready(*torch_pair(name))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=None)
    args = parse_args(p, argv, SMOKE)

    import torch
    from captum import attr as ca
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    tm, model = captum_pair(args.model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    target = rng.integers(0, 1000, args.batch)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    tt = torch.tensor(target)
    xj_x = jax.numpy.asarray(x)
    n, s = args.steps, args.samples

    def nt(kind):
        def run():
            return ca.NoiseTunnel(ca.Saliency(tm)).attribute(
                xt.clone().requires_grad_(), nt_type=kind, nt_samples=s, stdevs=0.15 * float(
                    x.max() - x.min()), target=tt, abs=False)
        return run

    def fullgrad_peer():
        cam = FullGrad(model=tm, target_layers=[])
        return cam(input_tensor=xt.clone(), targets=[ClassifierOutputTarget(int(c))
                                                     for c in target])

    cases = {
        "gradient": ({}, lambda: ca.Saliency(tm).attribute(xt.clone().requires_grad_(),
                                                           target=tt, abs=True)),
        "input_x_gradient": ({}, lambda: ca.InputXGradient(tm).attribute(
            xt.clone().requires_grad_(), target=tt)),
        "integrated_gradients": (
            {"steps": n, "internal_batch_size": n},
            lambda: ca.IntegratedGradients(tm).attribute(
                xt.clone(), target=tt, n_steps=n, method="riemann_trapezoid",
                internal_batch_size=n * args.batch)),
        "smoothgrad": ({"n_samples": s}, nt("smoothgrad")),
        "vargrad": ({"n_samples": s}, nt("vargrad")),
        "guided_backprop": ({}, lambda: ca.GuidedBackprop(tm).attribute(
            xt.clone().requires_grad_(), target=tt)),
        "deconvnet": ({}, lambda: ca.Deconvolution(tm).attribute(
            xt.clone().requires_grad_(), target=tt)),
        "fullgrad": ({}, fullgrad_peer),
    }
    names = args.methods or list(cases)
    import io
    import contextlib

    print(f"{args.model}, batch {args.batch} at {args.size}x{args.size}, CPU "
          f"({os.cpu_count()} cores visible), best of {args.repeats}; IG {n} steps, noise "
          f"tunnel {s} samples")
    print(f"{'method':<22}{'xaijax img/s':>14}{'peer img/s':>12}{'ratio':>8}{'compile s':>11}"
          f"  peer")
    for name in names:
        opts, peer = cases[name]
        peer_name = "pytorch-grad-cam" if name == "fullgrad" else "captum"

        def ours():
            ex = xj.explain(model, xj_x, target, method=name, **opts)
            jax.block_until_ready(ex.heatmap)

        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        t_ours = best_time(ours, args.repeats)
        with contextlib.redirect_stdout(io.StringIO()):  # FullGrad prints a warning
            peer()
            t_peer = best_time(peer, args.repeats)
        a, b = args.batch / t_ours, args.batch / t_peer
        print(f"{name:<22}{a:>14.2f}{b:>12.2f}{a / b:>8.2f}{compile_s:>11.1f}  {peer_name}",
              flush=True)


if __name__ == "__main__":
    main()
