"""Occlusion, RISE and LIME: parity with Captum / TorchRay / the RISE formula on the same weights,
jit/vmap/compile-once, bounded memory by chunking, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xaijax as xj  # noqa: E402
from tests.helpers import assert_rel_close, to_nchw, torch_pair  # noqa: E402
from xaijax.methods import perturbation as P  # noqa: E402

HW = 64  # AlexNet accepts 64x64; cheap enough for many perturbed forward passes


@pytest.fixture(scope="module")
def pair():
    return torch_pair("alexnet")


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(1), (2, HW, HW, 3))


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10)


def _counting(model):
    calls = []

    def f(z):
        calls.append(1)
        return model.apply_fn(z)

    return f, calls


# ---------------------------------------------------------------------------------------- occlusion


@pytest.mark.parametrize("window,strides,baseline", [
    ((16, 16), (10, 10), 0.5),                    # last window cut off at the border, overlaps
    ((12, 20, 1), (12, 8, 1), (0.1, -0.2, 0.3)),  # per-channel windows, per-channel baseline
])
def test_occlusion_matches_captum(pair, x, window, strides, baseline):
    from captum.attr import Occlusion

    tm, model = pair
    target = np.array([3, 7])
    base = np.asarray(baseline, np.float32)
    ex = xj.explain(model, x, target, method="occlusion", window=window, strides=strides,
                    baseline=base, batch_size=16)
    c = x.shape[-1]
    win = tuple(window) + (c,) if len(window) == 2 else tuple(window)
    st = tuple(strides) + (c,) if len(strides) == 2 else tuple(strides)
    tb = torch.tensor(base).reshape(1, -1, 1, 1) if base.ndim else float(base)
    ref = Occlusion(tm).attribute(torch.tensor(to_nchw(x)), target=torch.tensor(target),
                                  sliding_window_shapes=(win[2], win[0], win[1]),
                                  strides=(st[2], st[0], st[1]), baselines=tb,
                                  perturbations_per_eval=16)
    ref = ref.detach().numpy().transpose(0, 2, 3, 1)
    # float32 logits differences of two implementations (converted weights agree to ~1e-6)
    assert_rel_close(ex.attribution, ref, 1e-4, "occlusion attribution")
    assert_rel_close(ex.heatmap, ref.sum(-1), 1e-4, "occlusion heatmap")


def test_occlusion_single_window_is_the_score_drop(small):
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
    ex = P.occlusion(small, x, jnp.array([2]), window=(32, 32), strides=(1, 1))
    drop = small(x)[0, 2] - small(jnp.zeros_like(x))[0, 2]
    np.testing.assert_allclose(ex.attribution, np.full((1, 32, 32, 3), drop), rtol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(window=(40, 8)), "larger than the image"),
    (dict(window=(8, 8), strides=(9, 4)), "larger than the window"),
    (dict(window=(8, 8), batch_size=0), "batch_size"),
    (dict(window=(8, 8), score="prob"), "score must be"),
])
def test_occlusion_bad_options(small, kw, match):
    with pytest.raises(ValueError, match=match):
        P.occlusion(small, jnp.zeros((1, 32, 32, 3)), jnp.array([0]), **kw)


# ---------------------------------------------------------------------------------------- RISE


def test_rise_matches_reference_formula_and_torchray(pair, x):
    from torchray.attribution.rise import rise as tr_rise

    tm, model = pair
    masks = np.asarray(P.rise_masks(jax.random.PRNGKey(3), 24, (HW, HW), 7, 0.5))
    target = np.array([5, 11])
    ex = xj.explain(model, x, target, method="rise", masks=masks, p1=0.5, batch_size=10)
    # independent numpy formula (RISE reference code): sum_i softmax_c(f(x*M_i)) M_i / (N p1)
    xs = np.asarray(x)
    for i in range(2):
        logits = np.asarray(model(jnp.asarray(xs[i][None] * masks[..., None])), np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p = p[:, target[i]] / p.sum(1)
        ref = np.einsum("k,khw->hw", p, masks) / (24 * 0.5)
        assert_rel_close(ex.heatmap[i], ref, 1e-5, "RISE vs formula")
    # TorchRay's rise: sigmoid scores and normalisation by N only (no 1/p1)
    ours = xj.explain(model, x, target, method="rise", masks=masks, p1=0.5, batch_size=10,
                      score="sigmoid").heatmap
    ref = tr_rise(tm, torch.tensor(to_nchw(x)), num_masks=24, batch_size=10,
                  filter_masks=torch.tensor(masks[:, None])).numpy()
    # model outputs agree to ~1e-6 relative; sums of 24 terms in a different order
    assert_rel_close(np.asarray(ours) * 0.5, ref[np.arange(2), target], 1e-4, "RISE vs TorchRay")


def test_rise_masks_follow_the_paper():
    m = np.asarray(P.rise_masks(jax.random.PRNGKey(0), 400, (30, 30), 5, 0.3))
    assert m.shape == (400, 30, 30) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean() - 0.3) < 0.03            # E[M] = p1
    assert len(np.unique(m[0].round(5))) > 2     # smooth (bilinear), not binary
    # a random shift: masks are not all aligned to the same cell boundaries
    edges = np.abs(np.diff(m, axis=2)).mean(axis=(0, 1))
    assert edges.std() / edges.mean() < 0.5


def test_rise_chunking_bounds_memory(small):
    x = jnp.zeros((1, 32, 32, 3))
    t = jnp.array([0])

    def temp(bs):
        fn = jax.jit(lambda m, x, t: P.rise(m, x, t, num_masks=64, batch_size=bs).heatmap)
        stats = fn.lower(small, x, t).compile().memory_analysis()
        if stats is None:
            pytest.skip("memory_analysis unavailable on this backend")
        return stats.temp_size_in_bytes

    t4, t32 = temp(4), temp(32)
    assert t4 * 3 < t32, (t4, t32)


def test_rise_images_get_their_own_masks_and_targets(small):
    x = jnp.tile(jax.random.normal(jax.random.PRNGKey(2), (1, 32, 32, 3)), (2, 1, 1, 1))

    def run(key):  # one compilation: the key is traced
        return xj.explain(small, x, [1, 1], method="rise", num_masks=16, batch_size=8,
                          key=key).heatmap

    a, b, c = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1))
    assert not np.allclose(a[0], a[1])  # per-image keys: identical images, different masks
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kw,match", [
    (dict(p1=0.0), r"p1 \(keep probability\) must be in \(0, 1\]"),
    (dict(p1=1.5), r"p1 \(keep probability\)"),
    (dict(masks=np.ones((4, 16, 16), np.float32)), "masks must have shape"),
    (dict(num_masks=0), "num_masks"),
])
def test_rise_bad_options(small, kw, match):
    with pytest.raises(ValueError, match=match):
        xj.explain(small, jnp.zeros((1, 32, 32, 3)), 0, method="rise", **kw)


# ---------------------------------------------------------------------------------------- LIME


def test_lime_matches_captum_given_segments_and_samples(pair, x):
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    tm, model = pair
    k, s = 16, 40
    segs = np.asarray(P.grid_segments((HW, HW), k))
    samples = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(4), 0.5, (s, k)), np.int64)
    target = 9
    ex = xj.explain(model, x[:1], target, method="lime", segments=segs, num_segments=k,
                    samples=samples, baseline=0.0, batch_size=16)

    def perturb(_inputs, **_kw):  # Captum draws from this generator, in order
        for row in samples:
            yield torch.tensor(row[None])

    lime = Lime(tm, interpretable_model=SkLearnRidge(alpha=1.0), perturb_func=perturb)
    ref = lime.attribute(torch.tensor(to_nchw(x[:1])), target=target, n_samples=s,
                         feature_mask=torch.tensor(segs)[None, None].expand(1, 3, HW, HW),
                         baselines=0.0, perturbations_per_eval=16).numpy()
    # sklearn fits in float32 as well; the ridge system is well conditioned (alpha = 1)
    assert_rel_close(ex.heatmap[0], ref[0, 0], 1e-4, "LIME vs Captum")
    np.testing.assert_array_equal(ex.extras["segments"][0], segs)


def test_lime_recovers_a_linear_model_exactly():
    # f = sum of per-segment weights on kept segments: the surrogate is exact (alpha -> 0)
    k = 9
    segs = P.grid_segments((24, 24), k)
    wk = jnp.linspace(-1.0, 1.0, k)
    onehot = jax.nn.one_hot(segs, k)

    def f(z):
        kept = jnp.einsum("nhw,hwk->nk", z[..., 0], onehot) / jnp.sum(onehot, (0, 1))
        return jnp.stack([kept @ wk, -kept @ wk], -1)

    ex = P.lime(f, jnp.ones((1, 24, 24, 3)), jnp.array([0]), num_samples=100, num_segments=k,
                segmentation="grid", alpha=1e-6)
    np.testing.assert_allclose(ex.extras["coefficients"][0], wk, atol=1e-3)


def test_slic_separates_colour_regions():
    img = jnp.zeros((32, 32, 3)).at[:, 16:, 0].set(3.0).at[:, :16, 2].set(3.0)
    seg = np.asarray(P.slic_segments(img, 8, compactness=0.5))
    for lab in np.unique(seg):
        cols = np.nonzero(seg == lab)[1]
        assert cols.max() < 16 or cols.min() >= 16, "a superpixel straddles the colour edge"
    assert len(np.unique(seg)) >= 4


@pytest.mark.parametrize("kw,match", [
    (dict(segments=np.full((32, 32), 20), num_segments=8), r"pass num_segments=21"),
    (dict(kernel_width=0.0), "kernel_width must be > 0"),
    (dict(segmentation="quickshift"), "segmentation must be"),
    (dict(samples=np.ones((5, 3))), "samples must have shape"),
])
def test_lime_bad_options(small, kw, match):
    with pytest.raises(ValueError, match=match):
        P.lime(small, jnp.zeros((1, 32, 32, 3)), jnp.array([0]), num_samples=8, **kw)


# ---------------------------------------------------------------------------------------- jit / vmap


@pytest.mark.parametrize("method,opts", [
    ("occlusion", dict(window=(8, 8), strides=(8, 8), batch_size=8)),
    ("rise", dict(num_masks=8, batch_size=4)),
    ("lime", dict(num_samples=8, num_segments=4, segmentation="grid", batch_size=8)),
])
def test_compiles_once_and_vmaps(small, method, opts):
    f, calls = _counting(small)
    x1 = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    # explicit masks / samples so the maps do not depend on the per-image keys
    fixed = {"occlusion": lambda v: dict(baseline=v),
             "rise": lambda v: dict(masks=P.rise_masks(jax.random.PRNGKey(7), 8, (32, 32)) * v),
             "lime": lambda v: dict(samples=jax.random.bernoulli(jax.random.PRNGKey(8), v,
                                                                 (8, 4)))}[method]
    a = xj.explain(f, x1, [1, 2], method=method, **opts, **fixed(0.5))
    n = len(calls)
    xj.explain(f, x2, [3, 4], method=method, **opts, **fixed(0.7))
    assert len(calls) == n, "new values recompiled"
    fn = getattr(xj.methods, method)
    one = jax.jit(jax.vmap(lambda xi, ti: fn(small, xi[None], ti[None], **opts,
                                             **fixed(0.5)).heatmap[0]))
    np.testing.assert_allclose(one(x1, jnp.array([1, 2])), a.heatmap, rtol=1e-4, atol=1e-6)
