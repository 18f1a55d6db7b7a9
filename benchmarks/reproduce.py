"""Reproduce the papers' tables on what runs here and write them to docs/RESULTS.md.

* FGVis Table 2 analogue (Wagner et al. 2019, §5.1): deletion AUC (lower is better) of FGVis'
  deletion game, RISE, LIME, Grad-CAM, occlusion (the "sliding window") and the gradient.
* FGVis Table 1 analogue (§3.2): adversarial evidence without / with the gradient-filter
  defense, by ``benchmarks/fgvis_table1.py`` (its ``main``, output captured).
* SISE Table 1 analogue (Sattarzadeh et al. 2021, "Quantitative Results"): EBPG, mIoU, Bbox,
  Drop % and Increase % of Grad-CAM, Grad-CAM++, extremal perturbation, RISE, Score-CAM,
  Integrated Gradients, FullGrad and SISE on the first ``--sise-images`` images (the maps of
  methods already computed for the other tables are reused).
* Gu Table 3 analogue (Gu 2020, §4.2): pointing game (15-pixel tolerance, Zhang et al.) of
  DSSR, Grad-CAM, RISE, extremal perturbation, gradient, guided backprop, DeconvNet and a
  centre baseline (a fixed Gaussian centred on the image, defined here, not a library method).

Data: ``xj.data.composites(pool, seed)`` (objects cut from the bundled photos, pasted onto
other photos and textures; exact masks), kept when the pretrained EfficientNet-Lite0 ranks the
pasted object's class first (``xj.data.filter_by_model``), the first ``--images`` of those.
Every method explains that class (= the model's top-1, FGVis' ``c_ml``). The papers' data sets
(ImageNet val, PASCAL VOC07 test) and models (ResNet50, VGG16, ResNet34) are not available
here, so the targets are the orderings between methods, not the absolute numbers.

Run (2 shared CPU cores: ~20 min at the defaults):

    python benchmarks/reproduce.py                        # writes docs/RESULTS.md
    python benchmarks/reproduce.py --smoke                # every table's code path, to a temp dir
    python benchmarks/reproduce.py --raw /tmp/raw.json    # also keep every per-image number
    python benchmarks/reproduce.py --render /tmp/raw.json --out /tmp/R.md   # re-render, no compute
    python benchmarks/reproduce.py --only-sise --insert-into docs/RESULTS.md   # the SISE table
        # alone (~12 min), its section replaced or inserted in an existing file, the rest kept
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import xaijax as xj  # noqa: E402
from benchmarks import fgvis_table1  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from xaijax.methods.masks import gaussian_blur  # noqa: E402
from xaijax.models.labels import class_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "docs", "RESULTS.md")
MODEL = "efficientnet_lite0"
TOLERANCE = 15  # Zhang et al. 2016, Gu §4.2
TORCHRAY_SMOOTH = 0.02  # TorchRay's pointing benchmark blurs gradient maps by 0.02 * max(H, W)

# every table's code path on 2 images with a few steps each (the deletion metric in 8 steps)
SMOKE = {"images": 2, "pool": 16, "batch": 2, "fgvis_iterations": 2, "rise_masks": 8,
         "lime_samples": 8, "occlusion_window": 112, "occlusion_stride": 112,
         "dssr_iterations": 2, "ep_iterations": 2, "deletion_step": 224 * 28,
         "table1_mask_inits": [0.0], "sise_images": 1, "sise_max_masks": 8, "ig_steps": 4,
         # Score-CAM (1280 masked images), FullGrad (compile) and Integrated Gradients
         # (compile) take 7-30 s each even here; the table code path runs without them
         "sise_methods": ["gradcam", "gradcam_pp", "extremal_perturbation", "rise", "sise"]}

# Table 2 of Wagner et al. 2019 (ImageNet val; reference methods from Petsiuk et al. 2018)
PAPER_T2 = {"fgvis": (0.0644, 0.0636), "rise": (0.1076, 0.0980), "lime": (0.1217, 0.1014),
            "gradcam": (0.1232, 0.1087), "occlusion": (0.1421, 0.1158)}
# Table 3 of Gu 2020 (PASCAL VOC07 test, %); MWP 84.4 and cMWP 90.7 are not implemented here
PAPER_T3 = {"centre": 69.6, "gradient": 72.3, "deconvnet": 68.6, "guided_backprop": 77.9,
            "rise": 86.4, "gradcam": 90.4, "extremal_perturbation": 88.9, "dssr": 85.3}
# Table 1 of Sattarzadeh et al. 2021 (SISE), ResNet-50 column (PASCAL VOC07 test, %):
# EBPG, mIoU, Bbox, Drop (lower is better), Increase
PAPER_SISE = {"gradcam": (60.08, 32.16, 60.25, 35.80, 36.58),
              "gradcam_pp": (47.78, 30.16, 58.66, 41.77, 32.15),
              "extremal_perturbation": (63.24, 26.29, 52.34, 39.38, 34.27),
              "rise": (32.86, 27.4, 55.55, 39.77, 37.08),
              "scorecam": (35.56, 31.0, 60.02, 35.36, 37.08),
              "integrated_gradients": (40.62, 15.41, 34.79, 66.12, 24.24),
              "fullgrad": (39.55, 20.2, 44.94, 65.99, 25.36),
              "sise": (66.08, 31.37, 61.59, 30.92, 40.22)}
SISE_METRICS = ("ebpg", "miou", "bbox", "drop", "increase")
SISE_METRIC_LABELS = {"ebpg": "EBPG", "miou": "mIoU", "bbox": "Bbox", "drop": "Drop",
                      "increase": "Increase"}
TABLE_SISE = ("gradcam", "gradcam_pp", "extremal_perturbation", "rise", "scorecam",
              "integrated_gradients", "fullgrad", "sise")
SISE_HEADING = "## SISE Table 1 analogue"
# Table 1 of Wagner et al. 2019: no defense / defended
PAPER_T1 = {"VGG16": (100.0, 0.2), "AlexNet": (100.0, 0.0), "ResNet50": (100.0, 0.0),
            "GoogleNet": (100.0, 0.0)}

LABELS = {"fgvis": "FGVis (deletion game)", "rise": "RISE", "lime": "LIME",
          "gradcam": "Grad-CAM", "occlusion": "Occlusion (sliding window)",
          "gradient": "Gradient", "centre": "Centre (fixed Gaussian)", "dssr": "DSSR",
          "extremal_perturbation": "Extremal perturbation",
          "guided_backprop": "Guided backprop", "deconvnet": "DeconvNet",
          "gradcam_pp": "Grad-CAM++", "scorecam": "Score-CAM",
          "integrated_gradients": "Integrated Gradients", "fullgrad": "FullGrad", "sise": "SISE"}
TABLE2 = ("fgvis", "rise", "lime", "gradcam", "occlusion", "gradient")
TABLE3 = ("centre", "gradient", "deconvnet", "guided_backprop", "rise", "gradcam",
          "extremal_perturbation", "dssr")
GRADIENT_MAPS = ("gradient", "deconvnet", "guided_backprop")  # TorchRay smooths these
EXTRA_POINTING = ("fgvis", "lime", "occlusion")  # maps we have anyway; not in Gu's table
# in the order they run; "centre" is computed here
METHODS = ("gradcam", "gradient", "guided_backprop", "deconvnet", "occlusion", "rise", "lime",
           "fgvis", "dssr", "extremal_perturbation")


# ------------------------------------------------------------------------------------------------
# settings


def method_options(a) -> dict:
    """Per method: the options passed (everything else at the library default)."""
    ep_growth = 1.0035 ** (800 / a.ep_iterations)  # the same final area weight as 800 steps
    return {
        "gradcam": {},
        "gradient": {},
        "guided_backprop": {},
        "deconvnet": {},
        "occlusion": {"window": (a.occlusion_window,) * 2,
                      "strides": (a.occlusion_stride,) * 2},
        "rise": {"num_masks": a.rise_masks, "batch_size": min(100, a.rise_masks)},
        "lime": {"num_samples": a.lime_samples},
        "fgvis": {"game": "deletion", "iterations": a.fgvis_iterations},
        "dssr": {"iterations": a.dssr_iterations},
        "extremal_perturbation": {"areas": tuple(a.ep_areas), "max_iter": a.ep_iterations,
                                  "regul_growth": ep_growth},
    }


def sise_method_options(a) -> dict:
    """Options of the SISE-table methods not in ``method_options`` (library defaults else)."""
    sise = {"mu": a.sise_mu, "batch_size": a.sise_batch}
    if a.sise_max_masks:
        sise["max_masks"] = a.sise_max_masks
    return {"gradcam_pp": {}, "scorecam": {}, "fullgrad": {},
            "integrated_gradients": {"steps": a.ig_steps}, "sise": sise}


def sise_settings_text(a) -> dict:
    cap = f", at most {a.sise_max_masks} masks" if a.sise_max_masks else ""
    return {
        "gradcam_pp": "last conv features (head), library defaults",
        "scorecam": "last conv features (head), 32 masked images per call, softmax",
        "integrated_gradients": f"zero baseline, {a.ig_steps} steps (trapezoid), signed map "
                                f"(EBPG counts its positive part)",
        "fullgrad": "library defaults",
        "sise": f"all block taps, μ = {a.sise_mu:g} (paper default 0), {a.sise_batch} masked "
                f"images per call{cap}",
    }


def settings_text(a) -> dict:
    """Human-readable settings per method: ours and the paper's (or reference code's)."""
    w, s = a.occlusion_window, a.occlusion_stride
    return {
        "fgvis": (f"deletion game, defense on, Adam lr 0.1, {a.fgvis_iterations} iterations, "
                  f"λ chosen per image from {{0, 1e-5, 3e-5, 1e-4, 3e-4}} (largest λ whose "
                  f"explanation score ≤ 0.1 × the image's)",
                  "SGD; iterations, lr and λ rule in supplement A2/A4.1 (not available); "
                  "xaijax default 100 Adam iterations"),
        "rise": (f"{a.rise_masks} masks, 7×7 grid, p = 0.5, softmax",
                 "Petsiuk et al.: thousands of masks; TorchRay default 8000 (sigmoid scores)"),
        "lime": (f"{a.lime_samples} samples, 50 SLIC superpixels, grey (0) baseline",
                 "xaijax default 1000 samples; Petsiuk et al.'s LIME setting not stated"),
        "gradcam": ("last conv features (head), ReLU", "TorchRay defaults (Gu: ResNet34 "
                    "'layer4.1.relu'; TorchRay's benchmark: ResNet50 layer4)"),
        "occlusion": (f"{w}×{w} grey window, stride {s}, logit drop",
                      "xaijax default 16×16 / stride 8; Petsiuk et al.'s setting not stated"),
        "gradient": ("max over channels of |∂S_c/∂x| (logit)",
                     "TorchRay: the same, then a Gaussian of σ = 0.02·max(H, W)"),
        "centre": ("fixed Gaussian, σ = H/4, centred (arg-max at the image centre)",
                   "TorchRay's 'center': the point (W/2, H/2)"),
        "dssr": (f"Adam lr 0.1, λ = 10/224², θ = 0.5, {a.dssr_iterations} iterations, "
                 f"k₁=12 s₁=1 p₁=6, k₂=16 s₂=1 p₂=0, U(0,1) reference",
                 "the same with 300 iterations (Gu §4)"),
        "extremal_perturbation": (
            f"areas {tuple(a.ep_areas)} (heatmap = sum of the masks), {a.ep_iterations} "
            f"iterations, area weight growth 1.0035^(800/{a.ep_iterations}) per step (the final "
            f"weight of 800 steps), blur pyramid, preserve variant",
            "TorchRay VOC07 benchmark: the same areas, 800 iterations, growth 1.0035"),
        "guided_backprop": ("guided ReLU backward pass, max |.| over channels",
                            "TorchRay: the same, then σ = 0.02·max(H, W) Gaussian"),
        "deconvnet": ("DeconvNet ReLU backward pass, max |.| over channels",
                      "TorchRay: the same, then σ = 0.02·max(H, W) Gaussian"),
    }


# ------------------------------------------------------------------------------------------------
# computation


def centre_map(n: int, h: int, w: int) -> np.ndarray:
    """The centre baseline: one fixed Gaussian (σ = H/4) centred on the image, for every image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * (h / 4.0) ** 2)).astype(np.float32)
    return np.broadcast_to(g, (n, h, w)).copy()


