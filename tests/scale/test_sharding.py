"""Sharded explanations (``mesh=``) equal one-device ones, on 8 forced CPU devices.

The device count is fixed when JAX starts, so the checks run in one subprocess started with
``--xla_force_host_platform_device_count=8``; it prints one JSON line that the tests read."""

import textwrap

import pytest

from tests.scale import run_on_devices

SCRIPT = textwrap.dedent(r"""
    import json
    import jax, jax.numpy as jnp, numpy as np
    import xaijax as xj

    assert jax.device_count() == 8, jax.devices()
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda ev, d, **kw: compiles.append(ev) if ev.endswith("backend_compile_duration")
        else None)
    m = xj.models.get("small_cnn", num_classes=6)
    rs = np.random.RandomState(0)  # host arrays: no eager jax op compiles
    x = rs.randn(5, 32, 32, 3).astype(np.float32)   # 5: padded to 8
    cases = {"gradient": {}, "integrated_gradients": dict(steps=3)}
    out = {"diff": {}, "spec": {}}
    for name, opts in cases.items():
        a = xj.explain(m, x, "top1", method=name, **opts)
        b = xj.explain(m, x, "top1", method=name, mesh="auto", **opts)
        out["diff"][name] = float(np.max(np.abs(np.asarray(a.heatmap) - np.asarray(b.heatmap))))
        out["spec"][name] = [b.heatmap.shape, np.array_equal(a.target, b.target)]
    # a user's mesh from jax.make_mesh (Explicit axes by default), 4 x 2 with a second axis
    user = jax.make_mesh((4, 2), ("data", "model"))
    f = xj.methods.bind("gradient")
    ref = np.asarray(f(m, x, [1, 2, 3, 4, 5]).heatmap)
    got = f(m, x, [1, 2, 3, 4, 5], mesh=user)
    out["user_mesh_diff"] = float(np.max(np.abs(ref - np.asarray(got.heatmap))))
    # the program is sharded: the full batch of 8 stays split over the 8 devices
    x8 = rs.randn(8, 32, 32, 3).astype(np.float32)
    ex8 = f(m, x8, "top1", mesh="auto")
    out["shards"] = len(ex8.heatmap.addressable_shards)
    out["shard_rows"] = sorted({s.data.shape[0] for s in ex8.heatmap.addressable_shards})
    # repeated calls with new images, targets and option values never recompile
    g = xj.methods.bind("integrated_gradients", steps=3)
    args = [(rs.randn(5, 32, 32, 3).astype(np.float32), [i % 6] * 5) for i in range(3)]
    jax.block_until_ready(g(m, *args[0], mesh="auto").heatmap)
    before = len(compiles)
    for xi, ti in args[1:]:
        jax.block_until_ready(g(m, xi, ti, mesh="auto").heatmap)
        jax.block_until_ready(xj.explain(m, xi, ti, method="integrated_gradients", steps=3,
                                         mesh="auto").heatmap)
    out["recompiles"] = len(compiles) - before
    out["compiled_before"] = before
    # 2 images on 8 devices: IG's path points are split instead (inner mode)
    import re
    x2 = x[:2]
    ig = xj.methods.bind("integrated_gradients", steps=16, internal_batch_size=8)
    a = ig(m, x2, [1, 2])
    b = ig(m, x2, [1, 2], mesh="auto")
    out["inner_diff"] = float(np.max(np.abs(np.asarray(a.heatmap) - np.asarray(b.heatmap))))
    hlo = ig.compiled_text(m, x2, [1, 2], mesh="auto")
    # the convolutions' batch per device: 2 images x 8 path points / 8 devices
    out["inner_conv_batch"] = sorted({int(c) for c in re.findall(
        r"f32\[(\d+),\d+,\d+,\d+\]\{[^}]*\} convolution", hlo)})
    # DeepLIFT joins inputs and references per device block: no collective in its program
    dl = xj.methods.bind("deeplift")
    a, b = dl(m, x8, "top1").heatmap, dl(m, x8, "top1", mesh="auto").heatmap
    out["deeplift_diff"] = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    out["deeplift_collectives"] = len(re.findall(
        r"(all-gather|all-reduce|all-to-all|collective-permute)(-start)?\(",
        dl.compiled_text(m, x8, "top1", mesh="auto")))
    # 16 images, 2 per device: a batched SVD on every device hung the CPU client in most runs
    # (see xaijax.methods.cam.eigen_projection); three calls
    x16 = rs.randn(16, 32, 32, 3).astype(np.float32)
    eg = xj.methods.bind("eigengradcam")
    ref = np.asarray(eg(m, x16, "top1").heatmap)
    out["eigen_diff"] = max(float(np.max(np.abs(ref - np.asarray(
        eg(m, x16, "top1", mesh="auto").heatmap)))) for _ in range(3))
    try:
        xj.explain(m, x, 0, mesh="everything")
    except ValueError as e:
        out["bad_mesh"] = str(e)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    return run_on_devices(SCRIPT)


@pytest.mark.parametrize("name", ["gradient", "integrated_gradients"])
def test_sharded_batch_equals_one_device(result, name):
    assert result["spec"][name] == [[5, 32, 32], True]  # padded to 8 and cut back to 5
    assert result["diff"][name] <= 1e-6, result["diff"]


def test_user_mesh_with_explicit_axes_and_a_second_axis(result):
    assert result["user_mesh_diff"] <= 1e-7


def test_batch_is_split_over_every_device(result):
    assert result["shards"] == 8 and result["shard_rows"] == [1]


def test_repeated_sharded_calls_do_not_recompile(result):
    assert result["compiled_before"] > 0  # the listener sees compilations
    assert result["recompiles"] == 0


def test_fewer_images_than_devices_split_the_path_points(result):
    assert result["inner_diff"] <= 1e-9
    assert result["inner_conv_batch"] == [2]  # 16 path evaluations, 2 per device


def test_bad_mesh_is_a_clear_error(result):
    assert "mesh must be None, 'auto' or a jax.sharding.Mesh" in result["bad_mesh"]


def test_a_batched_svd_on_every_device_does_not_hang(result):
    assert result["eigen_diff"] <= 1e-6


def test_deeplift_keeps_each_reference_on_its_image_device(result):
    assert result["deeplift_diff"] <= 1e-6
    assert result["deeplift_collectives"] == 0
