"""Data-set run throughput and memory: ``xj.run_dataset`` over a folder of PNGs against the same
images explained batch by batch in memory (``bind(...)(model, x)``), one run, same machine.

Prints images/s for both, the RSS at each quarter of the run (flat when nothing accumulates),
and the time a finished folder takes to rerun (nothing to compute).

    python benchmarks/dataset_run.py [--images 2000] [--size 64] [--method gradient]
        [--batch-size 32] [--model small_cnn] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=64, help="side of the PNGs written")
    p.add_argument("--method", default="gradient")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="40 images, batch 8")
    a = p.parse_args(argv)
    if a.smoke:
        a.images, a.batch_size = 40, 8

    import jax
    from PIL import Image

    import xaijax as xj

    tmp = tempfile.mkdtemp(prefix="xaijax-dataset-bench-")
    try:
        src = os.path.join(tmp, "photos")
        os.makedirs(src)
        rs = np.random.RandomState(0)
        for i in range(a.images):
            Image.fromarray(rs.randint(0, 255, (a.size, a.size, 3), np.uint8)).save(
                os.path.join(src, f"{i:06d}.png"))
        model = xj.models.get(a.model, pretrained=False)
        paths = xj.dataset.list_images(src)

        # in memory: load everything, then explain batch by batch (compile excluded)
        f = xj.methods.bind(a.method)
        x = np.stack([xj.dataset.load_image(model, q) for q in paths])
        bs = a.batch_size
        xpad = np.concatenate([x, np.repeat(x[-1:], -len(x) % bs, 0)])
        jax.block_until_ready(f(model, xpad[:bs], "top1").heatmap)
        t0 = time.perf_counter()
        for s in range(0, len(xpad), bs):
            np.asarray(f(model, xpad[s:s + bs], "top1").heatmap)
        t_mem = time.perf_counter() - t0
        del x, xpad

        # the data-set run (its program is already compiled by the loop above), its RSS
        # sampled by a thread every 50 ms
        out = os.path.join(tmp, "out")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(rss_mb())
                time.sleep(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        r = xj.run_dataset(model, src, method=a.method, out=out, batch_size=bs,
                           progress=False)
        t_run = time.perf_counter() - t0
        stop.set()
        th.join()
        done = len(r.done)
        q = len(samples)
        marks = [samples[min(q - 1, int(q * k / 4))] for k in (0, 1, 2, 3)] + [samples[-1]]
        t1 = time.perf_counter()
        again = xj.run_dataset(model, paths, method=a.method, out=out, batch_size=bs,
                               progress=False)
        t_again = time.perf_counter() - t1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{a.images} images {a.size}x{a.size} -> {model.spec.name} "
              f"{tuple(model.spec.input_size)}, {a.method}, batch {bs}, "
              f"devices {jax.device_count()}")
        print(f"in memory (no I/O)   {a.images / t_mem:8.1f} img/s")
        print(f"run_dataset          {done / t_run:8.1f} img/s  (read, explain, heatmap and "
              f"target chunks per batch, manifest every {xj.dataset.MANIFEST_EVERY_S:g} s)")
        print(f"rerun of a finished folder: {t_again:.2f} s, computed {len(again.computed)}")
        print("RSS MB at 0, 1/4, 1/2, 3/4 of the run and at its end: "
              + " ".join(f"{m:.0f}" for m in marks) + f"; process peak {peak:.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
