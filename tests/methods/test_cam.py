"""CAM family without torch: the papers' properties, independent re-computations on a small CNN,
FEM's K-sigma rule on hand-built activations, jit / vmap / no-recompile, errors and the CLI.
Parity with pytorch-grad-cam and Captum is in test_cam_parity.py."""

import dataclasses
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from tests.helpers import assert_rel_close
from xaijax import cli
from xaijax.methods import base as mbase

C = importlib.import_module("xaijax.methods.cam")  # the module (xaijax.methods.cam is the function)

CAM_METHODS = ("cam", "gradcam", "guided_gradcam", "gradcam_pp", "scorecam", "ablationcam", "fem",
               "hirescam", "xgradcam", "layercam", "eigencam", "eigengradcam", "gradcam_elementwise")


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10, seed=3)


@pytest.fixture(scope="module")
def resnet():
    return xj.models.get("resnet18")


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3), jnp.float32)


def _top1(model, x):
    return jnp.argmax(model(x), axis=-1).astype(jnp.int32)


def _acts_grads(model, x, t, tap):
    """Activation and gradient at a tap, computed independently of cam.py (the gradient of the
    tail written as an edit that replaces the activation)."""

    def run(model, x, t):
        _, acts = model.forward(x, capture=[tap])
        a = acts[tap]

        def tail(z):
            out, _ = model.forward(x, edits={tap: lambda _: z})
            return jnp.sum(jnp.take_along_axis(out, t[:, None], 1))

        return a, jax.grad(tail)(a)

    a, g = jax.jit(run)(model, x, t)
    return np.asarray(a), np.asarray(g)


# ------------------------------------------------------------------------------------------------
# CAM / Grad-CAM


def test_cam_is_dense_weights_times_last_features(small, xs):
    t = jnp.array([2, 7])
    ex = xj.explain(small, xs, t, method="cam")
    _, acts = small.forward(xs, capture=["relu5"])
    a = np.asarray(acts["relu5"])
    kernel = np.asarray(small.variables["params"]["fc"]["kernel"])  # (K, classes)
    want = np.maximum(np.einsum("nhwk,kn->nhw", a, kernel[:, np.asarray(t)]), 0)
    assert (want > 0).mean() > 0.1 and (want == 0).any()  # non-trivial and ReLU active
    assert_rel_close(ex.extras["low_res"], want, 1e-5)
    assert_rel_close(ex.extras["weights"], kernel[:, np.asarray(t)].T, 0)
    assert_rel_close(ex.heatmap, mbase.upsample(jnp.asarray(want), (32, 32)), 1e-5)


def test_gradcam_generalises_cam_on_gap_dense_models(small, xs):
    """Grad-CAM paper §3: with GAP + dense, alpha_k = w_k / (h w), so the maps agree up to hw."""
    t = jnp.array([2, 7])
    c = xj.explain(small, xs, t, method="cam")
    g = xj.explain(small, xs, t, method="gradcam")
    hw = 8 * 8
    assert_rel_close(g.extras["weights"] * hw, c.extras["weights"], 1e-5)
    assert_rel_close(g.heatmap * hw, c.heatmap, 1e-5)


def test_cam_refuses_models_without_gap_dense_and_other_layers(small, xs):
    plain = dataclasses.replace(small, spec=dataclasses.replace(small.spec, gap_dense=None,
                                                                name="plain"))
    with pytest.raises(ValueError, match=r"global average pooling.*'plain'.*gradcam"):
        xj.explain(plain, xs, 0, method="cam")
    with pytest.raises(ValueError, match=r"only at the input of the global average pooling"):
        xj.explain(small, xs, 0, method="cam", tap="relu4")


def test_gradcam_weights_are_mean_gradients_at_any_tap(small, xs):
    t = _top1(small, xs)
    for tap in ("relu2", "pool1", "conv5"):
        ex = xj.explain(small, xs, t, method="gradcam", tap=tap)
        a, g = _acts_grads(small, xs, t, tap)
        w = g.mean(axis=(1, 2))
        low = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
        assert (low.max((1, 2)) > 0).all(), tap
        assert_rel_close(ex.extras["weights"], w, 1e-5, tap)
        assert_rel_close(ex.extras["low_res"], low, 1e-5, tap)
        assert ex.heatmap.shape == (2, 32, 32) and float(ex.heatmap.min()) >= 0.0


