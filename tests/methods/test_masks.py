"""Mask games: Extremal Perturbation against TorchRay (components exactly, then the optimisation
run on the same weights), Meaningful Perturbation on a model with known evidence, the shared
utilities, compile-once and errors."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchray")

import xaijax as xj  # noqa: E402
from tests.helpers import assert_rel_close, to_nchw, torch_pair  # noqa: E402
from xaijax.methods import masks as M  # noqa: E402


@contextlib.contextmanager
def _quiet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------- pieces


def test_smooth_mask_generator_matches_torchray():
    from torchray.attribution.extremal_perturbation import MaskGenerator

    shape = (64, 48)
    with _quiet():
        ref = MaskGenerator(shape, 7, 21)
    geom = M.smooth_mask_geometry(shape, 7, 21.0)
    assert tuple(ref.shape_in) == geom.shape_in and tuple(ref.shape_out) == geom.shape_out
    np.testing.assert_allclose(geom.weight, ref.weight[0].numpy(), atol=1e-6)
    p = np.random.RandomState(0).rand(3, 1, *geom.shape_in).astype(np.float32)
    crop_t, full_t = ref.generate(torch.tensor(p))
    crop_j, full_j = M.smooth_mask(jnp.asarray(p[:, 0]), geom)
    # float32 exp/softmax of two libraries (coldness 20 amplifies exp's last-bit differences)
    np.testing.assert_allclose(crop_j, crop_t[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(full_j, full_t[:, 0].numpy(), atol=1e-5)


def test_blur_pyramid_and_perturbation_match_torchray():
    from torchray.attribution.extremal_perturbation import Perturbation

    rng = np.random.RandomState(1)
    x = rng.randn(1, 3, 40, 56).astype(np.float32)
    ref = Perturbation(torch.tensor(x), num_levels=8, max_blur=20)
    pyr = M.blur_pyramid(jnp.asarray(x[0].transpose(1, 2, 0)), 8, 20.0)
    np.testing.assert_allclose(pyr, ref.pyramid.numpy().transpose(0, 2, 3, 1), atol=1e-5)
    mask = rng.rand(2, 1, 40, 56).astype(np.float32)
    mask[0, 0, :5] = 1.0  # the unperturbed level exactly
    np.testing.assert_allclose(M.apply_pyramid(pyr, jnp.asarray(mask[:, 0])),
                               ref.apply(torch.tensor(mask)).numpy().transpose(0, 2, 3, 1),
                               atol=1e-5)


def test_heavy_ball_is_torch_sgd_with_dampening():
    a = np.array([3.0, -1.0, 0.5], np.float32)
    pt = torch.tensor([1.0, 2.0, -1.0], requires_grad=True)
    opt_t = torch.optim.SGD([pt], lr=0.05, momentum=0.9, dampening=0.9)
    opt = M.heavy_ball(0.05, 0.9, 0.9)
    pj = jnp.array([1.0, 2.0, -1.0])
    st = opt.init(pj)
    for _ in range(5):
        opt_t.zero_grad()
        (torch.tensor(a) * pt ** 2).sum().backward()
        opt_t.step()
        u, st = opt.update(jax.grad(lambda p: jnp.sum(a * p ** 2))(pj), st)
        pj = optax.apply_updates(pj, u)
    np.testing.assert_allclose(pj, pt.detach().numpy(), rtol=1e-6)


def test_smooth_mask_gather_and_gradient_match_unfold_and_autodiff():
    """The 0/1-matrix gather and the hand-written VJP of the smooth max against TorchRay's
    construction written with JAX primitives (zero-padded unfold, nearest-upsampling gather,
    softmax) and differentiated by autodiff, including the gradient in ``coldness``."""
    geom = M.smooth_mask_geometry((40, 33), 7, 21.0)
    k, p = 2 * geom.radius + 1, geom.padding

    def reference(params, coldness):
        patches = jax.lax.conv_general_dilated_patches(
            params[:, None], (k, k), (1, 1), [(p, p), (p, p)],
            precision=jax.lax.Precision.HIGHEST)
        up = patches[:, :, geom.index_y][:, :, :, geom.index_x]
        m = jnp.asarray(geom.weight) * up
        return jnp.sum(m * jax.nn.softmax(coldness * m, axis=1), axis=1)

    params = jnp.asarray(np.random.RandomState(2).rand(2, *geom.shape_in).astype(np.float32))
    w = jnp.asarray(np.random.RandomState(3).randn(2, *geom.shape_out).astype(np.float32))
    ours = lambda q, c: jnp.sum(w * M.smooth_mask(q, geom, c, clamp=False)[1])  # noqa: E731
    ref = lambda q, c: jnp.sum(w * reference(q, c))  # noqa: E731
    np.testing.assert_allclose(M.smooth_mask(params, geom, 20.0, clamp=False)[1],
                               reference(params, 20.0), atol=1e-6)
    g_ours = jax.grad(ours, argnums=(0, 1))(params, 20.0)
    g_ref = jax.grad(ref, argnums=(0, 1))(params, 20.0)
    assert_rel_close(g_ours[0], g_ref[0], 1e-5, "d/dparams")
    assert_rel_close(g_ours[1], g_ref[1], 1e-4, "d/dcoldness")


def test_area_reference_is_the_stable_sort_ranking():
    """``mean((m − r∘rank)²)`` equals the ranking loss ``mean((sort(m) − r)²)`` of Eq. 8 in
    value and gradient, with ties at the rank boundary broken as a stable sort does."""
    full = jnp.array([[0.5, 0.2, 0.5, 0.9, 0.5, 0.1],   # three tied values straddle the cut
                      [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
                      [0.0, 1.0, 0.7, 0.2, 0.6, 0.4]])
    counts = jnp.array([2, 4, 1])  # ones per row: the largest 2, 4, 1 values
    ref = np.zeros(full.shape, np.float32)
    for i, c in enumerate([2, 4, 1]):
        ref[i, full.shape[1] - c:] = 1.0

    def sorted_loss(m):
        return jnp.sum(jnp.mean((jnp.sort(m, axis=1, stable=True) - ref) ** 2, axis=1))

    def ranked_loss(m):
        return jnp.sum(jnp.mean((m - M._ranked_reference(m, counts, 4)) ** 2, axis=1))

    np.testing.assert_array_equal(M._ranked_reference(full, counts, 4)[0], [0, 0, 0, 1, 1, 0])
    assert float(ranked_loss(full)) == pytest.approx(float(sorted_loss(full)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(ranked_loss)(full), jax.grad(sorted_loss)(full),
                               atol=1e-7)


def test_total_variation_and_blur_by_hand():
    m = jnp.array([[0.0, 1.0], [0.5, 0.5]])
    assert float(M.total_variation(m, 3.0)) == pytest.approx(0.5 ** 3 + 0.5 ** 3 + 1 + 0)
    b = M.blur_matrix(5, 1.0, "nearest")
    np.testing.assert_allclose(b.sum(1), 1.0, rtol=1e-6)      # edge-replicating: rows sum to 1
    c = M.blur_matrix(11, 1.0, "constant")  # zero padding loses mass only near the border
    assert c[0].sum() < 0.9 and c[5].sum() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------- EP run


@pytest.mark.parametrize("variant", ["preserve", "delete", "dual"])
def test_extremal_perturbation_matches_torchray_run(variant):
    """The whole optimisation against TorchRay's ``extremal_perturbation`` on the same AlexNet
    weights, 64x64, default settings except ``max_iter`` and ``variant`` (each of the three).

    TorchRay returns the mask evaluated in its last iteration (before that update), ours the
    mask of the final parameters, so TorchRay runs one more iteration. The area loss ranks the
    mask values; for area 0.1 on this geometry the rank boundary falls between two distinct
    values (checked below), so both implementations assign the same targets to the same pixels
    and the runs agree to float32 accuracy. Tolerance 1e-4 relative on the mask *change* from
    the initial mask (what the optimisation contributes; measured ~3e-6 after 12 steps).

    ``delete`` gets 5e-4: its reward is flat here (0.0148 at every step: the fully blurred
    image), so the mask moves by the area term alone, weighted 300·1.0035^t on a mean over 5041
    values. Reward and area loss agree to 3e-7 relative at every step, but the mask difference
    grows with the steps it accumulates over: 6.6e-6, 1.7e-5, 6.5e-5 absolute after 2, 4, 8
    steps (1.8e-4 of the change after 8)."""
    from torchray.attribution.extremal_perturbation import (MaskGenerator,
                                                            extremal_perturbation as tr_ep)

    tm, model = torch_pair("alexnet")
    x = np.random.RandomState(0).randn(1, 64, 64, 3).astype(np.float32)
    steps, area, target = 8, 0.1, 3
    geom = M.smooth_mask_geometry((64, 64), 7, 21.0)
    with _quiet():
        init_t = MaskGenerator((64, 64), 7, 21).generate(torch.ones(1, 1, *geom.shape_in))[1]
        ranked = np.sort(init_t.numpy().ravel())
        cut = int(ranked.size * (1 - area))
        assert ranked[cut - 1] < ranked[cut], "precondition: no tie at the area rank boundary"
        mask_t, hist = tr_ep(tm, torch.tensor(to_nchw(x)), target, areas=[area],
                             max_iter=steps + 1, variant=variant)
    ex = xj.explain(model, jnp.asarray(x), target, method="extremal_perturbation",
                    areas=(area,), max_iter=steps, variant=variant)
    init = np.asarray(M.smooth_mask(jnp.ones((1,) + geom.shape_in), geom)[0])
    ours = np.asarray(ex.extras["masks"][0])
    ref = mask_t[:, 0].numpy()
    assert np.abs(ref - init).max() > 0.05, "the run must move the mask"
    assert_rel_close(ours - init, ref - init, 5e-4 if variant == "delete" else 1e-4,
                     "mask change")
    assert_rel_close(ex.extras["reward"][0, :, 0], hist[0, 0, :steps].numpy(), 1e-4, "reward")
    assert_rel_close(ex.extras["regul"][0, :, 0], hist[0, 1, :steps].numpy(), 1e-5, "area loss")
    np.testing.assert_allclose(ex.heatmap[0], ours[0])  # one area: the heatmap is its mask


# ---------------------------------------------------------------------------------------- MP


def _patch_model():
    """A 2-class model whose class-0 logit is the energy of a 12x12 patch (rows/cols 8..19):
    blurring the patch's noise removes the evidence."""

    def f(z):
        e = jnp.mean(z[:, 8:20, 8:20, :] ** 2, axis=(1, 2, 3))
        return jnp.stack([8.0 * (e - 0.5), jnp.zeros_like(e)], -1)

    x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
    return f, x


