"""DeepLIFT rules against closed-form computations, and summation-to-delta (survey Eq. 19)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.nn import layers as L
from xaijax.rules import deeplift as dl

RNG = np.random.RandomState(0)


def _cat(x, r):
    return jnp.concatenate([jnp.asarray(x), jnp.asarray(r)], axis=0)


def test_rescale_multiplier_is_delta_out_over_delta_in():
    x = np.array([[2.0, -1.0, 3.0, 0.5]], np.float32)
    r = np.array([[-1.0, -2.0, 1.0, 0.5]], np.float32)        # last: Δ = 0 -> gradient
    g = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    _, vjp = jax.vjp(lambda v: dl.rescale(L.ReLU(), {}, v), _cat(x, r))
    m = np.asarray(vjp(_cat(g, g))[0])[:1]
    expected = np.array([[1.0 * 2 / 3, 0.0, 3.0 * 2 / 2, 4.0]], np.float32)
    np.testing.assert_allclose(m, expected, rtol=1e-6)


def test_maxpool_rule_routes_to_both_argmaxes():
    # one 2x2 window: x max 5 at (0,0); reference max 4 at (1,1)
    x = np.array([5.0, 1.0, 2.0, 3.0], np.float32).reshape(1, 2, 2, 1)
    r = np.array([0.0, 2.0, 1.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    g = np.full((1, 1, 1, 1), 2.0, np.float32)
    _, vjp = jax.vjp(lambda v: dl.maxpool(L.MaxPool(window=2), {}, v), _cat(x, r))
    m = np.asarray(vjp(_cat(g, g))[0])[:1].reshape(4)
    u = 5.0
    d = (x - r).reshape(4)
    expected = np.zeros(4)
    expected[0] += 2.0 * (u - 4.0) / d[0]       # to x's arg-max
    expected[3] += 2.0 * (5.0 - u) / d[3]       # to the reference's arg-max (0 here)
    np.testing.assert_allclose(m, expected, rtol=1e-6)
    assert np.isclose((m * d).sum(), 2.0 * (5.0 - 4.0))  # summation-to-delta


def test_reveal_cancel_matches_closed_form_on_a_dense_relu():
    x = RNG.randn(1, 4).astype(np.float32)
    r = RNG.randn(1, 4).astype(np.float32)
    w = RNG.randn(4, 3).astype(np.float32)
    b = RNG.randn(3).astype(np.float32)
    g = RNG.randn(1, 3).astype(np.float32)
    rule = dl.reveal_cancel_linear(L.ReLU(), {})
    p = {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
    _, vjp = jax.vjp(lambda v: rule(L.Dense(features=3), p, v), _cat(x, r))
    m = np.asarray(vjp(_cat(g, g))[0])[:1]
    # closed form (survey Eq. 22-25, Shrikumar et al. 2017 §3.5.1)
    d = (x - r)[0]
    terms = d[:, None] * w                               # (in, out): w_ij Δx_i
    dyp, dyn = np.where(terms > 0, terms, 0).sum(0), np.where(terms < 0, terms, 0).sum(0)
    y0 = r[0] @ w + b
    relu = lambda v: np.maximum(v, 0)
    dzp = 0.5 * (relu(y0 + dyp) - relu(y0)) + 0.5 * (relu(y0 + dyp + dyn) - relu(y0 + dyn))
    dzn = 0.5 * (relu(y0 + dyn) - relu(y0)) + 0.5 * (relu(y0 + dyn + dyp) - relu(y0 + dyp))
    mp, mn = dzp / dyp, dzn / dyn
    expected = np.array([sum(w[i, j] * g[0, j] * (mp[j] if terms[i, j] > 0 else mn[j])
                             for j in range(3)) for i in range(4)])
    np.testing.assert_allclose(m[0], expected, rtol=1e-5, atol=1e-6)
    # summation-to-delta through the layer: Σ m Δx = Σ g Δz
    dz = relu(x[0] @ w + b) - relu(y0)
    np.testing.assert_allclose((m[0] * d).sum(), (g[0] * dz).sum(), rtol=1e-5)


def test_reveal_cancel_differs_from_rescale_when_terms_cancel():
    # y0 = -1, Δy⁺ = 3, Δy⁻ = -2.5: Rescale gives m = 0 (Δz = 0) but RevealCancel reveals both
    x = np.array([[3.0, 2.5]], np.float32)
    r = np.zeros((1, 2), np.float32)
    w = np.array([[1.0], [-1.0]], np.float32)
    p = {"kernel": jnp.asarray(w), "bias": jnp.asarray([-1.0])}
    rule = dl.reveal_cancel_linear(L.ReLU(), {})
    _, vjp = jax.vjp(lambda v: rule(L.Dense(features=1), p, v), _cat(x, r))
    m = np.asarray(vjp(_cat(np.ones((1, 1)), np.ones((1, 1))))[0])[0]
    # Δz⁺ = ½(relu(2) − 0) + ½(0 − 0) = 1; Δz⁻ = ½·0 + ½(0 − relu(2)) = −1
    np.testing.assert_allclose(m, [1.0 / 3.0, (-1.0 / -2.5) * -1.0], rtol=1e-6)


@pytest.mark.parametrize("rule,maxpool", [("rescale", "rule"), ("reveal_cancel", "rule"),
                                          ("rescale", "gradient")])
def test_summation_to_delta_on_small_cnn(rule, maxpool):
    m = xj.models.get("small_cnn", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    base = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3)) * 0.5
    ex = xj.explain(m, x, jnp.array([3, 7]), method="deeplift", baseline=base, rule=rule,
                    maxpool=maxpool)
    dS = np.asarray(ex.extras["score"] - ex.extras["reference_score"])
    total = np.asarray(ex.attribution).reshape(2, -1).sum(1)
    if maxpool == "rule":   # exact (Eq. 19)
        np.testing.assert_allclose(total, dS, rtol=1e-4, atol=1e-4 * np.abs(dS).max())
        np.testing.assert_allclose(np.asarray(ex.extras["delta"]), total - dS, atol=1e-6)
    else:                   # winner-take-all max pooling is not exact for a random reference
        assert np.abs(total - dS).max() > 1e-4 * np.abs(dS).max()
