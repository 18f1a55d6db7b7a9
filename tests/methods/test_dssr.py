"""DSSR (Gu 2020): loss terms of Eq. 4–5 against hand computation, the two-stage λ switch, the
evidence side of the mask, and jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from tests.helpers import assert_compiles_once
import importlib

D = importlib.import_module("xaijax.methods.dssr")  # the module (xj.methods.dssr is the function)


def _np_pool(a, k, s, p, op, pad_value):
    a = np.pad(a, p, constant_values=pad_value)
    n = (a.shape[0] - k) // s + 1
    return np.array([[op(a[i * s:i * s + k, j * s:j * s + k]) for j in range(n)]
                     for i in range(n)])


def test_pools_match_hand_computation():
    m = np.random.default_rng(0).uniform(size=(9, 9)).astype(np.float32)
    np.testing.assert_allclose(D.max_pool(jnp.asarray(m), 4, 1, 2),
                               _np_pool(m, 4, 1, 2, np.max, -np.inf), rtol=1e-6)
    np.testing.assert_allclose(D.avg_pool(jnp.asarray(m), 3, 1, 0),
                               _np_pool(m, 3, 1, 0, np.mean, 0.0), rtol=1e-6)
    assert D.mask_size(224, 16, 1, 0) == 239  # avgp(m | 16, 1, 0) is 224 wide
    # a stack of masks is pooled mask by mask; the regulariser is one sum per mask
    ms = np.stack([m, m[::-1], 1 - m])
    for i in range(3):
        np.testing.assert_allclose(D.max_pool(jnp.asarray(ms), 4, 1, 2)[i],
                                   _np_pool(ms[i], 4, 1, 2, np.max, -np.inf), rtol=1e-6)
        np.testing.assert_allclose(D.avg_pool(jnp.asarray(ms), 3, 1, 0)[i],
                                   _np_pool(ms[i], 3, 1, 0, np.mean, 0.0), rtol=1e-6)
    np.testing.assert_allclose(D.regulariser(jnp.asarray(ms), 3, 1, 1),
                               [float(D.regulariser(jnp.asarray(a), 3, 1, 1)) for a in ms],
                               rtol=1e-6)


def test_regulariser_is_sum_of_window_minima_and_grads_the_window_minimum():
    # the 4x4 example of Gu §3.4 with a 2x2 window, stride 1, no padding
    m = jnp.array([[1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], jnp.float32)
    mins = _np_pool(np.asarray(m), 2, 1, 0, np.min, np.inf)
    assert float(D.regulariser(m, 2, 1, 0)) == pytest.approx(mins.sum())
    g = np.asarray(jax.grad(D.regulariser)(m + jnp.arange(16.0).reshape(4, 4) * 1e-3, 2, 1, 0))
    # only the smallest entry of each window receives gradient (one per window)
    assert g.sum() == pytest.approx(9.0)
    assert g[1, 0] > 0 and g[0, 3] == 0


def test_loss_matches_eq4_eq5_by_hand():
    rng = np.random.default_rng(1)
    h = 6
    x = rng.normal(size=(h, h, 3)).astype(np.float32)
    r = rng.uniform(size=(h, h, 3)).astype(np.float32)
    m = rng.uniform(size=(h + 2, h + 2)).astype(np.float32)  # avgp k2=3 -> h
    w = rng.normal(size=(h * h * 3, 4)).astype(np.float32)
    t = 2

    def f_score(z):
        return jax.nn.softmax(z.reshape(-1) @ w)[t]

    def np_score(z):
        lg = z.reshape(-1) @ w
        e = np.exp(lg - lg.max())
        return (e / e.sum())[t]

    lam = 0.3
    loss, (s_del, s_pre, reg) = D.dssr_loss(f_score, jnp.asarray(x), jnp.asarray(r),
                                            jnp.asarray(m), lam, k1=2, s1=1, p1=1, k2=3, s2=1,
                                            p2=0)
    mbar = _np_pool(m, 3, 1, 0, np.mean, 0.0)[..., None]
    x_keep = mbar * x + (1 - mbar) * r  # x_{r, m̄}
    x_pres = (1 - mbar) * x + mbar * r  # x_{r, 1 - m̄}
    reg_hand = np.sum(1 - _np_pool(1 - m, 2, 1, 1, np.max, -np.inf))
    assert float(s_del) == pytest.approx(np_score(x_keep), rel=1e-5)
    assert float(s_pre) == pytest.approx(np_score(x_pres), rel=1e-5)
    assert float(reg) == pytest.approx(reg_hand, rel=1e-5)
    assert float(loss) == pytest.approx(np_score(x_keep) - np_score(x_pres) - lam * reg_hand,
                                        rel=1e-5)


def _region_model(h=24, c=3):
    """A function model whose class 1 logit is driven only by a 8x8 square of the image."""
    sel = np.zeros((h, h, c), np.float32)
    sel[4:12, 10:18] = 1.0

    def f(z):
        s = jnp.sum(z * sel, axis=(1, 2, 3)) / sel.sum()  # 1 for x = 1, ~0.5 for U(0, 1)
        return jnp.stack([jnp.zeros_like(s), 20.0 * s - 15.0], axis=-1)

    return f, sel[..., 0]


def test_evidence_is_one_minus_mask_and_lands_on_the_region():
    f, region = _region_model()
    x = jnp.ones((1, 24, 24, 3)) * 1.0
    ex = xj.explain(f, x, 1, method="dssr", iterations=60, k1=3, p1=1, k2=3,
                    lam=2.0 / 24 ** 2, reference_space="normalised", key=jax.random.PRNGKey(0))
    heat = np.asarray(ex.heatmap[0])
    np.testing.assert_allclose(heat, 1.0 - np.asarray(ex.extras["mask_avg"][0]), atol=1e-6)
    inside, outside = heat[region > 0].mean(), heat[region == 0].mean()
    assert inside > 0.5 and outside < 0.25, (inside, outside)
    assert float(ex.extras["score_preservation"][0]) > float(ex.extras["score_deletion"][0])


def test_two_stage_lambda_switches_at_theta():
    f, _ = _region_model()
    x = jnp.ones((2, 24, 24, 3))
    kw = dict(iterations=6, k1=3, p1=1, k2=3, reference_space="normalised",
              key=jax.random.PRNGKey(0), lam=1.0, lam_small=0.25)
    low = D.dssr(f, x, jnp.array([1, 1]), theta=1.1, **kw)   # score never > θ: small λ only
    high = D.dssr(f, x, jnp.array([1, 1]), theta=-0.1, **kw)  # always > θ: large λ only
    np.testing.assert_allclose(low.extras["lam_curve"], 0.25)
    np.testing.assert_allclose(high.extras["lam_curve"], 1.0)
    mid = D.dssr(f, x, jnp.array([1, 1]), theta=0.5, **kw)
    lamc = np.asarray(mid.extras["lam_curve"])
    pre = np.asarray(mid.extras["preservation_curve"])
    np.testing.assert_allclose(lamc, np.where(pre <= 0.5, 0.25, 1.0))


def test_reference_is_uniform_in_pixel_space_and_differs_per_image():
    model = xj.models.get("small_cnn", num_classes=10)
    x = jnp.zeros((2, 16, 16, 3))
    ex = D.dssr(model, x, jnp.array([0, 1]), iterations=1, key=jax.random.PRNGKey(3))
    pix = np.asarray(ex.extras["reference"]) * 0.5 + 0.5  # small_cnn: mean = std = 0.5
    assert pix.min() >= 0.0 and pix.max() <= 1.0 and abs(pix.mean() - 0.5) < 0.05
    assert not np.allclose(pix[0], pix[1])
    with pytest.raises(ValueError, match="reference_space"):
        D.dssr(model, x, jnp.array([0, 1]), reference_space="latent")


def test_jit_vmap_and_no_recompile(compiles):
    model = xj.models.get("small_cnn", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    t = jnp.array([1, 2])
    argsets = [(x * (1.0 - 0.2 * i), t[::-1] if i % 2 else t, 0.01 * (i + 1), 0.3 + 0.1 * i,
                jax.random.PRNGKey(i)) for i in range(3)]
    outs = []
    assert_compiles_once(compiles, lambda xx, tt, lam, theta, key: outs.append(xj.explain(
        model, xx, tt, method="dssr", iterations=3, lam=lam, theta=theta, key=key)) or outs[-1],
        argsets)
    a = D.dssr(model, x, t, iterations=3, lam=0.01, theta=0.3, key=jax.random.PRNGKey(0))
    assert a.heatmap.shape == (2, 16, 16) and a.extras["mask"].shape == (2, 31, 31)
    np.testing.assert_allclose(outs[0].heatmap, a.heatmap, atol=1e-5)
    assert not np.allclose(outs[0].heatmap, outs[1].heatmap)
    v = jax.vmap(lambda xb, tb: D.dssr(model, xb, tb, iterations=3, lam=0.01, theta=0.3,
                                       key=jax.random.PRNGKey(0)).heatmap)(x[None], t[None])
    np.testing.assert_allclose(v[0], a.heatmap, atol=1e-5)


def test_batched_rows_equal_each_image_alone():
    """All images are rows of one batched scan. Each row must follow Eq. 4–5 with the two-stage
    λ for its own image exactly as a loop over that image alone does (written here with
    ``dssr_loss`` and the documented reference ``U(0, 1)`` from ``split(key, N)[i]``).
    Measured max difference ~1e-7; tolerance 1e-5. k1 = 1: with a wider max pool, Adam's
    first steps (±lr everywhere) leave ties in every window, whose minimum — the one entry the
    regulariser's gradient reaches — is then picked by last-bit rounding, so runs that differ
    only in rounding part after a few steps (batched or not)."""
    import optax

    f, _ = _region_model()
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 24, 24, 3))
    t = jnp.array([1, 0, 1])
    key, lam, lam_small, theta, iters = jax.random.PRNGKey(7), 0.05, 0.01, 0.5, 8
    pools = dict(k1=1, s1=1, p1=0, k2=3, s2=1, p2=0)
    ex = D.dssr(f, x, t, key=key, lam=lam, lam_small=lam_small, theta=theta, iterations=iters,
                reference_space="normalised", **pools)

    @jax.jit
    def alone(xi, ti, ki):
        r = jax.random.uniform(ki, xi.shape, jnp.float32)
        f_score = lambda z: jax.nn.softmax(f(z[None])[0])[ti]  # noqa: E731
        opt = optax.adam(0.1)

        def step(carry, _):
            # the score terms and the regulariser differentiated apart, as in dssr (Adam
            # turns the rounding of near-zero gradients into full steps, so the order counts)
            m, os = carry
            (phi, (_, s_pre, _)), g_phi = jax.value_and_grad(
                lambda m_: D.dssr_loss(f_score, xi, r, m_, 0.0, **pools), has_aux=True)(m)
            reg, g_reg = jax.value_and_grad(D.regulariser)(m, 1, 1, 0)
            lam_k = jnp.where(s_pre <= theta, lam_small, lam)
            u, os = opt.update(g_phi - lam_k * g_reg, os, m)
            return (optax.projections.projection_box(optax.apply_updates(m, u), 0.0, 1.0),
                    os), (phi - lam_k * reg, lam_k)

        m0 = jnp.zeros((26, 26), jnp.float32)
        (m, _), (losses, lams) = jax.lax.scan(step, (m0, opt.init(m0)), None, length=iters)
        return m, losses, lams

    for i, ki in enumerate(jax.random.split(key, 3)):
        m, losses, lams = alone(x[i], t[i], ki)
        assert float(jnp.max(m)) > 0.05, "the run must move the mask"
        np.testing.assert_allclose(ex.extras["mask"][i], m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ex.extras["loss"][i], losses, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(ex.extras["lam_curve"][i], lams)
