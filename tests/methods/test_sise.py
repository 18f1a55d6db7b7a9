"""SISE: each phase against a hand computation (Eq. 6–8 selection, Ω, Eq. 10–12, Otsu against a
brute-force threshold search, the low-to-high fusion cascade), then the whole method: batched
equals image by image, jit/vmap, compiles once, ``xj.explain`` and clear errors."""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from tests.helpers import assert_compiles_once, assert_jit_vmap_agree

S = importlib.import_module("xaijax.methods.sise")  # the module; xj.methods.sise is the function

OPTS = dict(batch_size=32, max_masks=12)  # one compiled configuration shared by the tests


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(0), (3, 32, 32, 3))


# ------------------------------------------------------------------------------------------------
# phases


def test_average_gradient_is_the_sum_over_locations():
    g = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4) - 20.0
    np.testing.assert_allclose(S.average_gradients(jnp.asarray(g)), g.sum(axis=(1, 2)))


def test_select_maps_keeps_alpha_above_mu_times_beta():
    alpha = jnp.array([-1.0, 0.2, 1.0, 0.6])
    sel = {mu: S.select_maps(alpha, mu).tolist() for mu in (0.0, 0.5, 0.7, 1.0)}
    assert sel[0.0] == [False, True, True, True]     # positive-gradient maps (paper default)
    assert sel[0.5] == [False, False, True, True]    # α > 0.5
    assert sel[0.7] == [False, False, True, False]   # α > 0.7
    assert sel[1.0] == [False, False, False, False]  # strict: α > β never holds
    assert not S.select_maps(jnp.array([-2.0, -0.5, 0.0]), 0.0).any()  # no positive gradient


def test_omega_upsamples_bilinearly_and_minmax_normalises():
    a = np.array([[1.0, 3.0], [5.0, 9.0]], np.float32)
    acts = np.stack([a, np.full((2, 2), 4.0, np.float32)], -1)[None]  # (1, 2, 2, 2)
    # 2 -> 4 with half-pixel centres: source rows -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    r = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], np.float64)
    up = r @ a @ r.T
    want = (up - up.min()) / (up.max() - up.min())
    got = np.asarray(S.attribution_masks(jnp.asarray(acts), (4, 4)))
    assert got.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(got[0, ..., 0], want, atol=1e-6)
    assert got[0, ..., 0].min() == 0.0 and got[0, ..., 0].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(got[0, ..., 1], 0.0)  # a constant map is an all-zero mask


def test_layer_visualization_is_eq_10_to_12_by_hand():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(4, 4, 2)).astype(np.float32)
    masks = rng.uniform(size=(3, 4, 4)).astype(np.float32)
    masks[:, 0, 0], masks[:, 3, 3] = 0.0, 1.0  # already in [0, 1] with min 0, max 1: Ω = id
    acts = jnp.asarray(masks.transpose(1, 2, 0))  # (4, 4, 3) at input size: no resize
    c = rng.normal(size=(4, 4, 2)).astype(np.float32)

    def score_fn(z):  # a hand-written linear "model": (B, 4, 4, 2) -> (B,)
        return jnp.sum(z * c, axis=(1, 2, 3))

    w = np.array([1.0, 0.0, 1.0], np.float32)
    want = np.zeros((4, 4))
    for k in (0, 2):  # Eq. 12: mean over the selected masks of Ψ(I ⊙ m) · m / Σ m (Eq. 11)
        psi = float(np.sum(img * masks[k][..., None] * c))
        want += psi * masks[k] / masks[k].sum()
    want /= 2
    for b in (1, 2, 3):  # chunks of 1, 2 (padded) and 3 masks
        got = S.layer_visualization(score_fn, jnp.asarray(img), acts, jnp.asarray(w), b)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    none = S.layer_visualization(score_fn, jnp.asarray(img), acts, jnp.zeros(3), 2)
    np.testing.assert_array_equal(none, 0.0)