def test_meaningful_perturbation_deletes_the_evidence():
    f, x = _patch_model()
    ex = xj.explain(f, x, 0, method="meaningful_perturbation", iterations=80, mask_size=8,
                    jitter=2)
    h = np.asarray(ex.heatmap[0])
    inside = np.zeros((32, 32), bool)
    inside[8:20, 8:20] = True
    p0 = float(jax.nn.softmax(f(x))[0, 0])
    assert float(ex.extras["final_score"][0]) < 0.1 * p0       # the class is deleted
    assert h[inside].mean() > 0.5 > 0.2 > h[~inside].mean()     # ... by deleting the patch
    assert ex.extras["loss"].shape == (1, 80)


def test_meaningful_perturbation_preservation_keeps_the_evidence():
    f, x = _patch_model()
    ex = xj.explain(f, x, 0, method="meaningful_perturbation", iterations=80, mask_size=8,
                    jitter=0, game="preservation", l1_coeff=1e-3)
    h = np.asarray(ex.heatmap[0])
    inside = np.zeros((32, 32), bool)
    inside[8:20, 8:20] = True
    assert h[inside].mean() > h[~inside].mean() + 0.3
    assert float(ex.extras["final_score"][0]) > 0.5


# ---------------------------------------------------------------------------------------- jit