def test_tap_aliases_resolve(resnet):
    m = resnet
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 64, 64, 3))
    a = xj.explain(m, x, 5, method="gradcam", tap="layer3")
    b = xj.explain(m, x, 5, method="gradcam", tap="layer3.1.relu2")
    assert a.extras["low_res"].shape == (1, 4, 4)
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_bad_taps_and_options_are_clear_errors(small, xs):
    with pytest.raises(ValueError, match="unknown tap 'nope'"):
        xj.explain(small, xs, 0, method="gradcam", tap="nope")
    with pytest.raises(ValueError, match=r"spatial feature map.*'fc'.*\(2, 10\)"):
        xj.explain(small, xs, 0, method="gradcam", tap="fc")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        xj.explain(small, xs, 0, method="scorecam", batch_size=0)
    with pytest.raises(ValueError, match="softmax must be 'classes' or 'channels'"):
        xj.explain(small, xs, 0, method="scorecam", softmax="logits")
    with pytest.raises(TypeError, match="needs taps"):
        xj.explain(lambda z: jnp.zeros((z.shape[0], 3)), xs, 0, method="gradcam")


# ------------------------------------------------------------------------------------------------
# Grad-CAM++


def test_gradcam_pp_closed_form_equals_exponential_score_derivatives():
    """Grad-CAM++ Eq. 10 with Y = exp(S), derivatives by nested autodiff along each coordinate
    of the tap, equals the closed form (Eq. 19) up to the dropped factor exp(S)."""
    m = xj.models.get("small_cnn", num_classes=5, width=4, seed=0)
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 8, 8, 3))
    t = jnp.array([int(_top1(m, x)[0])])
    tap = "relu4"
    _, acts = m.forward(x, capture=[tap])
    a0 = acts[tap]

    def y_of(z):  # Y = exp(S) as a function of the tap activation
        out, _ = m.forward(x, edits={tap: lambda _: z})
        return jnp.exp(out[0, t[0]])

    def derivs(e):  # first, second, third derivative of Y along the coordinate direction e
        f1 = lambda z: jax.jvp(y_of, (z,), (e,))[1]
        f2 = lambda z: jax.jvp(f1, (z,), (e,))[1]
        f3 = lambda z: jax.jvp(f2, (z,), (e,))[1]
        return f1(a0), f2(a0), f3(a0)

    n = a0.size
    basis = jnp.eye(n, dtype=a0.dtype).reshape((n,) + a0.shape)
    d1, d2, d3 = (np.asarray(d, np.float64).reshape(a0.shape)
                  for d in jax.jit(jax.vmap(derivs))(basis))
    a = np.asarray(a0, np.float64)
    denom = 2 * d2 + a.sum(axis=(1, 2), keepdims=True) * d3
    alpha = np.where(denom != 0, d2 / np.where(denom != 0, denom, 1), 0)
    w_paper = (alpha * np.maximum(d1, 0)).sum(axis=(1, 2))
    ex = xj.explain(m, x, t, method="gradcam_pp", tap=tap, eps=0.0)
    s = float(m(x)[0, t[0]])
    assert np.abs(w_paper).max() > 0
    assert_rel_close(np.asarray(ex.extras["weights"]) * np.exp(s), w_paper, 1e-4)


