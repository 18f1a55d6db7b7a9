"""Sharded scaling: images/s of ``xj.explain(..., mesh="auto")`` on 1, 2, 4 and 8 devices.

On a CPU host the devices are forced (``--xla_force_host_platform_device_count``); each device
count runs in its own process (the count is fixed when JAX starts), on the same model, weights
and inputs, best of ``--repeats`` timed calls after one compiling call (compile time printed
apart). On a GPU/TPU host the same script uses the real devices (counts above the number
present are skipped). The one-device column is ``mesh=None``.

    python benchmarks/sharded_scaling.py [--model resnet18] [--size 112] [--batch 16]
        [--methods gradient,integrated_gradients,rise] [--devices 1,2,4,8] [--smoke]
    python benchmarks/sharded_scaling.py --parity      # every method: sharded == one device?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import json, sys, time
import jax, numpy as np
import xaijax as xj
cfg = json.loads(sys.argv[1])
n_dev = cfg["devices"]
if jax.device_count() < n_dev:
    print("RESULT" + json.dumps({"skip": f"{jax.device_count()} devices"})); sys.exit(0)
mesh = None if n_dev == 1 else jax.sharding.Mesh(np.array(jax.devices()[:n_dev]), ("data",))
m = xj.models.get(cfg["model"], pretrained=False)
x = np.random.RandomState(0).randn(cfg["batch"], cfg["size"], cfg["size"], 3).astype(np.float32)
out = {}
for name, opts in cfg["methods"].items():
    if "key" in xj.methods.info(name).options:
        opts = dict(opts, key=jax.random.PRNGKey(0))
    run = lambda: jax.block_until_ready(
        xj.explain(m, x, "top1", method=name, mesh=mesh, **opts).heatmap)
    t0 = time.perf_counter(); run(); first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
    out[name] = {"img_s": cfg["batch"] / best, "compile_s": max(0.0, first - best)}
print("RESULT" + json.dumps(out))
"""

PARITY_WORKER = r"""
import json, re, sys, time
import jax, numpy as np
import xaijax as xj
from xaijax import sharding
cfg = json.loads(sys.argv[1])
m = xj.models.get("small_cnn", num_classes=6)
rs = np.random.RandomState(0)
mesh = sharding.resolve_mesh("auto")
COLL = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")
def conv_size(hlo):
    shapes = re.findall(r"= [a-z0-9]+\[([\d,]+)\][^ ]* convolution\(", hlo)
    return sum(int(np.prod([int(d) for d in s.split(",")])) for s in shapes)
out = {}
for name, opts in cfg["methods"].items():
    opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()}
    if "key" in xj.methods.info(name).options:
        opts["key"] = jax.random.PRNGKey(0)
    row = {}
    try:
        f = xj.methods.bind(name, **{k: v for k, v in opts.items() if k != "key"})
        kw = {"key": opts["key"]} if "key" in opts else {}
        for label, n in (("batch", cfg["batch"]), ("inner", 2)):
            print(f"# {name} {label}", file=sys.stderr, flush=True)
            x = rs.randn(n, 32, 32, 3).astype(np.float32)
            a = f(m, x, "top1", **kw)
            b = f(m, x, "top1", mesh=mesh, **kw)
            ha, hb = np.asarray(a.heatmap, np.float64), np.asarray(b.heatmap, np.float64)
            d = float(np.max(np.abs(ha - hb)))
            row[label] = {"diff": d, "rel": d / max(float(np.max(np.abs(ha))), 1e-30)}
            hlo = f.compiled_text(m, x, "top1", mesh=mesh, **kw)
            row[label]["collectives"] = sum(len(re.findall(rf"\b{c}(-start)?\(", hlo))
                                            for c in COLL)
            # convolution output elements per device against one device's program
            one = conv_size(f.compiled_text(m, x, "top1", **kw))
            row[label]["share"] = conv_size(hlo) / one if one else float("nan")
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    out[name] = row
print("RESULT" + json.dumps(out))
"""

# small settings for the parity table (small_cnn, 32 px); other methods run their defaults
PARITY_OPTIONS = {
    "integrated_gradients": {"steps": 8}, "smoothgrad": {"n_samples": 8},
    "vargrad": {"n_samples": 8}, "gradient_shap": {"n_samples": 8},
    "guided_ig": {"steps": 8}, "blur_ig": {"steps": 8}, "xrai": {"steps": 8},
    "rise": {"num_masks": 32, "batch_size": 16}, "occlusion": {"window": 8, "strides": 8},
    "lime": {"num_samples": 32, "num_segments": 16, "segmentation": "grid"},
    "kernel_shap": {"num_samples": 32, "num_segments": 16, "segmentation": "grid"},
    "shapley_sampling": {"num_samples": 2, "num_segments": 16, "segmentation": "grid"},
    "feature_ablation": {"num_segments": 16, "segmentation": "grid"},
    "scorecam": {"batch_size": 16}, "ablationcam": {"batch_size": 16},
    "sise": {"batch_size": 16, "max_masks": 16},
    "extremal_perturbation": {"max_iter": 8}, "meaningful_perturbation": {"iterations": 8},
    "fgvis": {"iterations": 8, "lam": 1e-4}, "dssr": {"iterations": 8},
}
NO_PARITY = {"adversarial_explainer": "needs trained generators"}


