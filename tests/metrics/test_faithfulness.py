"""Deletion / insertion against a plain numpy per-step loop (RISE's ``CausalMetric``), Drop % /
Increase % and Average Drop against values worked out by hand, the errors, and one compilation
per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import xaijax as xj
from xaijax.metrics.faithfulness import CausalCurve

H, W, C, K = 4, 5, 2, 3
_WEIGHTS = np.random.default_rng(0).normal(size=(H * W * C, K)).astype(np.float32) * 0.5


def linear(x):
    """A tiny model, f(x) = vec(x) @ W, that numpy can evaluate exactly as well."""
    return jnp.dot(x.reshape(x.shape[0], -1), _WEIGHTS, precision=jax.lax.Precision.HIGHEST)


def np_linear(x):
    return np.asarray(x, np.float64).reshape(x.shape[0], -1) @ _WEIGHTS.astype(np.float64)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_curve(f, x, h, c, step, start, finish, score="softmax"):
    """RISE's ``CausalMetric.single_run`` for one image, in numpy: pixels in decreasing order of
    ``h`` (a stable sort), ``step`` per step, copied from ``finish`` into ``start``."""
    hw = h.size
    n_steps = (hw + step - 1) // step
    order = np.argsort(-h.reshape(-1), kind="stable")
    cur = start.reshape(hw, -1).copy()
    fin = finish.reshape(hw, -1)
    scores = np.empty(n_steps + 1)
    for i in range(n_steps + 1):
        z = f(cur.reshape(1, *x.shape))[0]
        scores[i] = {"softmax": _softmax(z), "logit": z, "sigmoid": 1 / (1 + np.exp(-z))}[score][c]
        if i < n_steps:
            coords = order[step * i: step * (i + 1)]
            cur[coords] = fin[coords]
    frac = np.minimum(np.arange(n_steps + 1) * step, hw) / hw
    return scores, np.trapezoid(scores, frac)


def rise_auc(arr):
    """RISE's ``auc``: evenly spaced points."""
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, H, W, C)).astype(np.float32)
    h = rng.normal(size=(3, H, W)).astype(np.float32)
    h[1] = np.round(h[1])                    # many ties
    h[2] = 0.0                               # all ties
    return x, h


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("step, score, batch_size", [(None, "softmax", 64), (3, "logit", 7),
                                                     (1, "sigmoid", 1), (20, "softmax", 5)])
def test_causal_curves_match_numpy_loop(data, mode, step, score, batch_size):
    x, h = data
    t = np.array([0, 2, 1])
    sub = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    r = getattr(xj.metrics, mode)(linear, x, h, t, step=step, substrate=sub, score=score,
                                  batch_size=batch_size)
    assert isinstance(r, CausalCurve)
    s = W if step is None else step
    for i in range(3):
        start, finish = (x[i], sub[i]) if mode == "deletion" else (sub[i], x[i])
        curve, auc = reference_curve(np_linear, x[i], h[i], t[i], s, start, finish, score)
        np.testing.assert_allclose(r.curve[i], curve, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.auc[i], auc, rtol=1e-5, atol=1e-6)
        if (H * W) % s == 0:                     # evenly spaced: RISE's own auc
            np.testing.assert_allclose(r.auc[i], rise_auc(curve), rtol=1e-5, atol=1e-6)
    steps = -(-H * W // s)
    np.testing.assert_allclose(r.fraction, np.minimum(np.arange(steps + 1) * s, H * W) / (H * W))
    # ends: deletion starts at the image and ends at the substrate; insertion the other way
    first, last = (x, sub) if mode == "deletion" else (sub, x)
    np.testing.assert_allclose(r.curve[:, 0], _pick(np_linear(first), t, score), rtol=1e-5)
    np.testing.assert_allclose(r.curve[:, -1], _pick(np_linear(last), t, score), rtol=1e-5)


def _pick(z, t, score):
    z = {"softmax": _softmax(z), "logit": z, "sigmoid": 1 / (1 + np.exp(-z))}[score]
    return z[np.arange(len(t)), t]


def test_ties_follow_row_major_order_and_rise_agrees_without_ties(data):
    x, _ = data
    # distinct values: RISE's np.flip(np.argsort(...)) order is ours
    h = np.random.default_rng(3).permutation(H * W).reshape(1, H, W).astype(np.float32)
    r = xj.metrics.deletion(linear, x[:1], h, 0, step=2)
    order = np.flip(np.argsort(h.reshape(1, -1), axis=1), axis=-1)[0]
    cur = x[0].reshape(H * W, C).copy()
    want = []
    for i in range(11):
        want.append(_softmax(np_linear(cur.reshape(1, H, W, C)))[0, 0])
        cur[order[2 * i: 2 * i + 2]] = 0.0
    np.testing.assert_allclose(r.curve[0], want, rtol=1e-5)
    # an all-zero map with -0.0 and +0.0: one tie, removed in row-major order
    z = np.zeros((1, H, W), np.float32)
    z[0, 0, ::2] = -0.0
    r0 = xj.metrics.deletion(linear, x[:1], z, 0, step=1)
    cur = x[0].reshape(H * W, C).copy()
    for i in range(H * W):
        cur[i] = 0.0
        np.testing.assert_allclose(r0.curve[0, i + 1],
                                   _softmax(np_linear(cur.reshape(1, H, W, C)))[0, 0], rtol=1e-5)


def test_default_substrates(data):
    x, h = data
    d = xj.metrics.deletion(linear, x, h, 1)            # zeros
    curve, _ = reference_curve(np_linear, x[0], h[0], 1, W, x[0], np.zeros_like(x[0]))
    np.testing.assert_allclose(d.curve[0], curve, rtol=1e-5, atol=1e-6)
    # blur: masks.gaussian_blur with zero padding = scipy's constant-mode Gaussian, radius 4σ
    ins = xj.metrics.insertion(linear, x, h, 1, blur_sigma=1.0)
    blur = scipy.ndimage.gaussian_filter(x.astype(np.float64), (0, 1, 1, 0), mode="constant",
                                         truncate=4.0)
    for i in range(3):
        curve, auc = reference_curve(np_linear, x[i], h[i], 1, W, blur[i], x[i])
        np.testing.assert_allclose(ins.curve[i], curve, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ins.auc[i], auc, rtol=1e-4, atol=1e-6)


def test_top1_is_the_prediction_on_the_image(data):
    x, h = data
    top = np.argmax(np_linear(x), -1)
    for fn in (xj.metrics.deletion, xj.metrics.insertion):
        np.testing.assert_allclose(fn(linear, x, h, "top1").curve, fn(linear, x, h, top).curve,
                                   rtol=1e-6)


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10)