def test_gradcam_pp_eps_and_zero_gradients(small, xs):
    t = jnp.array([1, 4])
    a, g = _acts_grads(small, xs, t, "relu4")
    for eps in (1e-6, 0.0):
        ex = xj.explain(small, xs, t, method="gradcam_pp", tap="relu4", eps=eps)
        g2, g3 = g ** 2, g ** 3
        den = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3 + eps
        alpha = np.where((g != 0) & (den != 0), g2 / np.where(den != 0, den, 1), 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
        assert_rel_close(ex.extras["weights"], w, 1e-4, f"eps={eps}")


# ------------------------------------------------------------------------------------------------
# Score-CAM and Ablation-CAM: batched programs vs plain per-channel loops


def test_interp_matrix_matches_upsample_and_align_corners_hits_the_corners():
    m = np.random.RandomState(0).rand(1, 3, 5).astype(np.float32)
    ry, rx = C.interp_matrix(3, 17, False), C.interp_matrix(5, 32, False)
    assert_rel_close(ry @ m[0] @ rx.T, mbase.upsample(jnp.asarray(m), (17, 32))[0], 1e-6)
    ry, rx = C.interp_matrix(3, 17, True), C.interp_matrix(5, 32, True)
    up = ry @ m[0] @ rx.T
    for (i, j), (p, q) in {(0, 0): (0, 0), (16, 31): (2, 4), (8, 0): (1, 0)}.items():
        assert abs(up[i, j] - m[0, p, q]) < 1e-6
    np.testing.assert_allclose(ry.sum(1), 1, atol=1e-6)


@pytest.mark.parametrize("softmax,align", [("classes", False), ("channels", True)])
def test_scorecam_equals_per_channel_loop(small, xs, softmax, align):
    t = jnp.array([3, 8])
    tap = "relu4"
    ex = xj.explain(small, xs, t, method="scorecam", tap=tap, batch_size=5, softmax=softmax,
                    align_corners=align)
    _, acts = small.forward(xs, capture=[tap])
    a = np.asarray(acts[tap])
    ry, rx = C.interp_matrix(16, 32, align), C.interp_matrix(16, 32, align)
    logit = np.zeros(a.shape[::3], np.float32)
    prob = np.zeros_like(logit)
    f = jax.jit(small.apply_fn)
    for i in range(a.shape[0]):
        for k in range(a.shape[-1]):
            up = ry @ a[i, :, :, k] @ rx.T
            mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
            out = np.asarray(f(xs[i:i + 1] * mask[None, :, :, None]))[0]
            logit[i, k] = out[int(t[i])]
            prob[i, k] = np.exp(out - out.max())[int(t[i])] / np.exp(out - out.max()).sum()
    assert_rel_close(ex.extras["scores"], logit, 1e-4)
    if softmax == "channels":
        w = np.exp(logit - logit.max(1, keepdims=True))
        w = w / w.sum(1, keepdims=True)
    else:
        w = np.where(a.max((1, 2)) == a.min((1, 2)), 0, prob)
    assert_rel_close(ex.extras["weights"], w, 1e-4)
    low = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
    assert low.max() > 0
    assert_rel_close(ex.extras["low_res"], low, 1e-4)


def test_scorecam_and_ablationcam_do_not_depend_on_batch_size(small, xs):
    t = jnp.array([3, 8])
    for meth in ("scorecam", "ablationcam"):
        a = xj.explain(small, xs, t, method=meth, batch_size=7)  # 64 channels: 10 chunks, padded
        b = xj.explain(small, xs, t, method=meth, batch_size=64)
        assert_rel_close(a.extras["weights"], b.extras["weights"], 1e-5, meth)
        assert_rel_close(a.heatmap, b.heatmap, 1e-5, meth)


def test_ablationcam_equals_per_channel_loop(small, xs):
    t = jnp.array([3, 8])
    tap = "relu3"
    ex = xj.explain(small, xs, t, method="ablationcam", tap=tap, batch_size=6)
    logits, acts = small.forward(xs, capture=[tap])
    a = np.asarray(acts[tap])
    y = np.asarray(logits)[np.arange(2), np.asarray(t)]
    f = jax.jit(lambda z: small.forward(xs, edits={tap: lambda _: z})[0])
    yk = np.zeros(a.shape[::3], np.float32)
    for k in range(a.shape[-1]):
        z = a.copy()
        z[..., k] = 0
        yk[:, k] = np.asarray(f(z))[np.arange(2), np.asarray(t)]
    w = (y[:, None] - yk) / y[:, None]
    assert_rel_close(ex.extras["scores"], yk, 1e-5)
    assert_rel_close(ex.extras["weights"], w, 1e-4)
    low = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
    assert low.max() > 0
    assert_rel_close(ex.extras["low_res"], low, 1e-4)


def _while_body_convolutions(compiled_text):
    """Number of convolutions inside the while-loop bodies (and what they call) of an HLO
    module."""
    comps = {}
    for block in re.split(r"\n(?=\S)", compiled_text):
        mm = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
        if mm:
            comps[mm.group(1)] = block

    def count(name, seen):
        if name in seen or name not in comps:
            return 0
        seen.add(name)
        c = comps[name]
        return c.count(" convolution(") + sum(
            count(callee, seen) for callee in set(re.findall(
                r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", c)))

    bodies = re.findall(r"body=%?([\w.\-]+)", compiled_text)
    assert bodies, "no while loop in the compiled program"
    return sum(count(b, set()) for b in set(bodies))


@pytest.mark.parametrize("name,tap,tail_convs", [
    ("small_cnn", "relu5", 0),      # only GAP + dense after the tap
    ("small_cnn", "relu2", 3),      # conv3..conv5
    ("resnet18", "layer4.1.conv1", 1),  # conv2 of the block; the skip input comes from the head
])
def test_ablationcam_reruns_only_the_tail(name, tap, tail_convs, small, resnet):
    """The ablation loop's compiled body holds only the convolutions after the tap: the head
    (unbatched over the masks) is computed outside the loop, once per image."""
    m = resnet if name == "resnet18" else small
    x = jnp.zeros((2, 32, 32, 3))
    f = jax.jit(lambda m, x, t: xj.methods.ablationcam(m, x, t, tap=tap, batch_size=4))
    text = f.lower(m, x, jnp.array([0, 1])).compile().as_text()
    assert _while_body_convolutions(text) == tail_convs


# ------------------------------------------------------------------------------------------------
# FEM: the K-sigma rule on hand-built activations


def _hand_built():
    """(1, 4, 4, 3): a spike channel, a constant channel and a two-level channel."""
    a = np.zeros((1, 4, 4, 3), np.float32)
    a[0, 1, 2, 0] = 8.0                      # mu = 0.5, sigma = 1.936: only the spike passes
    a[0, :, :, 1] = 2.0                      # sigma = 0: every pixel passes (a >= mu)
    a[0, :2, :, 2] = 1.0                     # half ones: mu = 0.5, sigma = 0.5: the ones pass
    return a


def test_fem_k_sigma_thresholds_and_channel_mean_weights():
    a = _hand_built()
    low, mu = C.fem_map(jnp.asarray(a), 1.0)
    np.testing.assert_allclose(mu, [[0.5, 2.0, 0.5]], rtol=1e-6)
    want = np.full((4, 4), 2.0, np.float32)  # constant channel everywhere, weight 2
    want[:2, :] += 0.5                       # the ones of channel 2 (a >= mu + sigma = 1)
    want[1, 2] += 0.5                        # the spike of channel 0
    np.testing.assert_allclose(low[0], want, rtol=1e-6)
    # K = 4: the spike (8 >= 0.5 + 4 * 1.936 = 8.25 fails) and the ones (1 < 2.5) drop out
    low4, _ = C.fem_map(jnp.asarray(a), 4.0)
    np.testing.assert_allclose(low4[0], np.full((4, 4), 2.0), rtol=1e-6)
    # K = 0: everything at or above the channel mean
    low0, _ = C.fem_map(jnp.asarray(a), 0.0)
    np.testing.assert_allclose(low0[0], want, rtol=1e-6)


def test_fem_uses_population_sigma():
    # values 0, 0, 0, 4 -> mu = 1, population sigma = sqrt(3); K = 0.99999 sqrt(3) puts the
    # threshold just below 4 (the sample sigma, 2, would put it at 4.46 and drop the 4)
    a = np.array([0.0, 0.0, 0.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    low, mu = C.fem_map(jnp.asarray(a), float(np.sqrt(3.0) * 0.99999))
    np.testing.assert_allclose(low[0], [[0, 0], [0, 1.0]], atol=1e-6)
    low, _ = C.fem_map(jnp.asarray(a), 1.8)  # threshold 4.12
    np.testing.assert_allclose(low[0], np.zeros((2, 2)), atol=0)


def test_fem_on_a_real_model_is_normalised_and_matches_eq26(resnet):
    m = resnet
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 96, 96, 3))
    ex = xj.explain(m, x, "top1", method="fem")
    _, acts = m.forward(x, capture=["layer4"])
    a = np.asarray(acts["layer4"], np.float64)
    assert a.shape == (2, 3, 3, 512)
    mu, sd = a.mean((1, 2)), a.std((1, 2))
    b = a >= (mu + sd)[:, None, None, :]
    want = np.einsum("nhwk,nk->nhw", b, mu)
    assert_rel_close(ex.extras["low_res"], want, 1e-5)
    assert_rel_close(ex.extras["weights"], mu, 1e-5)
    h = np.asarray(ex.heatmap)
    assert h.shape == (2, 96, 96)
    np.testing.assert_allclose(h.min((1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(h.max((1, 2)), 1, atol=1e-6)
    raw = xj.explain(m, x, "top1", method="fem", normalize=False).heatmap
    assert_rel_close(raw, mbase.upsample(jnp.asarray(want, jnp.float32), (96, 96)), 1e-5)


# ------------------------------------------------------------------------------------------------
# jit / vmap / no recompile / normalisation / CLI


@pytest.mark.parametrize("method", CAM_METHODS)
def test_jit_vmap_and_no_recompile(small, xs, method, compiles):
    fn = getattr(xj.methods, method)
    opts = {"batch_size": 16} if method in ("scorecam", "ablationcam") else {}
    t = jnp.array([1, 2])
    x2 = xs * 0.5 + 1.0
    ref = xj.explain(small, xs, t, method=method, **opts)  # jit(fn) with static options
    compiles.reset()
    again = xj.explain(small, x2, [5, 6], method=method, **opts)
    assert compiles.count == 0, f"new values recompiled: {compiles}"
    assert not np.allclose(again.extras["weights"], ref.extras["weights"])
    one = jax.jit(jax.vmap(lambda x1, t1: fn(small, x1[None], t1[None], **opts).heatmap[0]))
    assert_rel_close(one(xs, t), ref.heatmap, 1e-5, method)


def test_normalize_gives_unit_range_and_is_off_by_default(small, xs):
    t = _top1(small, xs)
    for method in ("gradcam", "gradcam_pp", "ablationcam"):
        raw = xj.explain(small, xs, t, method=method)
        assert (np.asarray(raw.heatmap).max((1, 2)) > 0).all(), method
        nrm = np.asarray(xj.explain(small, xs, t, method=method, normalize=True).heatmap)
        np.testing.assert_allclose(nrm.min((1, 2)), 0, atol=1e-6)
        np.testing.assert_allclose(nrm.max((1, 2)), 1, atol=1e-6)
        h = np.asarray(raw.heatmap)
        lo, hi = h.min((1, 2), keepdims=True), h.max((1, 2), keepdims=True)
        assert_rel_close(nrm, (h - lo) / (hi - lo), 1e-5, method)


def test_guided_gradcam_is_guided_backprop_times_gradcam(small, xs):
    t = _top1(small, xs)
    ex = xj.explain(small, xs, t, method="guided_gradcam", tap="relu4")
    gb = xj.explain(small, xs, t, method="guided_backprop").attribution
    gc = xj.explain(small, xs, t, method="gradcam", tap="relu4").heatmap
    assert (np.abs(np.asarray(ex.attribution)).max((1, 2, 3)) > 0).all()
    assert_rel_close(ex.attribution, gb * gc[..., None], 1e-5)
    assert_rel_close(ex.heatmap, jnp.max(jnp.abs(gb * gc[..., None]), -1), 1e-5)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_cli_runs_cam_methods(tmp_path, method):
    out = tmp_path / "o.png"
    rc = cli.main(["explain", "chelsea", "--model", "small_cnn", "--random", "--method", method,
                   "--opt", "batch_size=32" if method == "scorecam" else "tap=relu4",
                   "--out", str(out)])
    assert rc == 0 and out.exists()
