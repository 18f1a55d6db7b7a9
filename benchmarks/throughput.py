"""Throughput of every method: xaijax against the fastest peer that has it, in one run.

For each model (EfficientNet-Lite0 with its pretrained ImageNet weights, ResNet-50 with random
weights; both sides hold the same converted weights) and each batch size (1, 8, 32 by default),
the script measures

* the model's own floor: one jitted forward + backward pass (gradient of the target logits with
  respect to the input) per image, and one forward pass, in xaijax;
* every registered method through ``xj.explain`` (the user's path: the second call reuses the
  compiled program; compile time is the first call's extra time and is reported apart), and
  every peer that implements the method (Captum, pytorch-grad-cam, Zennit, TorchRay) on the same
  torch weights, inputs and settings; ``best peer`` is the fastest of them;
* ``passes``: the model evaluations the method needs per image, as ``b`` forward+backward and
  ``f`` forward-only passes, and ``cost = time / (b × floor_fb + f × floor_f)``: 1.0 means the
  method costs exactly its passes, anything above is the method's own overhead.

Goals (issue 20): ``ratio = xaijax img/s / best peer img/s`` ≥ 1.0 on single-pass methods,
≥ 1.5 on multi-pass methods, ≥ 3 against TorchRay's extremal perturbation, and ``cost`` ≤ 1.15
on every iterative method (a loop of optimisation steps). The ``goal`` column says which applies
and whether it is met.

Settings are the same on both sides and smaller than the methods' defaults (``SETTINGS``,
printed with the table): throughput per pass does not depend on how many passes a method makes,
and the reduced counts let a CPU run cover the table. A cell whose estimated time (passes ×
floor × batch, both sides, all repeats) exceeds ``--cell-budget`` seconds is printed as skipped
with its estimate; ``--cell-budget 0`` runs every cell (for a GPU/TPU run).

    python benchmarks/throughput.py                                   # the full protocol
    python benchmarks/throughput.py --models efficientnet_lite0 --batches 1 8 --cell-budget 60
    python benchmarks/throughput.py --methods gradient gradcam rise --markdown out.md
    python benchmarks/throughput.py --smoke                           # every code path, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from benchmarks.common import best_time, captum_ready, parse_args  # noqa: E402

SMOKE = {"models": ["efficientnet_lite0"], "size": 32, "batches": [1], "repeats": 1,
         "methods": ["gradient", "gradcam", "integrated_gradients", "occlusion",
                     "extremal_perturbation", "cam"], "scale": 0.25, "cell_budget": 0.0}

# per model: the CAM tap (xaijax name, torch module), a low tap for the per-channel methods
# (Score-CAM, Ablation-CAM: one forward pass per channel, so few channels), the excitation
# backprop layer and its contrast layer (TorchRay's names, as in bench_excitation)
MODELS = {
    "efficientnet_lite0": dict(tap=("relu_head", "_swish.head"), low=("relu_stem", "_swish.stem"),
                               eb=None),
    "resnet50": dict(tap=("layer4", "layer4"), low=("layer1", "layer1"),
                     eb=("layer3", "avgpool")),
}


@dataclass
class Method:
    """One row: the xaijax options, the passes per image, the kind and the peers."""

    name: str
    kind: str  # "single", "multi" or "iterative"
    options: Callable[["Ctx"], dict]
    passes: Callable[["Ctx"], Tuple[int, int]]  # (forward+backward, forward-only) per image
    peers: Dict[str, Callable[["Ctx"], Callable[[], object]]] = field(default_factory=dict)
    settings: str = ""
    models: Tuple[str, ...] = ("efficientnet_lite0", "resnet50")


@dataclass
class Ctx:
    """What a row needs: both models, the inputs in both layouts, the targets, the settings."""

    name: str
    tm: object
    model: object
    x: object
    xt: object
    target: List[int]
    size: int
    scale: float
    spec: dict

    def n(self, count: int) -> int:
        """A pass count scaled by ``--scale`` (at least 2)."""
        return max(2, int(round(count * self.scale)))

    @property
    def batch(self) -> int:
        return len(self.target)


# ---- the peers ---------------------------------------------------------------------------------

def _quiet(fn):
    """Run ``fn`` with the peers' warnings, prints and tqdm bars silenced."""
    def run():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn()
    return run