def test_zoo_model_matches_per_step_loop(small):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    h = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32))
    r = xj.metrics.deletion(small, x, h, "top1", step=128, batch_size=5)
    assert r.curve.shape == (2, 9) and r.auc.shape == (2,)
    xs, hs = np.asarray(x), np.asarray(h)
    t = np.argmax(np.asarray(small(x)), -1)
    for i in range(2):
        order = np.argsort(-hs[i].reshape(-1), kind="stable")
        imgs = []
        cur = xs[i].reshape(-1, 3).copy()
        for s in range(9):
            imgs.append(cur.reshape(32, 32, 3).copy())
            cur[order[128 * s: 128 * (s + 1)]] = 0.0
        p = np.asarray(jax.nn.softmax(small(jnp.asarray(np.stack(imgs))), -1))[:, t[i]]
        np.testing.assert_allclose(r.curve[i], p, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r.auc[i], rise_auc(p), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fn", ["deletion", "insertion", "drop_increase", "average_drop"])
def test_compiles_once_per_shape(small, fn, compiles):
    f = getattr(xj.metrics, fn)
    opts = dict(step=256, batch_size=4) if fn in ("deletion", "insertion") else {}
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    x1, x2 = (jax.random.normal(k, (2, 32, 32, 3)) for k in keys[:2])
    h1, h2 = (jax.random.normal(k, (2, 32, 32)) for k in keys[2:])
    for target in ("top1", np.array([1, 2])):
        f(small, x1, h1, target, **opts)
        compiles.reset()
        f(small, x2, h2, target if isinstance(target, str) else target + 1, **opts)
        assert compiles.count == 0, (target, compiles)
    f(linear, x1[:, :H, :W, :C], h1[:, :H, :W], 0, **({"step": 4} if "step" in opts else {}))
    compiles.reset()
    f(linear, x2[:, :H, :W, :C], h2[:, :H, :W], 1, **({"step": 4} if "step" in opts else {}))
    assert compiles.count == 0, compiles


def test_deletion_under_jit(data):
    x, h = data
    got = jax.jit(lambda a, b: xj.metrics.deletion(linear, a, b, 0, step=3).auc)(x, h)
    np.testing.assert_allclose(got, xj.metrics.deletion(linear, x, h, 0, step=3).auc, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Drop % / Increase %


def sum_model(x):
    """logits [sum(x), 0]: the softmax confidence of class 0 is sigmoid(sum(x))."""
    s = jnp.sum(x, axis=(1, 2, 3))
    return jnp.stack([s, jnp.zeros_like(s)], axis=1)


def _sig(v):
    return 1 / (1 + np.exp(-v))


def test_drop_increase_by_hand():
    x = np.array([[[1.0, 2.0], [3.0, 4.0]],
                  [[1.0, -5.0], [2.0, 2.0]],
                  [[1.0, 2.0], [3.0, 4.0]]], np.float32)[..., None]
    h = np.array([[[1.0, 2.0], [3.0, 4.0]],          # keeps 3, 4: sum 7 < 10
                  [[9.0, 1.0], [9.0, 0.0]],          # keeps 1, 2: sum 3 > 0
                  [[0.0, 0.0], [0.0, 0.0]]],         # tie: keeps the first two, 1 and 2
                 np.float32)
    r = xj.metrics.drop_increase(sum_model, x, h, 0, top=0.5)
    y = _sig(np.array([10.0, 0.0, 10.0]))
    o = _sig(np.array([7.0, 3.0, 3.0]))
    np.testing.assert_allclose(r.score, y, rtol=1e-6)
    np.testing.assert_allclose(r.masked_score, o, rtol=1e-6)
    # in %: float32 cancellation in Y - O leaves ~1e-5 points
    np.testing.assert_allclose(r.drop, 100 * np.maximum(y - o, 0) / y, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r.increase, [0.0, 100.0, 0.0])
    # the default top 15 % of 4 pixels rounds to 1 pixel
    r1 = xj.metrics.drop_increase(sum_model, x, h, 0)
    np.testing.assert_allclose(r1.masked_score, _sig(np.array([4.0, 1.0, 1.0])), rtol=1e-6)


def test_average_drop_by_hand():
    x = np.array([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]], np.float32)[..., None]
    h = np.array([[[2.0, 1.0], [0.0, -1.0]],          # L = [1, .5, 0, 0]: sum 2
                  [[0.0, 0.0], [0.0, 0.0]]], np.float32)   # L = 0: E = 0, sum 0
    r = xj.metrics.average_drop(sum_model, x, h, 0)
    y = _sig(10.0)
    o = _sig(np.array([2.0, 0.0]))
    np.testing.assert_allclose(r.drop, 100 * (y - o) / y, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r.increase, [0.0, 0.0])
    # scaling the map does not matter; a map that raises the score counts as an increase
    r2 = xj.metrics.average_drop(sum_model, -x, 3 * h, 0)
    np.testing.assert_array_equal(r2.drop, [0.0, 0.0])
    np.testing.assert_array_equal(r2.increase, [100.0, 100.0])


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("fn", ["deletion", "insertion", "drop_increase", "average_drop"])
def test_shape_errors(data, fn):
    x, h = data
    f = getattr(xj.metrics, fn)
    with pytest.raises(ValueError, match=rf"{fn}: heatmap must be \(N, H, W\) = \(3, 4, 5\).*"
                                         r"upsample"):
        f(linear, x, h[:, :2])
    with pytest.raises(ValueError, match="per-channel map"):
        f(linear, x, x)
    with pytest.raises(ValueError, match=r"NCHW"):
        f(xj.models.get("small_cnn", num_classes=10), np.zeros((1, 3, 32, 32), np.float32),
          np.zeros((1, 3, 32), np.float32))
    with pytest.raises(ValueError, match=rf"{fn}: heatmap contains 1 NaN"):
        f(linear, x, np.where(np.arange(60).reshape(3, 4, 5) == 7, np.nan, h))
    with pytest.raises(ValueError, match="shape"):
        f(linear, x, h, np.array([0, 1]))


def test_option_errors(data):
    x, h = data
    with pytest.raises(ValueError, match="step must be a positive int"):
        xj.metrics.deletion(linear, x, h, step=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        xj.metrics.insertion(linear, x, h, batch_size=2.0)
    with pytest.raises(ValueError, match="substrate must be one of"):
        xj.metrics.deletion(linear, x, h, substrate="mean")
    with pytest.raises(ValueError, match="must broadcast to x"):
        xj.metrics.deletion(linear, x, h, substrate=np.zeros((2, 4, 5, 2)))
    with pytest.raises(ValueError, match="score must be one of"):
        xj.metrics.deletion(linear, x, h, score="prob")
    with pytest.raises(ValueError, match="blur_sigma must be a positive"):
        xj.metrics.insertion(linear, x, h, blur_sigma=0.0)
    with pytest.raises(ValueError, match=r"top must be a fraction of the pixels in \(0, 1\]"):
        xj.metrics.drop_increase(linear, x, h, top=15)
    with pytest.raises(ValueError, match=r"score must be one of \('softmax', 'sigmoid'\)"):
        xj.metrics.average_drop(linear, x, h, score="logit")
    with pytest.raises(ValueError, match="unknown class 3"):
        xj.metrics.drop_increase(linear, x, h, 3)
