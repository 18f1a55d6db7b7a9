"""Sharded scaling: images/s of ``xj.explain(..., mesh="auto")`` on 1, 2, 4 and 8 devices.

On a CPU host the devices are forced (``--xla_force_host_platform_device_count``); each device
count runs in its own process (the count is fixed when JAX starts), on the same model, weights
and inputs, best of ``--repeats`` timed calls after one compiling call (compile time printed
apart). On a GPU/TPU host the same script uses the real devices (counts above the number
present are skipped). The one-device column is ``mesh=None``.

    python benchmarks/sharded_scaling.py [--model resnet18] [--size 112] [--batch 16]
        [--methods gradient,integrated_gradients,rise] [--devices 1,2,4,8] [--smoke]
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
    p.add_argument("--smoke", action="store_true", help="small_cnn 32 px, batch 8, 1 and 2 "
                   "devices, gradient only, one repeat")
    a = p.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