def test_only_the_selected_maps_are_scored():
    """The cost follows Eq. 7's selection: the model sees the selected masks, in whole chunks,
    and nothing when no map is selected (counted at run time, inside jit)."""
    import jax

    rng = np.random.default_rng(1)
    img = jnp.asarray(rng.normal(size=(4, 4, 2)).astype(np.float32))
    acts = jnp.asarray(rng.uniform(size=(4, 4, 7)).astype(np.float32))
    seen = []

    def score_fn(z):
        jax.debug.callback(lambda n: seen.append(int(n)), z.shape[0] * jnp.ones((), jnp.int32))
        return jnp.sum(z, axis=(1, 2, 3))

    run = jax.jit(lambda w, b: S.layer_visualization(score_fn, img, acts, w, b),
                  static_argnums=1)
    for w, b, calls in (([0, 1, 0, 0, 1, 1, 0], 2, 2), ([0, 1, 0, 0, 1, 1, 0], 3, 1),
                        ([0] * 7, 2, 0), ([1] * 7, 3, 3)):
        seen.clear()
        jax.block_until_ready(run(jnp.asarray(w, jnp.float32), b))
        assert len(seen) == calls, (w, b, seen)
        assert int(S.masks_scored(sum(w), 7, b)) == min(calls * b, 7)


def _brute_force_otsu(v):
    """The foreground of the split of the sorted pixel values that maximises the between-class
    variance w0 w1 (mu0 - mu1)^2, searched over every split (first maximum wins)."""
    flat = np.sort(np.unique(v.ravel()))
    best, fg = -1.0, None
    for lo, hi in zip(flat[:-1], flat[1:]):
        t = 0.5 * (lo + hi)
        a, b = v[v < t].astype(np.float64), v[v >= t].astype(np.float64)
        var = a.size * b.size * (a.mean() - b.mean()) ** 2
        if var > best * (1 + 1e-9):
            best, fg = var, v >= t
    return fg


@pytest.mark.parametrize("bins,seed", [(16, 0), (16, 1), (256, 2), (256, 3)])
def test_otsu_equals_brute_force_threshold_search(bins, seed):
    rng = np.random.default_rng(seed)
    # values at bin centres (so the histogram loses nothing), bimodal with noise
    lo = rng.normal(0.25, 0.1, size=40)
    hi = rng.normal(0.7, 0.15, size=24)
    raw = np.clip(np.concatenate([lo, hi]), 0, 1 - 1e-6)
    v = ((np.floor(raw * bins) + 0.5) / bins).astype(np.float32).reshape(8, 8)
    t = float(S.otsu_threshold(jnp.asarray(v), bins))
    np.testing.assert_array_equal(v >= t, _brute_force_otsu(v))


def test_otsu_under_jit_and_vmap():
    v = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8))
    batched = jax.jit(jax.vmap(lambda m: S.otsu_threshold(m, 32)))(v)
    np.testing.assert_allclose(batched, [S.otsu_threshold(v[0], 32), S.otsu_threshold(v[1], 32)])


