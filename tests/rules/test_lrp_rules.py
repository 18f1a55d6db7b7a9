"""LRP rules against independent closed-form numpy computations on tiny layers, conservation
through every layer type, and the BatchNorm canonizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.models.vgg import Sequential
from xaijax.nn import layers as L
from xaijax.rules import canonizers
from xaijax.rules import lrp

RNG = np.random.RandomState(0)
A = RNG.randn(3, 5).astype(np.float32)          # 3 samples, 5 inputs (signed)
W = RNG.randn(5, 4).astype(np.float32)          # dense kernel (in, out)
B = RNG.randn(4).astype(np.float32)
R = RNG.randn(3, 4).astype(np.float32)          # incoming relevance


def _stab(z, e):
    return z + e * np.where(z >= 0, 1.0, -1.0)


def _relevance(rule, layer, params, a, r):
    _, vjp = jax.vjp(lambda v: rule(layer, params, v), jnp.asarray(a))
    return np.asarray(vjp(jnp.asarray(r))[0])


def _dense_params():
    return {"kernel": jnp.asarray(W), "bias": jnp.asarray(B)}


def test_rule_forward_is_the_layer_forward():
    layer = L.Dense(features=4)
    for rule in (lrp.epsilon(0.1), lrp.zplus(), lrp.alpha_beta(), lrp.gamma(), lrp.norm()):
        y = rule(layer, _dense_params(), jnp.asarray(A))
        np.testing.assert_allclose(np.asarray(y), A @ W + B, rtol=1e-5, atol=1e-5)


def test_epsilon_rule_matches_closed_form():
    eps = 0.3
    z = A @ W + B
    expected = A * ((R / _stab(z, eps)) @ W.T)     # R_i = Σ_j a_i w_ij / (z_j + ε sign z_j) R_j
    got = _relevance(lrp.epsilon(eps), L.Dense(features=4), _dense_params(), A, R)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lrp0_conserves_without_bias():
    p = {"kernel": jnp.asarray(W)}
    got = _relevance(lrp.lrp0(), L.Dense(features=4, use_bias=False), p, A, R)
    np.testing.assert_allclose(got.sum(1), R.sum(1), rtol=1e-4)


def test_zplus_rule_matches_closed_form():
    ap, an = np.maximum(A, 0), np.minimum(A, 0)
    wp, wn = np.maximum(W, 0), np.minimum(W, 0)
    z = ap @ wp + an @ wn + np.maximum(B, 0)
    s = R / _stab(z, 1e-6)
    expected = ap * (s @ wp.T) + an * (s @ wn.T)
    got = _relevance(lrp.zplus(), L.Dense(features=4), _dense_params(), A, R)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_alpha_beta_rule_matches_closed_form():
    alpha, beta = 3.0, 2.0
    ap, an = np.maximum(A, 0), np.minimum(A, 0)
    wp, wn = np.maximum(W, 0), np.minimum(W, 0)
    zp = ap @ wp + an @ wn + np.maximum(B, 0)          # Σ (a w)⁺ incl. positive bias
    zn = ap @ wn + an @ wp + np.minimum(B, 0)          # Σ (a w)⁻ incl. negative bias
    sp, sn = R / _stab(zp, 1e-6), R / _stab(zn, 1e-6)
    expected = alpha * (ap * (sp @ wp.T) + an * (sp @ wn.T)) - beta * (
        ap * (sn @ wn.T) + an * (sn @ wp.T))
    got = _relevance(lrp.alpha_beta(alpha, beta), L.Dense(features=4), _dense_params(), A, R)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_alpha_beta_requires_alpha_equal_beta_plus_one():
    with pytest.raises(ValueError, match="α = β \\+ 1"):
        lrp.alpha_beta(2.0, 2.0)


def test_gamma_rule_matches_eq14_for_positive_inputs():
    g = 0.5
    a = np.abs(A)                                       # ReLU outputs: Eq. 14 applies as written
    wg = W + g * np.maximum(W, 0)
    bg = B + g * np.maximum(B, 0)
    z = A @ W + B
    zg = a @ wg + bg
    zg_neg = a @ (W + g * np.minimum(W, 0)) + B + g * np.minimum(B, 0)
    z = a @ W + B
    expected = a * (((z > 0) * R / _stab(zg, 1e-6)) @ wg.T) + a * (
        ((z < 0) * R / _stab(zg_neg, 1e-6)) @ (W + g * np.minimum(W, 0)).T)
    got = _relevance(lrp.gamma(g), L.Dense(features=4), _dense_params(), a, R)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_zbox_rule_matches_closed_form_on_a_conv():
    # 1 image 3x3x2, conv 2x2 valid, 3 filters
    x = RNG.randn(1, 3, 3, 2).astype(np.float32)
    k = RNG.randn(2, 2, 2, 3).astype(np.float32)
    b = RNG.randn(3).astype(np.float32)
    low, high = np.array([-1.0, -2.0], np.float32), np.array([1.5, 2.5], np.float32)
    r = RNG.randn(1, 2, 2, 3).astype(np.float32)
    kp, kn = np.maximum(k, 0), np.minimum(k, 0)
    expected = np.zeros_like(x)
    for i in range(2):
        for j in range(2):
            patch = x[0, i:i + 2, j:j + 2, :]
            lo = np.broadcast_to(low, patch.shape)
            hi = np.broadcast_to(high, patch.shape)
            for f in range(3):
                num = patch * k[..., f] - lo * kp[..., f] - hi * kn[..., f]
                # Montavon et al. 2017: no bias in zᴮ (it cancels: b − b⁺ − b⁻ = 0)
                expected[0, i:i + 2, j:j + 2, :] += num / _stab(num.sum(), 1e-6) * r[0, i, j, f]
    layer = L.Conv(features=3, kernel_size=2)
    got = _relevance(lrp.zbox(low, high), layer, {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)},
                     x, r)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_epsilon_rule_matches_closed_form_on_a_strided_conv():
    x = RNG.randn(1, 5, 5, 2).astype(np.float32)
    k = RNG.randn(3, 3, 2, 2).astype(np.float32)
    r = RNG.randn(1, 2, 2, 2).astype(np.float32)
    eps = 0.1
    expected = np.zeros_like(x)
    for i in range(2):
        for j in range(2):
            patch = x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            for f in range(2):
                c = patch * k[..., f]
                expected[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :] += c / _stab(c.sum(), eps) * r[0, i, j, f]
    layer = L.Conv(features=2, kernel_size=3, strides=2, use_bias=False)
    got = _relevance(lrp.epsilon(eps), layer, {"kernel": jnp.asarray(k)}, x, r)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_norm_rule_splits_a_sum_in_proportion():
    a, b = RNG.rand(2, 4).astype(np.float32), -RNG.rand(2, 4).astype(np.float32) * 0.3
    r = RNG.randn(2, 4).astype(np.float32)
    _, vjp = jax.vjp(lambda u, v: lrp.norm()(L.Add(), {}, u, v), jnp.asarray(a), jnp.asarray(b))
    ra, rb = (np.asarray(t) for t in vjp(jnp.asarray(r)))
    s = _stab(a + b, 1e-6)
    np.testing.assert_allclose(ra, a / s * r, rtol=1e-5)
    np.testing.assert_allclose(rb, b / s * r, rtol=1e-5)
    np.testing.assert_allclose(ra + rb, r, rtol=1e-4, atol=1e-6)


def test_pass_rule_hands_relevance_through_a_relu():
    x = jnp.asarray(A)
    _, vjp = jax.vjp(lambda v: lrp.pass_rule(L.ReLU(), {}, v), x)
    np.testing.assert_array_equal(np.asarray(vjp(jnp.ones_like(x))[0]), np.ones_like(A))


def test_hyper_parameters_are_traced():
    layer = L.Dense(features=4)
    f = jax.jit(lambda e, a: jax.vjp(lambda v: lrp.epsilon(e)(layer, _dense_params(), v), a)[1](
        jnp.asarray(R))[0])
    f(jnp.float32(0.1), jnp.asarray(A))
    f(jnp.float32(0.7), jnp.asarray(A))
    assert f._cache_size() == 1


# ------------------------------------------------------------------------------------------------
# conservation through every layer type (survey Eq. 11)


def _tiny_model(bias: bool, bn: bool = False):
    items = [("conv1", "Conv", dict(features=4, kernel_size=3, padding=1, use_bias=bias))]
    if bn:
        items.append(("bn1", "BatchNorm", {}))
    items += [
        ("relu1", "ReLU", {}),
        ("pool1", "MaxPool", dict(window=2, strides=2)),
        ("conv2", "Conv", dict(features=4, kernel_size=3, padding=1, use_bias=bias)),
        ("relu2", "ReLU6", {}),
        ("pool2", "AvgPool", dict(window=2, strides=2)),
        ("gap", "AdaptiveAvgPool", dict(output_size=2)),
        ("flatten", "Flatten", {}),
        ("fc", "Dense", dict(features=3, use_bias=bias)),
    ]
    mod = Sequential(items=tuple(items))
    x = jnp.zeros((1, 16, 16, 3))
    v = mod.init(jax.random.PRNGKey(0), x)
    if bn:
        p = dict(v["params"])
        p["bn1"] = {"scale": jnp.asarray(RNG.rand(4) + 0.5, jnp.float32),
                    "bias": jnp.asarray(RNG.randn(4) * 0.1, jnp.float32),
                    "mean": jnp.asarray(RNG.randn(4) * 0.1, jnp.float32),
                    "var": jnp.asarray(RNG.rand(4) + 0.5, jnp.float32)}
        v = {"params": p}
    return xj.models.wrap(mod, v, input_size=(16, 16), num_classes=3, mean=(0.0,) * 3,
                          std=(1.0,) * 3, name="tiny", min_size=8)


@pytest.mark.parametrize("composite", ["lrp0", "zplus"])
def test_relevance_is_conserved_layer_to_layer_without_biases(composite):
    m = _tiny_model(bias=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    t = jnp.array([0, 2])
    comp = lrp.composite(composite)
    taps = [tp for tp in m.taps]

    def total(deltas, z):
        logits, _ = m.forward(z, edits={k: (lambda a, k=k: a + deltas[k]) for k in taps},
                              rules=comp)
        s = jnp.take_along_axis(logits, t[:, None], 1)[:, 0]
        return jnp.sum(s * jax.lax.stop_gradient(s)), s

    _, acts = m.forward(x, capture=True)
    deltas = {k: jnp.zeros_like(acts[k]) for k in taps}
    (g_taps, g_x), s = jax.jit(jax.grad(total, argnums=(0, 1), has_aux=True))(deltas, x)
    # relevance at each layer's output = the (modified) gradient there; the LRP sum is Σ R
    for k in taps:
        rk = np.asarray(g_taps[k]).reshape(2, -1).sum(1)
        if m.tap_type(k) in ("ReLU", "ReLU6", "Dense", "Conv", "MaxPool", "AvgPool",
                             "AdaptiveAvgPool", "Flatten"):
            np.testing.assert_allclose(rk, np.asarray(s), rtol=2e-4, err_msg=k)
    np.testing.assert_allclose(np.asarray(g_x).reshape(2, -1).sum(1), np.asarray(s), rtol=2e-4)


def test_biases_and_epsilon_absorb_relevance():
    m = _tiny_model(bias=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    t = jnp.array([0, 2])
    lrp_jit = jax.jit(xj.methods.lrp, static_argnames=("composite",))
    ex0 = lrp_jit(m, x, t, composite="lrp0")
    exe = lrp_jit(m, x, t, composite="epsilon", epsilon=1.0)
    # with biases LRP-0 leaks exactly what the bias neurons receive: check against the
    # bias-free network it is no longer conserved, and ε takes away more relevance
    leak0 = np.abs(np.asarray(ex0.extras["relevance_sum"] - ex0.extras["score"]))
    leake = np.abs(np.asarray(exe.extras["relevance_sum"] - exe.extras["score"]))
    assert (leak0 > 1e-6).all()
    assert (np.abs(np.asarray(exe.extras["relevance_sum"])) < np.abs(
        np.asarray(ex0.extras["relevance_sum"])) + leak0).all()
    assert leake.sum() > 0


# ------------------------------------------------------------------------------------------------
# canonizer


def test_merge_batchnorm_is_exact_and_makes_batchnorm_the_identity():
    m = _tiny_model(bias=False, bn=True)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 3))
    c, folded = canonizers.merge_batchnorm(m)
    assert folded == (("bn1",),)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda mm, z: mm(z))(c, x)),
                               np.asarray(jax.jit(lambda mm, z: mm(z))(m, x)), rtol=1e-5,
                               atol=1e-5)
    _, acts = c.forward(x, capture=["conv1", "bn1"])
    np.testing.assert_allclose(np.asarray(acts["bn1"]), np.asarray(acts["conv1"]), atol=1e-6)
    assert "bias" in c.variables["params"]["conv1"]       # a bias-free conv gains one
    assert "bias" not in m.variables["params"]["conv1"]   # the input model is untouched


def test_merge_batchnorm_folds_every_resnet_batchnorm():
    if "resnet18" not in xj.models.available():
        pytest.skip("resnet18 is not registered in the zoo yet")
    m = xj.models.get("resnet18")
    g = canonizers.layer_graph(m, (1, 32, 32, 3))
    n_bn = sum(isinstance(n.layer, L.BatchNorm) for n in g)
    assert len(canonizers.foldable_batchnorms(g)) == n_bn == 20