def torchray_smooth(h: np.ndarray) -> np.ndarray:
    """TorchRay's pointing-benchmark post-processing of gradient maps: a Gaussian blur of
    σ = 0.02·max(H, W) with replicated borders."""
    sigma = TORCHRAY_SMOOTH * max(h.shape[1:])
    return np.asarray(gaussian_blur(jnp.asarray(h)[..., None], sigma, "nearest")[..., 0])


def load_data(model, a):
    d = xj.data.composites(a.pool, seed=a.seed)
    kept = xj.data.filter_by_model(model, d, top_k=1)
    if len(kept["index"]) == 0:
        raise SystemExit(f"no composite of {a.pool} is classified correctly; raise --pool")
    n = min(a.images, len(kept["index"]))
    if n < a.images:
        print(f"warning: only {n} of {a.pool} composites survive the filter (asked for "
              f"{a.images}); raise --pool for more")
    data = {k: v[:n] if isinstance(v, np.ndarray) and v.ndim >= 1 else v
            for k, v in kept.items()}
    data["survivors"] = int(len(kept["index"]))
    return data


def run_method(model, name, opts, x, t, batch, key):
    """Heatmaps ``(N, H, W)`` and a few scalars per image of one method, ``batch`` images per
    call (the last batch padded, so each method compiles once); seconds including compile."""
    static, traced = xj.methods.split_options(name, opts)
    fn = xj.methods.bind(name, **static)
    takes_key = "key" in xj.methods.info(name).options
    n = x.shape[0]
    heats, extras = [], {}
    t0 = time.perf_counter()
    first = None
    for s in range(0, n, batch):
        xb, tb = x[s:s + batch], t[s:s + batch]
        m = xb.shape[0]
        if m < batch:
            xb = jnp.concatenate([xb, jnp.repeat(xb[-1:], batch - m, axis=0)])
            tb = jnp.concatenate([tb, jnp.repeat(tb[-1:], batch - m, axis=0)])
        kw = dict(traced)
        if takes_key:
            kw["key"] = jax.random.fold_in(key, s)
        ex = fn(model, xb, tb, **kw)
        heats.append(np.asarray(jax.block_until_ready(ex.heatmap))[:m])
        for k in ("lam", "score_image", "score_explanation", "score_preservation",
                  "score_deletion"):
            if k in ex.extras:
                extras.setdefault(k, []).append(np.asarray(ex.extras[k])[:m])
        if first is None:
            first = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    return (np.concatenate(heats), {k: np.concatenate(v) for k, v in extras.items()},
            seconds, first)