def test_fusion_cascades_low_to_high_with_otsu_gates():
    rng = np.random.default_rng(4)
    h = w = 8
    top = np.zeros((h, w), bool)
    top[: h // 2] = True
    left = np.zeros((h, w), bool)
    left[:, : w // 2] = True
    v1 = rng.uniform(size=(h, w))
    # clearly bimodal maps: Otsu's foreground is the high mode (top half, left half)
    v2 = np.where(top, rng.uniform(0.9, 1.0, (h, w)), rng.uniform(0.0, 0.1, (h, w)))
    v3 = np.where(left, rng.uniform(0.9, 1.0, (h, w)), rng.uniform(0.0, 0.1, (h, w)))
    maps = np.stack([v1, v2, v3]) * np.array([3.0, 0.5, 2.0])[:, None, None] + 1.0  # unnormalised

    def n(m):
        return (m - m.min()) / (m.max() - m.min())

    want = n(((n(maps[0]) + n(maps[1])) * top + n(maps[2])) * left)
    got = np.asarray(S.fuse(jnp.asarray(maps, jnp.float32)))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(got[~left] == 0)  # what the highest-level map lacks is removed last
    rev = np.asarray(S.fuse(jnp.asarray(maps[::-1], jnp.float32)))
    assert np.any(rev[~left] > 0.1)  # the order matters: high to low would keep it


# ------------------------------------------------------------------------------------------------
# the method


def test_batched_equals_image_by_image(small, x):
    """Tolerance 1e-6 absolute on maps in [0, 1] (observed: identical on CPU)."""
    t = jnp.array([1, 4, 7])
    f = jax.jit(lambda z, tt: S.sise(small, z, tt, **OPTS))
    full = f(x, t)
    for i in range(x.shape[0]):
        one = f(x[i:i + 1], t[i:i + 1])
        np.testing.assert_allclose(full.heatmap[i], one.heatmap[0], atol=1e-6)
        np.testing.assert_allclose(full.extras["visualization_maps"][i],
                                   one.extras["visualization_maps"][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(full.extras["num_selected"][i],
                                      one.extras["num_selected"][0])
    h = np.asarray(full.heatmap)
    assert h.shape == (3, 32, 32) and h.min() >= 0 and h.max() == pytest.approx(1.0)


def test_jit_vmap_agree(small, x):
    assert_jit_vmap_agree(lambda z, tt: S.sise(small, z, tt, **OPTS).heatmap, x[:2],
                          jnp.array([2, 5]), atol=1e-6)


def test_compiles_once_for_new_images_targets_and_mu(small, x, compiles):
    f = xj.methods.bind("sise", **OPTS)
    x2 = x[::-1] * 0.5
    args = [(small, x, jnp.array([0, 1, 2])), (small, x2, jnp.array([3, 4, 5])),
            (small, x, jnp.array([6, 7, 8]))]
    mus = [0.0, 0.3, 0.6]
    assert_compiles_once(compiles, lambda m, z, t, _k=iter(mus): f(m, z, t, mu=next(_k)), args)


def test_mu_and_cap_control_the_selected_masks(small, x):
    t = jnp.array([1, 4, 7])
    f = xj.methods.bind("sise", **OPTS)
    counts = [np.asarray(f(small, x, t, mu=mu).extras["num_passing"]) for mu in (0.0, 0.5, 1.0)]
    assert np.all(counts[0] >= counts[1]) and np.any(counts[0] > counts[1])
    assert np.all(counts[2] == 0)  # α > 1·β never holds: nothing is selected
    ex = f(small, x, t, mu=1.0)
    np.testing.assert_array_equal(ex.extras["visualization_maps"], 0.0)

    capped = f(small, x, t)
    full = xj.methods.bind("sise", batch_size=32)(small, x, t)
    # only the selected maps are scored, in whole chunks (batch 32, or the cap of 12)
    np.testing.assert_array_equal(capped.extras["num_scored"],
                                  np.where(np.asarray(capped.extras["num_selected"]) > 0, 12, 0))
    np.testing.assert_array_equal(
        full.extras["num_scored"],
        np.minimum(-(-np.asarray(full.extras["num_selected"]) // 32) * 32, [16, 32, 64]))
    np.testing.assert_array_equal(full.extras["num_passing"], capped.extras["num_passing"])
    np.testing.assert_array_equal(capped.extras["num_selected"],
                                  np.minimum(capped.extras["num_passing"], 12))
    # where the cap keeps every passing map, the layer's map is the uncapped one
    fits = np.asarray(full.extras["num_passing"]) <= 12
    assert fits[:, 0].all()  # relu2 (16 channels): about half pass
    vc = np.asarray(capped.extras["visualization_maps"])
    vf = np.asarray(full.extras["visualization_maps"])
    np.testing.assert_allclose(vc[fits], vf[fits], rtol=1e-5, atol=1e-8)


def test_explain_top1_defaults_to_block_taps(small, x):
    ex = xj.explain(small, x, "top1", method="sise", **OPTS)
    assert ex.method == "sise" and ex.heatmap.shape == (3, 32, 32)
    assert ex.extras["layers"].names == small.block_taps
    np.testing.assert_array_equal(ex.target, jnp.argmax(small(x), -1))
    assert float(ex.extras["mu"]) == 0.0
    two = xj.explain(small, x, "top1", method="sise", layers=("relu4", "relu5"), **OPTS)
    assert two.extras["layers"].names == ("relu4", "relu5")
    assert two.extras["visualization_maps"].shape == (3, 2, 32, 32)


def test_clear_errors(small, x):
    bare = dataclasses.replace(small, spec=dataclasses.replace(small.spec, block_taps=()))
    with pytest.raises(ValueError, match="names no block taps"):
        xj.explain(bare, x, 0, method="sise")
    with pytest.raises(ValueError, match="mu must be"):
        xj.explain(small, x, 0, method="sise", mu=-0.5)
    with pytest.raises(ValueError, match="spatial"):
        xj.explain(small, x, 0, method="sise", layers=("relu5", "fc"))
    with pytest.raises(ValueError):
        xj.explain(small, x, 0, method="sise", layers=("nope",))
    with pytest.raises(ValueError, match="twice"):
        xj.explain(small, x, 0, method="sise", layers=("relu4", "relu4"))
    with pytest.raises(TypeError, match="taps"):
        xj.explain(lambda z: z.mean((1, 2)), x, 0, method="sise")