def parity(methods, batch: int) -> int:
    """Print, per method, the largest difference of ``mesh="auto"`` on 8 forced devices from
    one device (a batch of ``batch`` images split over the devices, and 2 images: inner mode)
    and the collectives in each compiled program (HLO all-gather / all-reduce / all-to-all /
    collective-permute / reduce-scatter ops)."""
    import xaijax as xj

    names = methods or [n for n in xj.methods.available() if n not in NO_PARITY]
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cfg = dict(batch=batch, methods={n: PARITY_OPTIONS.get(n, {}) for n in names})
    r = subprocess.run([sys.executable, "-c", PARITY_WORKER, json.dumps(cfg)],
                       stdout=subprocess.PIPE, text=True, env=env)  # progress on stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    if r.returncode or not line:
        return 1
    rows = json.loads(line[0][len("RESULT"):])
    print(f"small_cnn 32x32 on 8 forced CPU devices: batch {batch} (split, padded to a multiple "
          f"of 8) and 2 images (inner mode) against one device")
    print(f"share: convolution output elements per device over those of the one-device "
          f"program; an even split is {-(-batch // 8)}/{batch} = {-(-batch // 8) / batch:.2f} "
          f"in batch mode, about 1/8 in inner mode; 1.0 means every device does all the work")
    print(f"{'method':34s}{'batch max|diff|':>16s}{'rel':>10s}{'colls':>7s}{'share':>7s}"
          f"{'inner max|diff|':>16s}{'rel':>10s}{'colls':>7s}{'share':>7s}")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:34s} error: {row['error']}")
            continue
        b, i = row["batch"], row["inner"]
        print(f"{name:34s}{b['diff']:16.2e}{b['rel']:10.1e}{b['collectives']:7d}"
              f"{b['share']:7.2f}{i['diff']:16.2e}{i['rel']:10.1e}{i['collectives']:7d}"
              f"{i['share']:7.2f}")
    for name, why in NO_PARITY.items():
        print(f"{name:34s} not run: {why}")
    return 0


OPTIONS = {"gradient": {}, "integrated_gradients": {"steps": 16},
           "rise": {"num_masks": 128, "batch_size": 32}, "gradcam": {},
           "smoothgrad": {"n_samples": 8}, "occlusion": {"window": (16, 16), "strides": (16, 16)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--methods", default="gradient,integrated_gradients,rise")
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parity", action="store_true",
                   help="instead of timing: every method's sharded result against one device "
                        "on 8 forced devices (small_cnn, 32 px; --methods picks some), with the "
                        "collectives of each compiled program")
    p.add_argument("--parity-batch", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="small_cnn 32 px, batch 8, 1 and 2 "
                   "devices, gradient only, one repeat; then the parity table of gradient and "
                   "rise")
    a = p.parse_args(argv)
    if a.parity and not a.smoke:
        chosen = a.methods.split(",") if "--methods" in (argv or sys.argv) else None
        return parity(chosen, a.parity_batch)
    if a.smoke:
        a.model, a.size, a.batch, a.methods, a.devices, a.repeats = (
            "small_cnn", 32, 8, "gradient", "1,2", 1)
    methods = {m: OPTIONS.get(m, {}) for m in a.methods.split(",")}
    counts = [int(c) for c in a.devices.split(",")]
    rows = {}
    for n in counts:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + f" --xla_force_host_platform_device_count={max(counts)}")
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
        cfg = dict(model=a.model, size=a.size, batch=a.batch, methods=methods, devices=n,
                   repeats=a.repeats)
        t0 = time.time()
        r = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True,
                           text=True, env=env)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
        if r.returncode or not line:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        rows[n] = json.loads(line[0][len("RESULT"):])
        print(f"# {n} device(s) done in {time.time() - t0:.0f} s", file=sys.stderr)
    import jax

    print(f"{a.model} {a.size}x{a.size}, batch {a.batch}, {jax.devices()[0].platform} "
          f"(forced host devices share {os.cpu_count()} cores on CPU)")
    print(f"{'method':22s}" + "".join(f"{str(n) + ' dev img/s':>14s}" for n in counts)
          + f"{'speed-up':>10s}{'compile s':>11s}")
    for m in methods:
        vals = [rows[n].get(m, {}).get("img_s") for n in counts]
        comp = rows[counts[-1]].get(m, {}).get("compile_s", float("nan"))
        cells = "".join(f"{v:14.1f}" if v else f"{'-':>14s}" for v in vals)
        sp = vals[-1] / vals[0] if vals[0] and vals[-1] else float("nan")
        print(f"{m:22s}{cells}{sp:10.2f}{comp:11.1f}")
    if a.smoke:
        return parity(["gradient", "rise"], a.parity_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
