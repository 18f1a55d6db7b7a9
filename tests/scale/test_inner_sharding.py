"""Fewer images than devices: RISE, Score-CAM, Ablation-CAM, occlusion, LIME, SISE, Kernel
SHAP, Shapley value sampling and feature ablation split their masked forward passes over the
devices, IG, Blur IG, SmoothGrad, VarGrad, GradientSHAP and DeepLIFT-SHAP their path
points, noisy copies or references, and FGVis and extremal perturbation the rows of their mask
optimisation (λ candidates, areas) (inner mode, ``xaijax.sharding.merge_inner`` and
``shard_inner``), on 8 forced CPU devices, and give the one-device result. With as many images as devices each device keeps
its own image's items (batch mode).

As in ``test_sharding.py``, the checks run in one subprocess started with
``--xla_force_host_platform_device_count=8``; it prints one JSON line that the tests read. The
compiled programs are read for the batch of their convolutions: one chunk of ``K`` items of 2
images is ``2·K`` masked images, ``2·K/8`` per device when the items are split (replicated, every
device would convolve all ``2·K``); with 8 images (the batch split) a device convolves its
image's ``K`` items."""

import json
import textwrap

import pytest

from tests.scale import run_on_devices

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
    "integrated_gradients": dict(steps=32, internal_batch_size=K),
    "blur_ig": dict(steps=33, internal_batch_size=K),  # 32 σ intervals
    "smoothgrad": dict(n_samples=32, internal_batch_size=K),
    "vargrad": dict(n_samples=32, internal_batch_size=K),
    "gradient_shap": dict(n_samples=32, internal_batch_size=K),
    "deeplift_shap": dict(baselines=32, batch_size=K),  # 32 random references
    "fgvis": dict(iterations=2, lam_candidates=[1e-5 * i for i in range(K)]),  # K λ rows
    "extremal_perturbation": dict(max_iter=2, areas=[0.05 * (i + 1) for i in range(K)]),
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

    def conv_batches(f, x, kw):  # inner mode for 2 images, the batch split for 8
        hlo = f.compiled_text(m, x, "top1", mesh=mesh, **kw)
        return sorted({int(c) for c in re.findall(
            r"f32\[(\d+),\d+,\d+,\d+\]\{[^}]*\} convolution", hlo)})

    out = {}
    for name, opts in cases.items():
        kw = {"baselines": rs.randn(opts.pop("baselines"), 32, 32, 3).astype(np.float32)} \
            if "baselines" in opts else {}
        f = xj.methods.bind(name, **{k: (tuple(v) if isinstance(v, list) else v)
                                     for k, v in opts.items()})
        a = f(m, x2, [1, 4], **kw)
        b = f(m, x2, [1, 4], mesh="auto", **kw)
        leaves = lambda e: [np.asarray(v) for v in jax.tree_util.tree_leaves(
            (e.heatmap, e.attribution, e.extras)) if np.asarray(v).dtype.kind == "f"]
        # each leaf against the larger of its own scale and the heatmap's: a completeness
        # delta is zero up to rounding, so its own scale would turn rounding into 20 %
        scale = float(np.max(np.abs(np.asarray(a.heatmap))))
        out[name] = {
            "rel": max(float(np.max(np.abs(u - v)) / max(np.max(np.abs(u)), scale, 1e-30))
                       for u, v in zip(leaves(a), leaves(b))),
            "leaves": len(leaves(a)),
            "inner": conv_batches(f, x2, kw),
            "batch": conv_batches(f, x8, kw),
        }
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    return run_on_devices(SCRIPT, json.dumps(CASES))


# extremal perturbation's area term ranks the mask values. Mirror-image pixels of the smooth
# mask are equal up to rounding, which the two programs do differently, so the order of such a
# pair (and which of them the reference calls inside the area) can differ: measured 2.7e-4
# (absolute) of a mask after 1 step, 6e-4 after 2, 6.4e-5 relative to the heatmap's scale
TOL = {"extremal_perturbation": 5e-4}


@pytest.mark.parametrize("name", list(CASES))
def test_two_images_on_eight_devices_equal_one_device(result, name):
    assert result[name]["leaves"] >= 1
    assert result[name]["rel"] <= TOL.get(name, 1e-5), result[name]


@pytest.mark.parametrize("name", list(CASES))
def test_two_images_split_their_masked_passes_over_the_devices(result, name):
    # 2 images x 16 items per chunk = 32 masked images, 4 per device; any other convolution
    # (the unmasked pass, Ablation-CAM's head) sees the 2 replicated images
    assert max(result[name]["inner"]) == 2 * K // 8, result[name]


@pytest.mark.parametrize("name", list(CASES))
def test_eight_images_keep_the_batch_split(result, name):
    # one image per device, its 16 items: the inner axis is not merged in front of the images
    assert max(result[name]["batch"]) == K, result[name]