def captum(cls_name, *, grad=True, layer=None, **kw):
    def make(c: Ctx):
        from captum import attr
        import torch
        cls = getattr(attr, cls_name)
        obj = cls(c.tm, c.tm.get_submodule(layer(c))) if layer else cls(c.tm)
        tt = torch.tensor(c.target)
        extra = {k: (v(c) if callable(v) else v) for k, v in kw.items()}
        return _quiet(lambda: obj.attribute(
            c.xt.clone().requires_grad_() if grad else c.xt, target=tt, **extra))
    return make


def pgc(cls_name, layer, **kw):
    def make(c: Ctx):
        import pytorch_grad_cam as p
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        layers = [c.tm.get_submodule(layer(c))] if layer else []
        cam = getattr(p, cls_name)(model=c.tm, target_layers=layers)
        for k, v in kw.items():
            setattr(cam, k, v(c) if callable(v) else v)
        targets = [ClassifierOutputTarget(t) for t in c.target]
        # the weights are frozen (the parity pair), so the graph starts at the input
        return _quiet(lambda: cam(input_tensor=c.xt.clone().requires_grad_(), targets=targets))
    return make


def torchray(fn_name, module, per_image=False, **kw):
    def make(c: Ctx):
        import importlib
        fn = getattr(importlib.import_module(f"torchray.attribution.{module}"), fn_name)
        extra = {k: (v(c) if callable(v) else v) for k, v in kw.items()}
        if per_image:
            return _quiet(lambda: [fn(c.tm, c.xt[i:i + 1], c.target[i], **extra)
                                   for i in range(c.batch)])
        return _quiet(lambda: fn(c.tm, c.xt.clone(), c.target, **extra))
    return make


def zennit_lrp(c: Ctx):
    import torch
    from zennit.attribution import Gradient
    from zennit.canonizers import CompositeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlus
    from zennit.torchvision import ResNetBottleneckCanonizer

    comp = EpsilonPlus(canonizers=[CompositeCanonizer((SequentialMergeBatchNorm(),
                                                      ResNetBottleneckCanonizer()))])

    def run():
        xt = c.xt.clone().requires_grad_()
        with torch.no_grad():
            logits = c.tm(xt)
        out = torch.zeros_like(logits)
        out[range(c.batch), c.target] = logits[range(c.batch), c.target]
        with Gradient(model=c.tm, composite=comp) as attributor:
            attributor(xt, out)
    return _quiet(run)