def pointing(heat, masks):
    return np.asarray(xj.metrics.pointing_game(jnp.asarray(heat), jnp.asarray(masks),
                                               tolerance=TOLERANCE))


def compute_sise(model, a, x, t, masks, heat, seconds, key) -> dict:
    """SISE Table 1 analogue on the first ``a.sise_images`` images: the maps in ``heat``
    (computed for the other tables, over all images) are reused; the others run here. A method
    of ``METHODS`` that is missing (``--only-sise``) runs with the key and batches it gets in the
    full run, so its maps are the same."""
    n = min(a.sise_images, x.shape[0])
    xs, ts, ms = x[:n], t[:n], jnp.asarray(masks[:n])
    opts = {**method_options(a), **sise_method_options(a)}
    methods = [m for m in TABLE_SISE if m in a.sise_methods]
    out = {"n": n, "settings": sise_settings_text(a), "seconds": {}, "reused": [],
           "metrics": {}, "methods": methods}
    t_all = time.perf_counter()
    for name in methods:
        if name in heat:
            hm = heat[name][:n]
            out["reused"].append(name)
            out["seconds"][name] = seconds[name] * n / x.shape[0]
        else:
            i = METHODS.index(name) if name in METHODS else 100 + TABLE_SISE.index(name)
            hm, _, sec, first = run_method(model, name, opts[name], xs, ts, a.batch,
                                           jax.random.fold_in(key, i))
            out["seconds"][name] = sec
            print(f"  {name:22s} {sec:7.1f} s ({first:.1f} s first batch, compile included)")
        h = jnp.asarray(hm)
        di = xj.metrics.drop_increase(model, xs, h, ts)
        out["metrics"][name] = {
            "ebpg": (100 * np.asarray(xj.metrics.energy_pointing_game(h, ms))).tolist(),
            "miou": (100 * np.asarray(xj.metrics.miou(h, ms))).tolist(),
            "bbox": (100 * np.asarray(xj.metrics.bbox_score(h, ms))).tolist(),
            "drop": np.asarray(di.drop, np.float64).tolist(),
            "increase": np.asarray(di.increase, np.float64).tolist()}
        r = out["metrics"][name]
        print(f"SISE Table 1: {name} " + ", ".join(
            f"{SISE_METRIC_LABELS[k]} {np.mean(r[k]):.1f} ± {sem(r[k]):.1f}"
            for k in SISE_METRICS))
    out["wall_seconds"] = time.perf_counter() - t_all
    return out


def compute_sise_only(a, argv) -> dict:
    """``--only-sise``: the data and the SISE table, nothing else."""
    t_start = time.perf_counter()
    raw = {"command": "python benchmarks/reproduce.py" + (" " + shlex.join(argv) if argv else ""),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "load_average_at_start": list(os.getloadavg()),
           "jax": jax.__version__, "backend": jax.default_backend(), "smoke": bool(a.smoke),
           "args": {k: v for k, v in vars(a).items()
                    if k not in ("out", "raw", "render", "insert_into")},
           "settings": settings_text(a), "only_sise": True}
    model = xj.models.get(MODEL, pretrained=True)
    data = load_data(model, a)
    x = xj.models.preprocess(model, data["images"], resize="stretch")
    t = jnp.asarray(data["labels"], jnp.int32)
    raw["data"] = {"n": int(x.shape[0]), "index": data["index"].tolist(),
                   "labels": data["labels"].tolist(), "survivors": data["survivors"],
                   "pool": a.pool, "seed": a.seed}
    raw["sise_table"] = compute_sise(model, a, x, t, data["masks"], {}, {},
                                     jax.random.PRNGKey(a.seed))
    raw["wall_seconds"] = time.perf_counter() - t_start
    return raw


def run_table1(a):
    """fgvis_table1.main per mask initialisation, its output captured and parsed."""
    out = []
    for init in a.table1_mask_inits:
        argv = (["--smoke"] if a.smoke else
                ["--images", str(a.table1_images), "--iterations", str(a.table1_iterations)])
        argv += ["--mask-init", str(init)]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            fgvis_table1.main(argv)
        text = buf.getvalue()
        sys.stdout.write(text)
        m = re.search(r"Table 1 \(FGVis, (\S+)\): No Defense ([\d.]+) %, Defended ([\d.]+) %",
                      text)
        if m is None:
            raise RuntimeError(f"fgvis_table1 printed no Table 1 line:\n{text}")
        p = re.findall(r"mean p\(c_A \| e\) ([\d.]+)", text)
        out.append({"argv": argv, "mask_init": float(init), "output": text,
                    "no_defense": float(m.group(2)), "defended": float(m.group(3)),
                    "p_no_defense": float(p[0]) if p else None,
                    "p_defended": float(p[1]) if len(p) > 1 else None,
                    "seconds": time.perf_counter() - t0})
    return out


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cpus} CPU cores available to the process, {platform.system()}"