def test_mask_games_compile_once_and_vmap():
    model = xj.models.get("small_cnn", num_classes=10)
    calls = []

    def f(z):
        calls.append(1)
        return model.apply_fn(z)

    x1 = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    for method, opts, new in [  # jitter=0: deterministic, so vmapped single images must agree
        ("meaningful_perturbation", dict(iterations=3, mask_size=8, jitter=0),
         "l1_coeff"),
        ("extremal_perturbation", dict(max_iter=3, areas=(0.1, 0.3)), "learning_rate"),
    ]:
        a = xj.explain(f, x1, [1, 2], method=method, **opts)
        xj.explain(f, x1, [1, 2], method=method, **opts, **{new: 1e-3})
        n = len(calls)
        xj.explain(f, x2, [3, 4], method=method, **opts, **{new: 2e-3})
        assert len(calls) == n, f"{method}: new values recompiled"
        fn = getattr(xj.methods, method)
        one = jax.jit(jax.vmap(lambda xi, ti: fn(model, xi[None], ti[None], **opts).heatmap[0]))
        # EP: at the all-ones start the area ranking has ties broken by float32 rounding, which
        # depends on XLA's fusion (batched vs vmapped); that moves the mask by ~3e-4 relative
        tol = 1e-4 if method == "meaningful_perturbation" else 2e-3
        assert_rel_close(one(x1, jnp.array([1, 2])), a.heatmap, tol, method)