def _grid_mask(c: Ctx, cells: int):
    """A ``cells × cells`` grid of segments, as an (H, W) int array (shared by both sides)."""
    i = np.minimum(np.arange(c.size) * cells // c.size, cells - 1)
    return (i[:, None] * cells + i[None, :]).astype(np.int32)


def _torch_mask(c: Ctx, cells: int):
    import torch
    return torch.tensor(_grid_mask(c, cells))[None, None].repeat(c.batch, 3, 1, 1)


def _inner(c: Ctx, n: int) -> int:
    """Path points / noisy copies per model call on both sides: all ``n`` while a call stays at
    64 images at most (xaijax's SmoothGrad default; 8 copies of 32 images at once, 256
    backward passes at 224 px, exhausted 24 GB)."""
    from xaijax.methods.gradient import NOISE_CALL_IMAGES

    return max(1, min(n, NOISE_CALL_IMAGES // c.batch))


def _tap(c: Ctx):
    return c.spec["tap"][1]


def _low(c: Ctx):
    return c.spec["low"][1]


def _channels(c: Ctx, tap: str) -> int:
    """Channels of ``tap`` (Score-CAM and Ablation-CAM make one forward pass per channel)."""
    shape = jax.eval_shape(lambda x: c.model.forward(x, capture=(tap,))[1][tap], c.x[:1])
    return int(shape.shape[-1])


def methods() -> List[Method]:
    """Every method of the registry with its benchmark setting (the suite checks that no
    registered method is missing; ``adversarial_explainer`` needs trained generators and is
    listed as not benchmarked)."""
    one = lambda c: (1, 0)  # noqa: E731
    cam_tap = lambda c: {"tap": c.spec["tap"][0]}  # noqa: E731
    M = Method
    steps, samples = 16, 8
    rows = [
        M("gradient", "single", lambda c: {}, one, {
            "captum": captum("Saliency", abs=False),
            "torchray": torchray("gradient", "gradient")}),
        M("input_x_gradient", "single", lambda c: {}, one,
          {"captum": captum("InputXGradient")}),
        M("guided_backprop", "single", lambda c: {}, one, {
            "captum": captum("GuidedBackprop"),
            "torchray": torchray("guided_backprop", "guided_backprop")}),
        M("deconvnet", "single", lambda c: {}, one, {
            "captum": captum("Deconvolution"),
            "torchray": torchray("deconvnet", "deconvnet")}),
        M("fullgrad", "single", lambda c: {}, one,
          {"pytorch-grad-cam": pgc("FullGrad", None)}),
        M("linear_approx", "single", lambda c: {"tap": c.spec["tap"][0]}, one,
          {"torchray": torchray("linear_approx", "linear_approx", saliency_layer=_tap)}),
        M("cam", "single", cam_tap, lambda c: (0, 1)),
        M("center", "single", lambda c: {}, lambda c: (0, 0)),
        M("lrp", "single", lambda c: {"composite": "epsilon_plus"}, one,
          {"zennit": zennit_lrp}, models=("resnet50",), settings="epsilon_plus"),
        # DeepLIFT runs the input and the reference forward together (the rules pair each
        # activation with the reference's) and only the input backward: 1 forward+backward and
        # 1 forward per image (Captum runs both forward and backward: 2 forward+backward)
        M("deeplift", "single", lambda c: {"maxpool": "gradient"}, lambda c: (1, 1),
          {"captum": captum("DeepLift", grad=False, baselines=0.0)},
          settings="rescale, zero baseline"),
        M("excitation_backprop", "single", lambda c: {"variant": "torchray"}, lambda c: (1, 0),
          {"torchray": torchray("excitation_backprop", "excitation_backprop",
                                saliency_layer=lambda c: c.spec["eb"][0], resize=True)},
          models=("resnet50",)),
        M("contrastive_excitation_backprop", "single", lambda c: {"variant": "torchray"},
          lambda c: (2, 0),
          {"torchray": torchray("contrastive_excitation_backprop", "excitation_backprop",
                                saliency_layer=lambda c: c.spec["eb"][0],
                                contrast_layer=lambda c: c.spec["eb"][1], resize=True)},
          models=("resnet50",)),
    ]
    cams = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
            "layercam": "LayerCAM", "hirescam": "HiResCAM",
            "gradcam_elementwise": "GradCAMElementWise", "eigengradcam": "EigenGradCAM"}
    for name, cls in cams.items():
        peers = {"pytorch-grad-cam": pgc(cls, _tap)}
        if name == "gradcam":
            peers["captum"] = captum("LayerGradCam", layer=_tap, grad=False)
        rows.append(M(name, "single", cam_tap, one, peers))
    rows += [
        M("eigencam", "single", cam_tap, lambda c: (0, 1),
          {"pytorch-grad-cam": pgc("EigenCAM", _tap)}),
        M("fem", "single", cam_tap, lambda c: (0, 1), {"pytorch-grad-cam": pgc("FEM", _tap)}),
        M("guided_gradcam", "single", cam_tap, lambda c: (2, 0),
          {"captum": captum("GuidedGradCam", layer=_tap)}),
        # ---- multi-pass --------------------------------------------------------------------
        M("integrated_gradients", "multi",
          lambda c: {"steps": c.n(steps), "internal_batch_size": _inner(c, c.n(steps))},
          lambda c: (c.n(steps), 0),
          {"captum": captum("IntegratedGradients", grad=False, n_steps=lambda c: c.n(steps),
                            method="riemann_trapezoid",
                            internal_batch_size=lambda c: _inner(c, c.n(steps)) * c.batch)},
          settings=f"{steps} steps (trapezoid), at most 64 images per model call"),
        M("smoothgrad", "multi", lambda c: {"n_samples": c.n(samples), "sigma": 0.15},
          lambda c: (c.n(samples), 0),
          {"captum": _noise_tunnel("smoothgrad", samples)},
          settings=f"{samples} samples, sigma 0.15 of the range"),
        M("vargrad", "multi", lambda c: {"n_samples": c.n(samples), "sigma": 0.15},
          lambda c: (c.n(samples), 0),
          {"captum": _noise_tunnel("vargrad", samples)}, settings=f"{samples} samples"),
        M("gradient_shap", "multi", lambda c: {"n_samples": c.n(samples),
                                               "baselines": np.zeros((1, c.size, c.size, 3),
                                                                     np.float32)},
          lambda c: (c.n(samples), 0),
          {"captum": captum("GradientShap", grad=False, n_samples=lambda c: c.n(samples),
                            baselines=lambda c: c.xt[:1] * 0)},
          settings=f"{samples} samples, zero baseline"),
        M("deeplift_shap", "multi", lambda c: {"baselines": np.zeros((4, c.size, c.size, 3),
                                                                     np.float32),
                                               "maxpool": "gradient"},
          lambda c: (4, 4),
          {"captum": captum("DeepLiftShap", grad=False, baselines=lambda c: c.xt[:1].repeat(
              4, 1, 1, 1) * 0)}, settings="4 baselines"),
        M("occlusion", "multi",
          lambda c: {"window": (c.size // 4,) * 2, "strides": (c.size // 8,) * 2,
                     "batch_size": 64},
          lambda c: (0, 1 + ((c.size - c.size // 4) // (c.size // 8) + 1) ** 2),
          {"captum": captum("Occlusion", grad=False,
                            sliding_window_shapes=lambda c: (3, c.size // 4, c.size // 4),
                            strides=lambda c: (3, c.size // 8, c.size // 8),
                            perturbations_per_eval=64)},
          settings="window size/4, stride size/8 (7x7 positions), 64 per call"),
        M("rise", "multi", lambda c: {"num_masks": c.n(128), "batch_size": 64},
          lambda c: (0, c.n(128)),
          {"torchray": torchray("rise", "rise", num_masks=lambda c: c.n(128), num_cells=7,
                                batch_size=64)},
          settings="128 masks, 7x7 grid, 64 per call"),
        M("scorecam", "multi", lambda c: {"tap": c.spec["low"][0], "batch_size": 64},
          lambda c: (0, 1 + _channels(c, c.spec["low"][0])),
          {"pytorch-grad-cam": pgc("ScoreCAM", _low, batch_size=64)},
          settings="low tap (one pass per channel), 64 per call"),
        M("ablationcam", "multi", lambda c: {"tap": c.spec["low"][0], "batch_size": 64},
          lambda c: (0, 1 + _channels(c, c.spec["low"][0])),
          {"pytorch-grad-cam": pgc("AblationCAM", _low, batch_size=64)},
          settings="low tap, 64 per call"),
        M("lime", "multi", lambda c: {"num_samples": c.n(64), "segments": _grid_mask(c, 7),
                                      "num_segments": 49, "batch_size": 64},
          lambda c: (0, c.n(64)),
          {"captum": captum("Lime", grad=False, n_samples=lambda c: c.n(64),
                            feature_mask=lambda c: _torch_mask(c, 7), baselines=0.0,
                            perturbations_per_eval=64)},
          settings="64 samples, 7x7 grid segments"),
        M("kernel_shap", "multi", lambda c: {"num_samples": c.n(64),
                                             "segments": _grid_mask(c, 7), "num_segments": 49,
                                             "batch_size": 64},
          lambda c: (0, c.n(64)),
          {"captum": captum("KernelShap", grad=False, n_samples=lambda c: c.n(64),
                            feature_mask=lambda c: _torch_mask(c, 7), baselines=0.0,
                            perturbations_per_eval=64)},
          settings="64 samples, 7x7 grid segments"),
        M("shapley_sampling", "multi", lambda c: {"num_samples": 2, "segments": _grid_mask(c, 4),
                                                  "num_segments": 16, "batch_size": 64},
          lambda c: (0, 1 + 2 * 16),
          {"captum": captum("ShapleyValueSampling", grad=False, n_samples=2,
                            feature_mask=lambda c: _torch_mask(c, 4), baselines=0.0,
                            perturbations_per_eval=64)},
          settings="2 permutations of 4x4 grid segments"),
        M("feature_ablation", "multi", lambda c: {"segments": _grid_mask(c, 7),
                                                  "num_segments": 49, "batch_size": 64},
          lambda c: (0, 50),
          {"captum": captum("FeatureAblation", grad=False,
                            feature_mask=lambda c: _torch_mask(c, 7), baselines=0.0,
                            perturbations_per_eval=64)},
          settings="7x7 grid segments"),
        M("guided_ig", "multi", lambda c: {"steps": c.n(steps)}, lambda c: (c.n(steps), 0),
          settings=f"{steps} steps"),
        M("blur_ig", "multi", lambda c: {"steps": c.n(steps), "internal_batch_size": c.n(steps)},
          lambda c: (c.n(steps), 0), settings=f"{steps} steps"),
        M("xrai", "multi", lambda c: {"steps": c.n(steps)}, lambda c: (2 * c.n(steps), 0),
          settings=f"IG {steps} steps from 2 baselines, Felzenszwalb segments"),
        M("sise", "multi", lambda c: {"mu": 0.3, "max_masks": c.n(64), "batch_size": 64},
          lambda c: (1, c.n(64) * 4), settings="mu 0.3, at most 64 masks per layer"),
        # ---- iterative ---------------------------------------------------------------------
        M("extremal_perturbation", "iterative", lambda c: {"areas": (0.1,),
                                                           "max_iter": c.n(50)},
          lambda c: (c.n(50), 0),
          {"torchray": torchray("extremal_perturbation", "extremal_perturbation",
                                per_image=True, areas=[0.1], max_iter=lambda c: c.n(50))},
          settings="area 0.1, 50 iterations (TorchRay: one image per call)"),
        M("meaningful_perturbation", "iterative", lambda c: {"iterations": c.n(50)},
          lambda c: (c.n(50), 0), settings="50 iterations"),
        M("fgvis", "iterative", lambda c: {"iterations": c.n(50), "lam": 1e-4},
          lambda c: (c.n(50), 0), settings="50 iterations, one lambda"),
        M("dssr", "iterative", lambda c: {"iterations": c.n(50)}, lambda c: (2 * c.n(50), 0),
          settings="50 iterations (a deletion and a preservation pass each)"),
    ]
    return rows


def _noise_tunnel(kind, samples):
    def make(c: Ctx):
        from captum import attr
        import torch
        nt = attr.NoiseTunnel(attr.Saliency(c.tm))
        tt = torch.tensor(c.target)
        x = c.xt
        sd = 0.15 * float(x.max() - x.min())
        return _quiet(lambda: nt.attribute(x.clone().requires_grad_(), nt_type=kind,
                                           nt_samples=c.n(samples), stdevs=sd, target=tt,
                                           abs=False,
                                           nt_samples_batch_size=_inner(c, c.n(samples))))
    return make


NOT_BENCHMARKED = {"adversarial_explainer": "needs trained generators (benchmarks/"
                                            "adversarial_explainer.py times its training)"}


# ---- the run -----------------------------------------------------------------------------------

def load_pair(name: str):
    """(torch model, xaijax model) on the same weights: the parity tests' pairs (EfficientNet-
    Lite0: the shipped ImageNet weights, its ReLU6 split so hooks can address the head; others:
    random weights). The torch copy's ReLUs are not in-place (Captum's hooks refuse them)."""
    from tests.helpers import efficientnet_pair, torch_pair

    if name == "efficientnet_lite0":
        return captum_ready(*efficientnet_pair(split_relu6=True))
    return captum_ready(*torch_pair(name))


def images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """``batch`` ImageNet-normalised photos (skimage's, cycled with flips), ``size`` px."""
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for i in range(batch):
        im = np.asarray(Image.fromarray(photos[i % len(photos)]).resize((size, size)),
                        np.float32) / 255.0
        if (i // len(photos)) % 2:
            im = im[:, ::-1]
        out.append((im - mean) / std)
    return np.stack(out).astype(np.float32)


def floors(model, x, target, repeats):
    """Seconds per image of one jitted forward+backward pass and of one forward pass."""
    from xaijax.methods.base import logits_fn

    f = logits_fn(model)
    t = jax.numpy.asarray(target)
    fb = jax.jit(jax.grad(lambda x: f(x)[jax.numpy.arange(len(t)), t].sum()))
    fw = jax.jit(f)
    out = []
    for fn in (fb, fw):
        jax.block_until_ready(fn(x))
        out.append(best_time(lambda: jax.block_until_ready(fn(x)), repeats) / len(target))
    return tuple(out)


def torch_floors(tm, xt, target, repeats):
    """The peer side's floor: seconds per image of one torch forward+backward pass (gradient of
    the target logits with respect to the input, the weights frozen) and of one forward pass."""
    import torch

    idx = torch.arange(len(target)), torch.tensor(target)

    def fb():
        x = xt.clone().requires_grad_()
        tm(x)[idx].sum().backward()

    def fw():
        with torch.no_grad():
            tm(xt)

    out = []
    for fn in (fb, fw):
        fn()
        out.append(best_time(fn, repeats) / len(target))
    return tuple(out)


def goal(method: Method, ratio: Optional[float], cost: Optional[float], peer: str):
    """(goal text, met?) for a row; ``None`` met when there is nothing to compare."""
    if method.kind == "iterative":
        rows = [("cost <= 1.15", cost is not None and cost <= 1.15)]
        if method.name == "extremal_perturbation" and ratio is not None:
            rows.append((">= 3x TorchRay", ratio >= 3.0))
        return "; ".join(r[0] for r in rows), all(r[1] for r in rows)
    if ratio is None:
        return "-", None
    need = 1.0 if method.kind == "single" else 1.5
    return f">= {need:g}x {peer}", ratio >= need


def run_cell(method: Method, c: Ctx, repeats: int, fb: float, fw: float, budget: float):
    """One row of the table for one model and batch size."""
    b, f = method.passes(c)
    est_pass = b * fb + f * fw
    est = est_pass * c.batch * (repeats + 1) * (1 + len(method.peers))
    row = {"method": method.name, "kind": method.kind, "model": c.name, "batch": c.batch,
           "passes_fb": b, "passes_f": f, "settings": method.settings}
    if budget and est > budget:
        row["skipped"] = f"estimated {est:.0f} s > --cell-budget {budget:g}"
        return row
    opts = method.options(c)

    def ours():
        jax.block_until_ready(xj.explain(c.model, c.x, c.target, method=method.name,
                                         **opts).heatmap)

    t0 = time.perf_counter()
    ours()
    first = time.perf_counter() - t0
    t_ours = best_time(ours, repeats)
    row.update(xaijax=c.batch / t_ours, compile_s=max(0.0, first - t_ours),
               cost=(t_ours / c.batch) / est_pass if est_pass else None)
    peers = {}
    for pname, make in method.peers.items():
        try:
            run = make(c)
            run()  # warm-up, as xaijax's first call
            peers[pname] = c.batch / best_time(run, repeats)
        except Exception as e:  # a peer that cannot run this model is reported, not fatal
            row.setdefault("peer_errors", {})[pname] = f"{type(e).__name__}: {e}"[:200]
    row["peers"] = peers
    if peers:
        best = max(peers, key=peers.get)
        row.update(best_peer=best, peer=peers[best], ratio=row["xaijax"] / peers[best])
    row["goal"], row["met"] = goal(method, row.get("ratio"), row.get("cost"),
                                   row.get("best_peer", ""))
    return row


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_row(r):
    if "skipped" in r:
        print(f"{r['method']:<32}{r['batch']:>4}  skipped: {r['skipped']}", flush=True)
        return
    met = {True: "met", False: "MISSED", None: ""}[r["met"]]
    print(f"{r['method']:<32}{r['batch']:>4}{fmt(r['xaijax']):>10}{fmt(r['compile_s'], '.1f'):>9}"
          f"{r.get('best_peer', '-'):>18}{fmt(r.get('peer')):>10}{fmt(r.get('ratio')):>7}"
          f"{r['passes_fb']:>5}b+{r['passes_f']:<4}{fmt(r.get('cost')):>6}  {r['goal']} {met}",
          flush=True)
    for p, e in r.get("peer_errors", {}).items():
        print(f"    {p} failed: {e}", flush=True)


def markdown(rows, header) -> str:
    """The rows as Markdown: per model, the floors, then one line per method with, for each
    batch size, ``xaijax img/s · ratio to the best peer · cost`` and the goal's verdict."""
    out = [header, ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        floors_ = [r for r in rows if r["model"] == model and "floor_fb" in r]
        cells = [r for r in rows if r["model"] == model and "method" in r]
        batches = sorted({r["batch"] for r in cells})
        out += [f"### {model}", "", "| batch | xaijax forward+backward | xaijax forward | torch "
                "forward+backward | torch forward |", "|---|---|---|---|---|"]
        out += [f"| {r['batch']} | {r['floor_fb'] * 1e3:.1f} ms/image | {r['floor_f'] * 1e3:.1f}"
                f" ms/image | {r['torch_fb'] * 1e3:.1f} ms/image | {r['torch_f'] * 1e3:.1f} "
                f"ms/image |" for r in floors_ if "torch_fb" in r]
        out += ["", "Each batch column: xaijax img/s · ratio to the best peer · cost against "
                "passes × floor (verdict of the goal).", "",
                "| method | kind | passes (b+f) | best peer | goal | "
                + " | ".join(f"batch {b}" for b in batches) + " | compile s |",
                "|---|---|---|---|---|" + "---|" * len(batches) + "---|"]
        for name in dict.fromkeys(r["method"] for r in cells):
            mine = {r["batch"]: r for r in cells if r["method"] == name}
            first = next(iter(mine.values()))
            ran = [r for r in mine.values() if "skipped" not in r]
            peer = next((r["best_peer"] for r in ran if r.get("best_peer")), "—")
            goal_ = next((r["goal"] for r in ran), "")
            row = [name, first["kind"], f"{first['passes_fb']}+{first['passes_f']}", peer,
                   goal_ if goal_ != "-" else ""]
            for b in batches:
                r = mine.get(b)
                if r is None:
                    row.append("")
                elif "skipped" in r:
                    row.append("not run")
                else:
                    verdict = {True: "met", False: "**missed**", None: ""}[r["met"]]
                    row.append(f"{fmt(r['xaijax'])} · {fmt(r.get('ratio'))} · "
                               f"{fmt(r.get('cost'))} {verdict}".strip())
            row.append("/".join(fmt(r["compile_s"], ".1f") for r in ran))
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every pass count of SETTINGS (steps, samples, masks, "
                        "iterations) by this")
    p.add_argument("--cell-budget", type=float, default=0.0,
                   help="skip a cell whose estimated seconds exceed this (0: run all)")
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="run nothing: merge these --json files into the --markdown table")
    args = parse_args(p, argv, SMOKE)
    if args.from_json:
        rows, headers = [], []
        for f in args.from_json:
            with open(f) as fh:
                data = json.load(fh)
            rows += data["rows"]
            headers.append(data["header"])
        text = markdown(rows, "\n\n".join(dict.fromkeys(headers)))
        if args.markdown:
            with open(args.markdown, "w") as fh:
                fh.write(text)
        else:
            print(text)
        return

    import torch
    from pytorch_grad_cam import ScoreCAM  # noqa: F401  (fail early when a peer is missing)

    from benchmarks.bench_cam import _quiet_tqdm

    _quiet_tqdm()
    table = {m.name: m for m in methods()}
    missing = set(xj.methods.available()) - set(table) - set(NOT_BENCHMARKED)
    if missing:
        raise SystemExit(f"methods with no benchmark row: {sorted(missing)}")
    names = args.methods or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(table)}")
    dev = jax.devices()[0]
    header = (f"{dev.platform} ({dev.device_kind}), {os.cpu_count()} CPU cores, torch "
              f"{torch.__version__} with {torch.get_num_threads()} threads, jax {jax.__version__}; "
              f"{args.size}x{args.size}, best of {args.repeats}, pass counts x{args.scale:g}")
    print(header)
    rows = []
    for model_name in args.models:
        tm, model = load_pair(model_name)
        for batch in args.batches:
            x = images(batch, args.size)
            xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
            with torch.no_grad():
                target = [int(t) for t in tm(xt).argmax(1)]
            c = Ctx(model_name, tm, model, jax.device_put(x), xt, target, args.size,
                    args.scale, MODELS[model_name])
            # the floors are cheap and the cost column divides by them: best of at least 5
            fb, fw = floors(model, c.x, target, max(5, args.repeats))
            tfb, tfw = torch_floors(tm, xt, target, max(5, args.repeats))
            print(f"\n{model_name}, batch {batch}: floor forward+backward {fb * 1e3:.1f} ms/image"
                  f", forward {fw * 1e3:.1f} ms/image ({1 / fb:.2f} / {1 / fw:.2f} img/s); torch "
                  f"{tfb * 1e3:.1f} / {tfw * 1e3:.1f} ms/image")
            print(f"{'method':<32}{'B':>4}{'xaijax':>10}{'compile':>9}{'best peer':>18}"
                  f"{'peer':>10}{'ratio':>7}{'passes':>10}{'cost':>6}  goal")
            rows.append({"model": model_name, "batch": batch, "floor_fb": fb, "floor_f": fw,
                         "torch_fb": tfb, "torch_f": tfw})
            for name in names:
                m = table[name]
                if model_name not in m.models:
                    continue
                r = run_cell(m, c, args.repeats, fb, fw, args.cell_budget)
                rows.append(r)
                print_row(r)
    for name, why in NOT_BENCHMARKED.items():
        print(f"not benchmarked: {name}: {why}")
    cells = [r for r in rows if "method" in r]
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(markdown(rows, header))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "rows": rows}, fh, indent=1)
    ran = [r for r in cells if "skipped" not in r]
    missed = [f"{r['model']}/{r['method']}/B{r['batch']}" for r in ran if r["met"] is False]
    print(f"\n{len(ran)} cells run, {len(cells) - len(ran)} skipped; goals missed: "
          f"{len(missed)}" + (f" ({', '.join(missed)})" if missed else ""))


if __name__ == "__main__":
    main()
