"""Fewer images than devices: RISE, Score-CAM, Ablation-CAM, occlusion, LIME, SISE, Kernel
SHAP, Shapley value sampling and feature ablation split their masked forward passes over the devices (inner mode, ``xaijax.sharding.merge_inner``), on 8
forced CPU devices, and give the one-device result.

As in ``test_sharding.py``, the checks run in one subprocess started with
``--xla_force_host_platform_device_count=8``; it prints one JSON line that the tests read. The
compiled programs are read for the batch of their convolutions: one chunk of ``K`` items of 2
images is ``2·K`` masked images, ``2·K/8`` per device when the items are split (replicated, every
device would convolve all ``2·K``); with 8 images (the batch split) a device convolves its
image's ``K`` items."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

K = 16  # items per chunk in every case below
CASES = {
    "rise": dict(num_masks=32, batch_size=K),
    "scorecam": dict(batch_size=K),
    "ablationcam": dict(batch_size=K, tap="relu4"),  # conv5 after the tap: the tail convolves
    "occlusion": dict(window=8, strides=8, batch_size=K),  # 16 windows
    "lime": dict(num_samples=32, batch_size=K, num_segments=16, segmentation="grid"),
    "sise": dict(batch_size=K, max_masks=K),  # at most one chunk per block
    "kernel_shap": dict(num_samples=32, batch_size=K, num_segments=16, segmentation="grid"),
    "shapley_sampling": dict(num_samples=2, batch_size=K, num_segments=16,
                             segmentation="grid"),  # 2 permutations x 16 groups
    "feature_ablation": dict(batch_size=K, num_segments=16, segmentation="grid"),
}

SCRIPT = textwrap.dedent(r"""
    import json, re, sys
    import jax, numpy as np
    import xaijax as xj
    from xaijax import sharding

    assert jax.device_count() == 8, jax.devices()
    cases = json.loads(sys.argv[1])
    m = xj.models.get("small_cnn", num_classes=6)
    rs = np.random.RandomState(0)
    x2 = rs.randn(2, 32, 32, 3).astype(np.float32)
    x8 = rs.randn(8, 32, 32, 3).astype(np.float32)
    mesh = sharding.resolve_mesh("auto")

    def conv_batches(f, x, inner):
        xx, t, top1, tr = f.prepare(m, x, "top1")
        model = sharding.replicated_model(m, mesh)
        if inner:
            xx, t = sharding.replicate((xx, t), mesh)
        else:
            _, (xx, t) = sharding.shard_batch(mesh, xx, t)
        hlo = f._jit_sharded_pytree.lower(model, xx, t, top1, sharding.replicate(tr, mesh),
                                          mesh, inner).compile().as_text()
        return sorted({int(c) for c in re.findall(
            r"f32\[(\d+),\d+,\d+,\d+\]\{[^}]*\} convolution", hlo)})

    out = {}
    for name, opts in cases.items():
        f = xj.methods.bind(name, **{k: (tuple(v) if isinstance(v, list) else v)
                                     for k, v in opts.items()})
        a = f(m, x2, [1, 4])
        b = f(m, x2, [1, 4], mesh="auto")
        leaves = lambda e: [np.asarray(v) for v in jax.tree_util.tree_leaves(
            (e.heatmap, e.attribution, e.extras)) if np.asarray(v).dtype.kind == "f"]
        out[name] = {
            "rel": max(float(np.max(np.abs(u - v)) / max(np.max(np.abs(u)), 1e-30))
                       for u, v in zip(leaves(a), leaves(b))),
            "leaves": len(leaves(a)),
            "inner": conv_batches(f, x2, True),
            "batch": conv_batches(f, x8, False),
        }
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], capture_output=True,
                       text=True, env=env, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])


@pytest.mark.parametrize("name", list(CASES))
def test_two_images_on_eight_devices_equal_one_device(result, name):
    assert result[name]["leaves"] >= 1
    assert result[name]["rel"] <= 1e-5, result[name]


@pytest.mark.parametrize("name", list(CASES))
def test_two_images_split_their_masked_passes_over_the_devices(result, name):
    # 2 images x 16 items per chunk = 32 masked images, 4 per device; any other convolution
    # (the unmasked pass, Ablation-CAM's head) sees the 2 replicated images
    assert max(result[name]["inner"]) == 2 * K // 8, result[name]


@pytest.mark.parametrize("name", list(CASES))
def test_eight_images_keep_the_batch_split(result, name):
    # one image per device, its 16 items: the inner axis is not merged in front of the images
    assert max(result[name]["batch"]) == K, result[name]