def test_mask_games_batched_rows_equal_each_image_alone():
    """All images (and areas) are rows of one batched scan; each row must take exactly the
    steps its image takes alone. Measured max relative difference ~3e-7 (float32 rounding of
    batch-size-dependent convolutions); tolerance 1e-5. EP areas 0.1 and 0.2 have no tie at
    the rank boundary of the initial 32x32 mask (a tie there is decided by last-bit rounding,
    see test_mask_games_compile_once_and_vmap)."""
    model = xj.models.get("small_cnn", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 32, 32, 3))
    t = jnp.array([1, 4, 7])
    geom = M.smooth_mask_geometry((32, 32), 7, 21.0)
    init = np.sort(np.asarray(M.smooth_mask(jnp.ones((1,) + geom.shape_in), geom)[1]).ravel())
    for a in (0.1, 0.2):
        cut = int(init.size * (1 - a))
        assert init[cut - 1] < init[cut], "precondition: no tie at the area rank boundary"
    for method, opts, keys in [
        ("meaningful_perturbation", dict(iterations=6, mask_size=8, jitter=0),
         ("mask_lowres", "loss", "score", "final_score")),
        ("extremal_perturbation", dict(max_iter=6, areas=(0.1, 0.2)),
         ("masks", "reward", "regul", "loss")),
    ]:
        fn = jax.jit(lambda xb, tb: getattr(xj.methods, method)(model, xb, tb, **opts))
        batched = fn(x, t)
        for i in range(3):
            alone = fn(x[i:i + 1], t[i:i + 1])
            assert_rel_close(batched.heatmap[i], alone.heatmap[0], 1e-5, f"{method} {i}")
            for k in keys:
                assert_rel_close(batched.extras[k][i], alone.extras[k][0], 1e-5,
                                 f"{method} {i} {k}")


def test_meaningful_perturbation_jittered_rows_are_independent():
    """With jitter each image draws its own translations (its key is split from ``key`` by
    position), so replacing one image and its target leaves the other rows unchanged."""
    f, x1 = _patch_model()
    x = jnp.concatenate([x1, -x1, 0.5 * x1])
    y = x.at[0].set(jax.random.normal(jax.random.PRNGKey(9), x1.shape[1:]))
    opts = dict(iterations=8, mask_size=8, jitter=2, key=jax.random.PRNGKey(5))
    a = xj.explain(f, x, [0, 0, 1], method="meaningful_perturbation", **opts)
    b = xj.explain(f, y, [1, 0, 1], method="meaningful_perturbation", **opts)
    assert_rel_close(b.extras["loss"][1:], a.extras["loss"][1:], 1e-5, "loss")
    assert_rel_close(b.heatmap[1:], a.heatmap[1:], 1e-5, "heatmap")
    assert not np.allclose(a.extras["loss"][0], b.extras["loss"][0])


@pytest.mark.parametrize("method,kw,match", [
    ("extremal_perturbation", dict(areas=(0.0,)), r"areas must be fractions in \(0, 1\]"),
    ("extremal_perturbation", dict(areas=(1.5,)), "areas must be"),
    ("extremal_perturbation", dict(variant="both"), "variant must be"),
    ("extremal_perturbation", dict(step=0), "step must be a positive integer"),
    ("meaningful_perturbation", dict(game="insertion"), "game must be"),
    ("meaningful_perturbation", dict(mask_size=0), "mask_size must be positive"),
])
def test_mask_game_bad_options(method, kw, match):
    model = xj.models.get("small_cnn", num_classes=10)
    with pytest.raises(ValueError, match=match):
        xj.explain(model, jnp.zeros((1, 32, 32, 3)), 0, method=method, **kw)