def compute(a, argv) -> dict:
    t_start = time.perf_counter()
    raw = {"command": "python benchmarks/reproduce.py" + (" " + shlex.join(argv) if argv else ""),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "load_average_at_start": list(os.getloadavg()),
           "jax": jax.__version__, "backend": jax.default_backend(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "smoke": bool(a.smoke),
           "args": {k: v for k, v in vars(a).items() if k not in ("out", "raw", "render")},
           "settings": settings_text(a)}
    model = xj.models.get(MODEL, pretrained=True)
    data = load_data(model, a)
    x = xj.models.preprocess(model, data["images"], resize="stretch")
    t = jnp.asarray(data["labels"], jnp.int32)
    masks = data["masks"]
    n, h, w = masks.shape
    p_x = np.asarray(jax.nn.softmax(model(x), axis=-1))[np.arange(n), data["labels"]]
    raw["data"] = {"n": n, "pool": a.pool, "survivors": data["survivors"], "seed": a.seed,
                   "index": data["index"].tolist(), "labels": data["labels"].tolist(),
                   "sources": data["sources"].tolist(),
                   "backgrounds": data["backgrounds"].tolist(),
                   "mask_area": masks.reshape(n, -1).mean(1).tolist(),
                   "p_target": p_x.tolist()}
    print(f"{n} composite images (of {data['survivors']}/{a.pool} that {MODEL} classifies "
          f"correctly), seed {a.seed}; mean p(target | x) {p_x.mean():.3f}")

    opts = method_options(a)
    key = jax.random.PRNGKey(a.seed)
    heat, extras, seconds = {}, {}, {}
    for i, name in enumerate(METHODS):
        hm, ex, sec, first = run_method(model, name, opts[name], x, t, a.batch,
                                        jax.random.fold_in(key, i))
        heat[name], extras[name], seconds[name] = hm, ex, sec
        print(f"  {name:22s} {sec:7.1f} s ({first:.1f} s first batch, compile included)")
    heat["centre"] = centre_map(n, h, w)
    seconds["centre"] = 0.0
    raw["seconds_methods"] = seconds
    raw["extras"] = {m: {k: v.tolist() for k, v in e.items()} for m, e in extras.items()}
    raw["heatmap_stats"] = {
        m: {"zero_fraction": (heat[m].reshape(n, -1) == 0).mean(1).tolist(),
            "above_half_fraction": (heat[m].reshape(n, -1) > 0.5).mean(1).tolist()}
        for m in ("fgvis", "dssr")}

    # Table 2: deletion AUC, all images in one compiled program per method
    t0 = time.perf_counter()
    auc, p_start = {}, {}
    for name in TABLE2:
        r = xj.metrics.deletion(model, x, jnp.asarray(heat[name]), t, step=a.deletion_step)
        auc[name] = np.asarray(r.auc).tolist()
        p_start[name] = np.asarray(r.curve[:, 0]).tolist()
        print(f"Table 2 deletion AUC: {name} {np.mean(auc[name]):.4f} ± "
              f"{sem(auc[name]):.4f}")
    raw["deletion_auc"] = auc
    raw["deletion_steps"] = int(-(-(h * w) // (a.deletion_step or w)))
    raw["seconds_deletion"] = time.perf_counter() - t0

    # Table 1 through fgvis_table1
    t0 = time.perf_counter()
    raw["table1"] = run_table1(a)
    for r in raw["table1"]:
        print(f"Table 1 mask init {r['mask_init']}: No Defense {r['no_defense']:.1f} %, "
              f"Defended {r['defended']:.1f} %")
    raw["seconds_table1"] = time.perf_counter() - t0

    # Table 3: pointing game against the exact masks
    hits, hits_raw, argmax = {}, {}, {}
    for name in TABLE3 + EXTRA_POINTING:
        hm = heat[name]
        if name in GRADIENT_MAPS:
            hits_raw[name] = pointing(hm, masks).tolist()
            hm = torchray_smooth(hm)
        hits[name] = pointing(hm, masks).tolist()
        am = hm.reshape(n, -1).argmax(1)
        argmax[name] = np.stack([am // w, am % w], 1).tolist()  # (row, column), first if tied
    raw["pointing"] = hits
    raw["argmax"] = argmax
    raw["pointing_unsmoothed"] = hits_raw
    raw["pointing_chance"] = pointing(np.ones((n, h, w), np.float32), masks).tolist()

    # SISE Table 1: reuses the maps above where the method is in both
    raw["sise_table"] = compute_sise(model, a, x, t, masks, heat, seconds, key)
    for name in TABLE3:
        print(f"Table 3 pointing game: {name} {100 * np.mean(hits[name]):.1f} % (class mean "
              f"{100 * class_mean(hits[name], data['labels']):.1f} %)")
    raw["wall_seconds"] = time.perf_counter() - t_start
    return raw


# ------------------------------------------------------------------------------------------------
# statistics and rendering


def sem(v) -> float:
    v = np.asarray(v, np.float64)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def class_mean(v, labels) -> float:
    """Gu's accuracy: the hit rate per class, averaged over the classes present."""
    v, labels = np.asarray(v, np.float64), np.asarray(labels)
    return float(np.mean([v[labels == c].mean() for c in np.unique(labels)]))


def flipped_pairs(ours: dict, paper: dict, lower_better: bool):
    """Pairs (a, b) the paper orders a before b and we order the other way."""
    sign = 1.0 if lower_better else -1.0
    names = [m for m in paper if m in ours]
    out = []
    for i, a_ in enumerate(names):
        for b_ in names[i + 1:]:
            pa, pb = sign * paper[a_], sign * paper[b_]
            oa, ob = sign * ours[a_], sign * ours[b_]
            if pa == pb:
                continue
            first, second = (a_, b_) if pa < pb else (b_, a_)
            if (oa < ob) != (first == a_) and oa != ob:
                out.append((first, second))
    return out


def order_text(values: dict, lower_better: bool, fmt) -> str:
    items = sorted(values.items(), key=lambda kv: kv[1] if lower_better else -kv[1])
    return " < ".join(f"{LABELS[k]} {fmt(v)}" for k, v in items) if lower_better else \
        " > ".join(f"{LABELS[k]} {fmt(v)}" for k, v in items)


def md_table(head, rows) -> str:
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def minutes(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:.0f} s"


def render(raw: dict) -> str:
    d, st, args = raw["data"], raw["settings"], raw["args"]
    n = d["n"]
    labels = np.asarray(d["labels"])
    auc = {m: np.asarray(v) for m, v in raw["deletion_auc"].items()}
    hits = {m: np.asarray(v) for m, v in raw["pointing"].items()}
    p_x = np.asarray(d["p_target"])
    out = []
    add = out.append
    add("# Reproduction results\n")
    add(f"Generated by `{raw['command']}` on {raw['date']}"
        + (" (**smoke setting: tiny, not a result**)" if raw["smoke"] else "") + ".")
    add(f"Machine: {raw['machine']} (shared with other work; load average "
        f"{raw['load_average_at_start'][0]:.1f} at the start), JAX {raw['jax']} on "
        f"{raw['backend']}, XLA flags: `{raw['xla_flags'] or 'defaults'}`. "
        f"Wall time {minutes(raw['wall_seconds'])} (methods "
        f"{minutes(sum(raw['seconds_methods'].values()))}, deletion metric "
        f"{minutes(raw['seconds_deletion'])}, Table 1 {minutes(raw['seconds_table1'])}).\n")
    add("Every number below is regenerated by that one command; the papers' numbers are "
        "copied from their text.\n")

    add("## Data and model\n")
    classes = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    cls = ", ".join(f"{class_name(c)} ×{k}" for c, k in classes.items())
    add(f"- Images: the first {n} of the {d['survivors']} of `xj.data.composites("
        f"{d['pool']}, size=224, seed={d['seed']})` that the model classifies correctly "
        f"(top-1 = the pasted object's class; `xj.data.filter_by_model`). Composite indices "
        f"{d['index']}. Classes: {cls}. The object (the pasted rectangle, the exact mask) "
        f"covers {100 * np.mean(d['mask_area']):.0f} % of the image on average "
        f"({100 * np.min(d['mask_area']):.0f}–{100 * np.max(d['mask_area']):.0f} %).")
    add(f"- Model: `xj.models.get(\"{MODEL}\", pretrained=True)` (ImageNet-1k, 224×224, "
        f"`preprocess(..., resize=\"stretch\")`); mean softmax of the target on the images "
        f"{p_x.mean():.3f} (median {np.median(p_x):.3f}).")
    add(f"- Target: the object's class (= the model's prediction, FGVis' c_ml). Seed "
        f"{d['seed']}: method i gets `fold_in(PRNGKey(seed), i)`, split per batch of "
        f"{args['batch']} images and per image.")
    add("- Papers: FGVis Table 2 — ImageNet validation, ResNet50 and VGG16; Gu Table 3 — "
        "PASCAL VOC07 test, model not stated for Table 3 (§4.1 uses a pre-trained ResNet34, "
        "the reference methods TorchRay's defaults). Neither data set nor model is available "
        "here, so compare orderings, not absolute values.\n")

    # ---- Table 2
    add("## FGVis Table 2 analogue: deletion AUC (lower is better)\n")
    step = args["deletion_step"] or 224
    add(f"Deletion metric of Petsiuk et al. (`xj.metrics.deletion`): pixels removed in "
        f"decreasing heatmap order, {step} per step ({raw['deletion_steps']} steps), replaced "
        f"by 0 in normalised space (the data-set mean colour), softmax probability of the "
        f"target, trapezoid AUC over the fraction removed. Mean ± standard error over {n} "
        f"images.\n")
    rows = []
    for m in TABLE2:
        pr = PAPER_T2.get(m)
        rows.append([LABELS[m], f"{auc[m].mean():.4f} ± {sem(auc[m]):.4f}",
                     f"{pr[0]:.4f}" if pr else "—", f"{pr[1]:.4f}" if pr else "—",
                     f"{raw['seconds_methods'][m]:.0f}", st[m][0], st[m][1]])
    add(md_table(["method", "ours (EffNet-Lite0, composites)", "paper ResNet50",
                  "paper VGG16", "s", "our setting", "paper / reference setting"], rows))
    ours2 = {m: float(auc[m].mean()) for m in TABLE2}
    add("")
    add(f"Ours: {order_text(ours2, True, lambda v: f'{v:.4f}')}.  ")
    add(f"Paper (both models): "
        f"{order_text({m: v[0] for m, v in PAPER_T2.items()}, True, lambda v: f'{v:.4f}')}.\n")
    rows = []
    for m in TABLE2:
        if m == "fgvis":
            continue
        diff = auc["fgvis"] - auc[m]
        rows.append([f"FGVis − {LABELS[m]}", f"{diff.mean():+.4f} ± {sem(diff):.4f}",
                     f"{int((diff < 0).sum())}/{n}"])
    add("Paired per image (negative: FGVis deletes the class faster):\n")
    add(md_table(["difference of AUC", "mean ± s.e.", "images where FGVis is lower"], rows))
    add("")
    add(fgvis_diagnostics(raw))
    add("")
    add(table2_notes(raw, ours2))
    add("")

    # ---- Table 1
    add("## FGVis Table 1 analogue: adversarial evidence without / with the defense\n")
    add("By `benchmarks/fgvis_table1.py` (called from this script): generation game, λ = 0, "
        "cross-entropy to the least-likely class c_A (the second least-likely when the "
        "least-likely is the zero image's prediction, footnote 4), Adam lr 0.1; an image "
        "counts when its explanation e = m·x is classified as c_A. Images: the bundled "
        "photos and skimage/sklearn sample photos with their flips and crops (no labels, so "
        "no p(c_true) ≥ 0.995 filter). Paper: 1000 ImageNet validation images with "
        "p(c_true) ≥ 0.995, iterations in the supplement.\n")
    rows = []
    for r in raw["table1"]:
        init = r["mask_init"]
        what = "paper's m⁰ = 0" if init == 0 else f"m⁰ = {init:g}"
        rows.append([f"EfficientNet-Lite0, {what}, {' '.join(r['argv'])}",
                     f"{r['no_defense']:.1f} %", f"{r['defended']:.1f} %",
                     f"{r['p_no_defense']:.3f} / {r['p_defended']:.3f}"
                     if r["p_defended"] is not None else "—", f"{r['seconds']:.0f}"])
    for name, (a_, b_) in PAPER_T1.items():
        rows.append([f"paper {name}", f"{a_:.1f} %", f"{b_:.1f} %", "—", "—"])
    add(md_table(["model, setting", "no defense", "defended", "mean p(c_A | e) no def. / def.",
                  "s"], rows))
    add("")
    add(table1_notes(raw))
    add("")
    add("<details><summary>fgvis_table1.py output</summary>\n")
    for r in raw["table1"]:
        add("```\n" + r["output"].rstrip() + "\n```")
    add("</details>\n")

    # ---- Table 3
    add(f"## Gu Table 3 analogue: pointing game (tolerance {TOLERANCE} px, higher is better)\n")
    add(f"`xj.metrics.pointing_game(heatmap, masks, tolerance={TOLERANCE})`: a hit when an "
        f"object pixel lies within {TOLERANCE} px of the heatmap's maximum (TorchRay / Zhang "
        f"et al.; ties at the maximum count as the share of tied pixels that hit). Ground "
        f"truth: the composites' exact masks. \"class mean\" is Gu's accuracy (hit rate per "
        f"class, averaged over the {len(classes)} classes present), \"all\" the plain mean "
        f"± s.e. over {n} images. Gradient, guided backprop and DeconvNet maps are blurred as "
        f"TorchRay's benchmark does (σ = {TORCHRAY_SMOOTH}·224 px); the raw-map column shows "
        f"them unblurred. Normalising a map (Gu §4.1, RISE and Grad-CAM) does not move its "
        f"maximum.\n")
    chance = np.asarray(raw["pointing_chance"])
    rows = []
    for m in TABLE3:
        raw_col = (f"{100 * np.mean(raw['pointing_unsmoothed'][m]):.1f}"
                   if m in raw["pointing_unsmoothed"] else "")
        rows.append([LABELS[m], f"{100 * class_mean(hits[m], labels):.1f}",
                     f"{100 * hits[m].mean():.1f} ± {100 * sem(hits[m]):.1f}", raw_col,
                     f"{PAPER_T3[m]:.1f}", f"{raw['seconds_methods'][m]:.0f}", st[m][0],
                     st[m][1]])
    for m in EXTRA_POINTING:
        rows.append([f"{LABELS[m]} (not in Gu's table)", f"{100 * class_mean(hits[m], labels):.1f}",
                     f"{100 * hits[m].mean():.1f} ± {100 * sem(hits[m]):.1f}", "", "—",
                     f"{raw['seconds_methods'][m]:.0f}", st[m][0], ""])
    rows.append(["uniform random point (chance)", f"{100 * class_mean(chance, labels):.1f}",
                 f"{100 * chance.mean():.1f}", "", "—", "", "constant map (all pixels tie)", ""])
    rows.append(["MWP / cMWP", "not implemented", "", "", "84.4 / 90.7", "", "", ""])
    add(md_table(["method", "ours, class mean %", "ours, all images %", "raw map %",
                  "paper (VOC07) %", "s", "our setting", "paper / reference setting"], rows))
    ours3 = {m: class_mean(hits[m], labels) * 100 for m in TABLE3}
    add("")
    add(f"Ours (class mean): {order_text(ours3, False, lambda v: f'{v:.1f}')}.  ")
    add(f"Paper: {order_text(PAPER_T3, False, lambda v: f'{v:.1f}')}.\n")
    add(table3_notes(raw, ours3))
    add("")

    if "sise_table" in raw:
        add(render_sise(raw))

    add("## Settings reduced from the papers' for CPU time\n")
    a = args
    add(md_table(["what", "here", "paper / reference"], [
        ["images", f"{n} composites", "ImageNet val (FGVis T2: full split; T1: 1000), VOC07 "
         "test (Gu T3: 4952)"],
        ["FGVis deletion game iterations", a["fgvis_iterations"], "supplement (n/a); xaijax 100"],
        ["RISE masks", a["rise_masks"], "TorchRay 8000; Petsiuk et al. thousands"],
        ["deletion metric: pixels per step", a["deletion_step"] or 224, "224 (Petsiuk et al.)"],
        ["LIME samples", a["lime_samples"], "xaijax 1000"],
        ["occlusion window / stride", f"{a['occlusion_window']} / {a['occlusion_stride']}",
         "xaijax 16 / 8"],
        ["DSSR iterations", a["dssr_iterations"], "300 (Gu §4)"],
        ["extremal perturbation iterations", a["ep_iterations"], "800 (TorchRay)"],
        *([["SISE table: images", raw["sise_table"]["n"], "VOC07 test (4952)"],
           ["SISE μ / masked images per call / mask cap",
            f"{a['sise_mu']:g} / {a['sise_batch']} / {a['sise_max_masks'] or 'none'}",
            "0 / — / none"],
           ["Integrated Gradients steps", a["ig_steps"], "not stated"]]
          if "sise_table" in raw else []),
        ["Table 1 images × iterations", f"{a['table1_images']} × {a['table1_iterations']}"
         if not raw["smoke"] else "fgvis_table1 --smoke", "1000 × supplement"],
    ]))
    add("")
    return "\n".join(out) + "\n"


def render_sise(raw) -> str:
    """The SISE Table 1 section (markdown, ending with a blank line)."""
    st = raw["sise_table"]
    n = st["n"]
    methods = st.get("methods", list(TABLE_SISE))
    met = {m: {k: np.asarray(v, np.float64) for k, v in r.items()}
           for m, r in st["metrics"].items()}
    settings = {**{m: raw["settings"][m][0] for m in raw["settings"]}, **st["settings"]}
    out = []
    add = out.append
    add(f"{SISE_HEADING}: EBPG, mIoU, Bbox, Drop %, Increase %\n")
    add(f"Sattarzadeh et al. 2021, Table 1 (ResNet-50 column, PASCAL VOC07 test): "
        f"`xj.metrics.energy_pointing_game` (EBPG: share of the map's positive energy inside "
        f"the object), `miou` (IoU of the top 20 % pixels with the object), `bbox_score` (share "
        f"of the |G| highest pixels inside the object) against the composites' exact masks, "
        f"and `drop_increase` (the image times its top 15 % pixels, the rest set to the mean "
        f"colour; softmax of the target: Drop = 100·max(0, Y − O)/Y, Increase = 100·[O > Y]). "
        f"All %; lower is better for Drop only. Mean ± s.e. over the first {n} images of the "
        f"data above (SISE costs ~40 s per image here). Each cell: ours (paper). "
        + (f"Maps reused from the tables above: {', '.join(LABELS[m] for m in st['reused'])}."
           if st["reused"] else "All maps computed by this run (`--only-sise`)."))
    if raw.get("only_sise"):
        add(f"Generated by `{raw['command']}` on {raw['date']} ({raw['machine']}, JAX "
            f"{raw['jax']} on {raw['backend']}; wall {minutes(raw['wall_seconds'])}); the same "
            f"images, seeds and settings as the full run, so Grad-CAM, RISE and extremal "
            f"perturbation maps equal the full run's on these images. Composite indices "
            f"{raw['data']['index'][:n]}."
            + (" (**smoke setting: tiny, not a result**)" if raw["smoke"] else ""))
    add("")
    rows = []
    for m in methods:
        p = PAPER_SISE[m]
        rows.append([LABELS[m]] + [f"{met[m][k].mean():.1f} ± {sem(met[m][k]):.1f} ({p[j]:g})"
                                   for j, k in enumerate(SISE_METRICS)]
                    + [f"{st['seconds'][m]:.0f}", settings.get(m, "")])
    add(md_table(["method"] + [f"{SISE_METRIC_LABELS[k]} %" for k in SISE_METRICS]
                 + [f"s ({n} images)", "our setting"], rows))
    add("")
    add("Orderings (best first) and the pairs where ours reverses the paper's, with the paired "
        "per-image difference (mean ± s.e., the sign in the direction of our order; "
        "|mean|/s.e. ≥ 2 marked **resolved**):\n")
    for j, k in enumerate(SISE_METRICS):
        lower = k == "drop"
        ours = {m: float(met[m][k].mean()) for m in methods}
        paper = {m: PAPER_SISE[m][j] for m in methods}
        fmt = (lambda v: f"{v:.1f}")
        add(f"- **{SISE_METRIC_LABELS[k]}** — ours: {order_text(ours, lower, fmt)}.  ")
        add(f"  paper: {order_text(paper, lower, fmt)}.  ")
        flips = flipped_pairs(ours, paper, lower)
        if not flips:
            add("  No pair reversed.")
            continue
        parts, resolved = [], 0
        for a_, b_ in flips:
            d = met[b_][k] - met[a_][k]  # ours puts b_ ahead of a_
            d = -d if lower else d
            ratio = abs(d.mean()) / max(sem(d), 1e-12)
            resolved += ratio >= 2
            parts.append(f"{LABELS[b_]} ahead of {LABELS[a_]} by {d.mean():.1f} ± {sem(d):.1f}"
                         + (" **resolved**" if ratio >= 2 else ""))
        add(f"  Reversed {len(flips)} of {len(methods) * (len(methods) - 1) // 2} pairs "
            f"({resolved} resolved): " + "; ".join(parts) + ".")
    add("")
    best = {k: (min if k == "drop" else max)(methods, key=lambda m: met[m][k].mean())
            for k in SISE_METRICS}
    add("Best per metric here: " + ", ".join(f"{SISE_METRIC_LABELS[k]} {LABELS[best[k]]}"
                                            for k in SISE_METRICS)
        + "; in the paper SISE is best on EBPG, Bbox, Drop and Increase and Grad-CAM on mIoU.")
    add("")
    add(f"Reading it: with {n} images only a reversal marked resolved is evidence of a "
        f"different order; Increase is 0 or 100 per image, so its s.e. is ~{100 / (2 * np.sqrt(n)):.0f} "
        f"points and only large gaps in it can be resolved. Each composite "
        f"holds one pasted rectangle on an unrelated background, so the localisation metrics "
        f"(mIoU, Bbox, EBPG) run higher than on VOC07 for every method; the paper's maps come "
        f"from a multi-label VOC ResNet-50, ours from an ImageNet EfficientNet-Lite0 (whose "
        f"last conv layer, used by the CAM family, is 7×7), and RISE, extremal perturbation "
        f"and SISE run with reduced settings (see \"our setting\").")
    add("")
    return "\n".join(out) + "\n"


def insert_section(path: str, section: str) -> None:
    """Replace the SISE section of an existing RESULTS.md, or insert it before the settings
    section (the end when there is none); everything else is kept byte for byte."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.find(SISE_HEADING)
    if start >= 0:
        nxt = text.find("\n## ", start + 1)
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section + text[end:]
    else:
        at = text.find("## Settings reduced from the papers'")
        at = len(text) if at < 0 else at
        text = text[:at] + section + "\n" * 0 + text[at:]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def fgvis_diagnostics(raw) -> str:
    """Why FGVis ranks where it does: the λ it chose, whether its game reached its goal, how
    many pixels it marks, and how its map orders the rest."""
    ex = raw["extras"]["fgvis"]
    n = raw["data"]["n"]
    lam = np.asarray(ex["lam"])
    ratio = np.asarray(ex["score_explanation"]) / np.asarray(ex["score_image"])
    zero = np.asarray(raw["heatmap_stats"]["fgvis"]["zero_fraction"])
    half = np.asarray(raw["heatmap_stats"]["fgvis"]["above_half_fraction"])
    lams, counts = np.unique(lam, return_counts=True)
    auc = {m: np.asarray(v) for m, v in raw["deletion_auc"].items()}
    p0 = np.asarray(raw["data"]["p_target"])
    lines = [
        "FGVis diagnostics (per image, from its extras):",
        "- λ chosen: " + ", ".join(f"{v:g} ×{c}" for v, c in zip(lams, counts)) + ".",
        f"- the deletion game reached its goal (explanation score ≤ 0.1 × the image's) on "
        f"{int((ratio <= 0.1).sum())}/{n} images; median score ratio {np.median(ratio):.3g}.",
        f"- pixels it deletes (mean over colours of 1 − m > 0.5): median "
        f"{100 * np.median(half):.2f} % of the image; pixels with exactly 0 evidence "
        f"(1 − m = 0, ranked among themselves in row-major order by the metric): median "
        f"{100 * np.median(zero):.1f} %.",
        "- AUC relative to the image's own score (AUC / p(target | x), mean): "
        + ", ".join(f"{LABELS[m]} {np.mean(auc[m] / p0):.3f}" for m in TABLE2) + ".",
    ]
    return "\n".join(lines)


def table2_notes(raw, ours2) -> str:
    """Where our ordering differs from the paper's, and the numbers that bear on why."""
    auc = {m: np.asarray(v) for m, v in raw["deletion_auc"].items()}
    n = raw["data"]["n"]
    p0 = np.asarray(raw["data"]["p_target"])
    lines = ["Where the ordering differs from the paper's:"]
    flips = flipped_pairs(ours2, {m: v[0] for m, v in PAPER_T2.items()}, True)
    for a_, b_ in flips:
        d = auc[a_] - auc[b_]
        lines.append(f"- paper: {LABELS[a_]} < {LABELS[b_]}; ours: {LABELS[a_]} − {LABELS[b_]} "
                     f"= {d.mean():+.4f} ± {sem(d):.4f} (paired, {int((d < 0).sum())}/{n} "
                     f"images in the paper's direction, |mean|/s.e. = "
                     f"{abs(d.mean()) / max(sem(d), 1e-12):.1f}).")
    if not flips:
        lines.append("- none: the paper's ordering holds.")
    others = [m for m in TABLE2 if m != "gradient"]
    se = [sem(auc[m]) for m in others]
    tmax = max([abs((auc[a_] - auc[b_]).mean()) / max(sem(auc[a_] - auc[b_]), 1e-12)
                for a_, b_ in flips] or [0.0])
    lines.append(
        f"- Noise: with {n} images the standard errors of {', '.join(LABELS[m] for m in others)}"
        f" are {min(se):.4f}–{max(se):.4f}, the spread of their means "
        f"{max(ours2[m] for m in others) - min(ours2[m] for m in others):.4f}; the largest "
        f"paired |mean|/s.e. of a reversed pair is {tmax:.1f}"
        + (": none of the reversals is resolved by this sample." if tmax < 2 else ".")
        + f" The gradient ({ours2['gradient']:.4f}) is clearly last.")
    ex = raw["extras"]["fgvis"]
    lam = np.asarray(ex["lam"])
    top = int(np.isclose(lam, max(lam.max(), 3e-4)).sum())
    zero = np.asarray(raw["heatmap_stats"]["fgvis"]["zero_fraction"])
    lines.append(
        f"- FGVis λ: the rule takes the largest λ of the grid whose explanation still drops the "
        f"score to ≤ 10 %; it took the grid's largest (3e-4) on {top}/{n} images, so its masks "
        f"are as sparse as the grid allows: the evidence 1 − m is exactly 0 on a median "
        f"{100 * np.median(zero):.0f} % of the pixels, which the metric then deletes in "
        f"row-major order (no ranking). The paper's λ rule and iteration count are in its "
        f"supplement, which we do not have; we ran {raw['args']['fgvis_iterations']} of the "
        f"library's default 100 iterations.")
    lines.append(
        f"- Scale: the paper's ResNet50 AUCs are "
        f"{min(PAPER_T2[m][0] / ours2[m] for m in PAPER_T2):.1f}–"
        f"{max(PAPER_T2[m][0] / ours2[m] for m in PAPER_T2):.1f}× ours; the curve starts at the "
        f"target's softmax on the image: {p0.mean():.3f} on average here (EfficientNet-Lite0 "
        f"on composites), where FGVis §5.1 attributes even the ResNet50/VGG16 gap to ResNet50's "
        f"higher scores. Divided by that start, the means are "
        + ", ".join(f"{LABELS[m]} {np.mean(auc[m] / p0):.3f}" for m in TABLE2) + ".")
    return "\n".join(lines)


def table1_notes(raw) -> str:
    lines = []
    for r in raw["table1"]:
        m = re.findall(r"initial e\): ([\d.]+) %", r["output"])
        if len(m) == 2:
            lines.append(
                f"- m⁰ = {r['mask_init']:g}: activations pushed outside their Eq. 5 bounds by "
                f"the optimisation: {m[0]} % without, {m[1]} % with the defense; mean "
                f"p(c_A | e) {r['p_no_defense']:.3f} without, {r['p_defended']:.3f} with.")
    lines.append("- The ordering matches the paper (no defense ~100 %, defended ~0 %). "
                 "`xaijax/methods/fgvis.py` notes that at m = 0 exactly the defended gradient "
                 "of EfficientNet-Lite0 can vanish, so the m⁰ = 0.01 row is the one that "
                 "tests the filter itself; both rows give the same percentages here.")
    return "\n".join(lines)


def table3_notes(raw, ours3) -> str:
    d = raw["data"]
    chance = np.asarray(raw["pointing_chance"])
    labels = np.asarray(d["labels"])
    lines = [f"- The composites paste each object at a uniformly random place (wholly "
             f"inside the image) and it covers {100 * np.mean(d['mask_area']):.0f} % of the "
             f"image on average: a random point hits {100 * chance.mean():.1f} % of the time "
             f"(class mean {100 * class_mean(chance, labels):.1f} %). VOC07 objects are large "
             f"and centre-biased, which is why the paper's centre baseline scores 69.6 %; here "
             f"it scores {ours3['centre']:.1f} %."]
    for m in GRADIENT_MAPS:
        r_ = np.asarray(raw["pointing_unsmoothed"][m]).mean() * 100
        s_ = np.asarray(raw["pointing"][m]).mean() * 100
        lines.append(f"- {LABELS[m]}: {r_:.1f} % raw, {s_:.1f} % after TorchRay's blur "
                     f"(all images).")
    flips = flipped_pairs(ours3, PAPER_T3, False)
    ties = sorted(m for m in ours3 if list(ours3.values()).count(ours3[m]) > 1)
    lines.insert(0, "- Ordering: " + ("the paper's order holds" if not flips else
                 "reversed against the paper: " + ", ".join(
                     f"{LABELS[b_]} > {LABELS[a_]}" for a_, b_ in flips))
                 + (f"; tied here: {', '.join(LABELS[m] for m in ties)}" if ties else "")
                 + ". Hits saturate on these composites: one object per image, large and on "
                 "an unrelated background.")
    for m, pts in raw.get("argmax", {}).items():
        pts = [tuple(p) for p in pts]
        distinct = len(set(pts))
        if distinct <= max(2, len(pts) // 4):
            common = max(set(pts), key=pts.count)
            lines.append(f"- {LABELS[m]}: the maximum of its map falls on {distinct} distinct "
                         f"pixel(s) over {len(pts)} images, {pts.count(common)} times on "
                         f"(row, column) = {common}: the map barely depends on the image.")
    ex = raw["extras"].get("dssr", {})
    if ex:
        pre = np.asarray(ex["score_preservation"]) / np.asarray(ex["score_image"])
        dele = np.asarray(ex["score_deletion"]) / np.asarray(ex["score_image"])
        lines.append(f"- DSSR after {raw['args']['dssr_iterations']} of the paper's 300 "
                     f"iterations: preservation score / image score median {np.median(pre):.3f}"
                     f", deletion score / image score median {np.median(dele):.3f}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16, help="composites after the filter")
    ap.add_argument("--pool", type=int, default=200, help="composites drawn before the filter")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4, help="images per method call")
    ap.add_argument("--fgvis-iterations", type=int, default=30)
    ap.add_argument("--rise-masks", type=int, default=500)
    ap.add_argument("--lime-samples", type=int, default=300)
    ap.add_argument("--occlusion-window", type=int, default=32)
    ap.add_argument("--occlusion-stride", type=int, default=16)
    ap.add_argument("--dssr-iterations", type=int, default=100)
    ap.add_argument("--ep-iterations", type=int, default=50)
    ap.add_argument("--ep-areas", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2])
    ap.add_argument("--deletion-step", type=int, default=448,
                    help="pixels removed per step (Petsiuk et al.: 224, the width; 448 halves "
                         "the metric's cost)")
    ap.add_argument("--table1-images", type=int, default=8)
    ap.add_argument("--table1-iterations", type=int, default=40)
    ap.add_argument("--table1-mask-inits", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--sise-images", type=int, default=8,
                    help="images of the SISE table (the first of --images)")
    ap.add_argument("--sise-mu", type=float, default=0.0)
    ap.add_argument("--sise-batch", type=int, default=64, help="SISE masked images per call")
    ap.add_argument("--sise-max-masks", type=int, default=None)
    ap.add_argument("--ig-steps", type=int, default=50)
    ap.add_argument("--sise-methods", nargs="+", default=list(TABLE_SISE), choices=TABLE_SISE)
    ap.add_argument("--only-sise", action="store_true",
                    help="compute only the SISE table (with the data it needs)")
    ap.add_argument("--insert-into", default=None,
                    help="with --only-sise: replace / insert its section in this existing "
                         "markdown file instead of writing --out")
    ap.add_argument("--out", default=None,
                    help=f"markdown file to write (default {os.path.relpath(DEFAULT_OUT, ROOT)};"
                         f" with --smoke a temporary directory)")
    ap.add_argument("--raw", default=None, help="also write every number as JSON here")
    ap.add_argument("--render", default=None,
                    help="re-render the markdown from a --raw JSON file (no computation)")
    a = parse_args(ap, argv, SMOKE)
    if a.render:
        with open(a.render) as f:
            raw = json.load(f)
    elif a.only_sise:
        raw = compute_sise_only(a, argv)
    else:
        raw = compute(a, argv)
    if raw.get("only_sise"):
        section = render_sise(raw)
        if a.insert_into:
            insert_section(a.insert_into, section)
            out = a.insert_into
        else:
            out = a.out or os.path.join(tempfile.mkdtemp(prefix="xaijax-reproduce-"), "SISE.md")
            with open(out, "w", encoding="utf-8") as f:
                f.write(section)
        if a.raw:
            with open(a.raw, "w", encoding="utf-8") as f:
                json.dump(raw, f, indent=1)
        print(f"wrote {out} (wall {raw['wall_seconds']:.0f} s)")
        return
    out = a.out or (os.path.join(tempfile.mkdtemp(prefix="xaijax-reproduce-"), "RESULTS.md")
                    if a.smoke else DEFAULT_OUT)
    text = render(raw)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    if a.raw:
        with open(a.raw, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
    print(f"wrote {out} (wall {raw['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
