"""FGVis (Wagner et al. 2019): the four games, λ selection, outputs, jit/vmap, and the deletion
game on the pretrained EfficientNet-Lite0. The gradient filter itself is tested in
tests/rules/test_fgvis_filter.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from tests.helpers import assert_compiles_once, pretrained_efficientnet
from xaijax.methods.fgvis import fgvis, select_lambda
from xaijax.viz import fgvis_images


@pytest.fixture(scope="module")
def small():
    model = xj.models.get("small_cnn", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    return model, x, jnp.array([1, 7], jnp.int32)


@pytest.mark.parametrize("game,init,evidence_is_mask", [
    ("preservation", 1.0, True), ("deletion", 1.0, False),
    ("generation", 0.0, True), ("repression", 0.0, False)])
def test_games_start_from_the_paper_initialisation(small, game, init, evidence_is_mask):
    model, x, t = small
    ex = fgvis(model, x, t, game=game, lam=0.0, iterations=1, learning_rate=0.0)
    np.testing.assert_array_equal(ex.extras["mask"], np.full(x.shape, init))
    m = np.asarray(ex.extras["mask"])
    side = m if evidence_is_mask else 1.0 - m
    np.testing.assert_allclose(ex.heatmap, side.mean(-1))
    np.testing.assert_allclose(ex.attribution, side)
    np.testing.assert_allclose(ex.extras["explanation"], m * np.asarray(x), atol=1e-6)
    assert ("complement_mask" in ex.extras) == (not evidence_is_mask)


def test_games_move_the_target_score_the_right_way(small):
    model, x, t = small
    p0 = np.asarray(jax.nn.softmax(model(x))[np.arange(2), t])
    keep = fgvis(model, x, t, game="preservation", lam=0.0, iterations=15, defense=False)
    gone = fgvis(model, x, t, game="deletion", lam=0.0, iterations=15, defense=False)
    np.testing.assert_allclose(keep.extras["score_image"], p0, rtol=1e-5)
    assert np.all(keep.extras["score_explanation"] > p0)  # φ minimised: score up
    assert np.all(gone.extras["score_explanation"] < p0)  # φ maximised: score down
    m = np.asarray(gone.extras["mask"])
    assert m.min() >= 0.0 and m.max() <= 1.0


def test_sparsity_gradient_is_not_filtered(small):
    """Repression from m = 0 with SGD: m₁ = clip(lr·(∂φ/∂m + λ)); changing λ shifts every
    interior entry by lr·Δλ even where the defense filters ∂φ/∂m."""
    model, x, t = small
    kw = dict(game="repression", iterations=1, learning_rate=1.0, optimizer="sgd", defense=True)
    a = np.asarray(fgvis(model, x, t, lam=0.0, **kw).extras["mask"])
    b = np.asarray(fgvis(model, x, t, lam=0.01, **kw).extras["mask"])
    interior = (a > 0) & (a < 0.98)
    assert interior.mean() > 0.05
    np.testing.assert_allclose((b - a)[interior], 0.01, atol=1e-6)
    assert np.all(b[a == 0] >= 0)


def test_select_lambda_picks_largest_qualifying():
    s = jnp.array([0.95, 0.9, 0.5, 0.1])
    assert int(select_lambda(s, 1.0, game="preservation", keep_ratio=0.9)) == 1
    assert int(select_lambda(s, 1.0, game="generation", keep_ratio=0.99)) == 0  # none: smallest
    d = jnp.array([0.01, 0.05, 0.2, 0.9])
    assert int(select_lambda(d, 1.0, game="deletion", drop_ratio=0.1)) == 1
    assert int(select_lambda(d, 0.05, game="repression", drop_ratio=0.1)) == 0


def test_lambda_candidates_run_per_image_and_the_chosen_one_is_reported(small):
    model, x, t = small
    ex = fgvis(model, x, t, game="deletion", lam_candidates=(1e-3, 0.0), iterations=4,
               defense=False)
    np.testing.assert_allclose(ex.extras["lam_candidates"], [[0.0, 1e-3]] * 2)  # sorted
    assert ex.extras["candidate_scores"].shape == (2, 2)
    for i in range(2):
        k = int(select_lambda(ex.extras["candidate_scores"][i], ex.extras["score_image"][i],
                              game="deletion"))
        assert float(ex.extras["lam"][i]) == float(ex.extras["lam_candidates"][i, k])
        np.testing.assert_allclose(ex.extras["score_explanation"][i],
                                   ex.extras["candidate_scores"][i, k])
    assert ex.extras["loss"].shape == (2, 4) and ex.extras["score_curve"].shape == (2, 4)


def test_each_candidate_row_is_the_game_played_with_that_lambda_alone(small):
    """All (image, λ) pairs are optimised as rows of one batch: each row must follow the steps
    it would follow alone (per-row ‖m‖₁, elementwise Adam, per-sample model)."""
    model, x, t = small
    kw = dict(game="generation", iterations=4, mask_init=0.5)
    ex = fgvis(model, x, t, lam_candidates=(0.0, 0.02), **kw)
    for k, lam in enumerate((0.0, 0.02)):
        for i in range(2):
            one = fgvis(model, x[i:i + 1], t[i:i + 1], lam=lam, **kw)
            np.testing.assert_allclose(ex.extras["candidate_scores"][i, k],
                                       one.extras["score_explanation"][0], rtol=1e-4)


def test_per_image_lambda_and_scores(small):
    model, x, t = small
    ex = fgvis(model, x, t, game="preservation", lam=jnp.array([0.0, 0.05]), iterations=3)
    np.testing.assert_allclose(ex.extras["lam"], [0.0, 0.05])
    p = jax.nn.softmax(model(ex.extras["explanation"]))[np.arange(2), t]
    np.testing.assert_allclose(ex.extras["score_explanation"], p, rtol=1e-4)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        fgvis(model, x, t, lam=jnp.ones(3), iterations=1)


def test_bad_options_and_plain_function_errors(small):
    model, x, t = small
    with pytest.raises(ValueError, match="game must be one of"):
        fgvis(model, x, t, game="removal")
    with pytest.raises(TypeError, match="defense=False"):
        xj.explain(lambda z: model(z), x, t, method="fgvis", iterations=1)
    ex = xj.explain(lambda z: model(z), x, t, method="fgvis", iterations=1, defense=False,
                    lam=0.0)
    assert ex.heatmap.shape == (2, 16, 16)


def test_jit_vmap_and_no_recompile(small, compiles):
    model, x, t = small
    outs = []
    argsets = [(x * (1.0 - 0.2 * i), t[::-1] if i % 2 else t, 0.01 * (i + 1), 0.1 + 0.01 * i)
               for i in range(3)]

    def run(xx, tt, lam, lr):
        outs.append(xj.explain(model, xx, tt, method="fgvis", game="deletion", lam=lam,
                               iterations=3, learning_rate=lr))
        return outs[-1]

    assert_compiles_once(compiles, run, argsets)
    a = jax.jit(lambda xb, tb: fgvis(model, xb, tb, game="deletion", lam=0.01,
                                     iterations=3))(x, t)
    np.testing.assert_allclose(outs[0].heatmap, a.heatmap, atol=1e-5)
    np.testing.assert_allclose(outs[0].extras["loss"], a.extras["loss"], rtol=1e-5)
    assert not np.allclose(outs[0].extras["loss"], outs[1].extras["loss"])
    # vmap over an extra leading axis equals the batched call
    v = jax.jit(jax.vmap(lambda xb, tb: fgvis(model, xb, tb, game="deletion", lam=0.01,
                                              iterations=3).heatmap))(x[:, None], t[:, None])
    np.testing.assert_allclose(v[:, 0], a.heatmap, atol=1e-5)


def test_fgvis_images_types(small):
    model, x, t = small
    ex = fgvis(model, x, t, game="deletion", lam=0.0, iterations=2)
    ims = fgvis_images(model, x, ex)
    assert set(ims) == {"image", "mask", "explanation", "complement_mask", "evidence",
                        "mean_mask"}
    for v in ims.values():
        assert v.shape == (2, 16, 16, 3) and v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_allclose(ims["complement_mask"], 1.0 - np.asarray(ex.extras["mask"]))


@pytest.mark.slow
def test_deletion_game_on_pretrained_model_deletes_few_pixels():
    """Every bundled photo the model classifies with confidence >= 0.5: the deletion mask stays
    mostly ones (mean >= 0.9) and the target's softmax drops below 10 % of its value."""
    model = pretrained_efficientnet()
    imgs = xj.data.sample_images()
    x = xj.models.preprocess(model, list(imgs.values()))
    p = jax.nn.softmax(jax.jit(model.apply_fn)(x))
    keep = np.asarray(p.max(-1)) >= 0.5
    assert keep.any()
    x, t = x[keep], jnp.argmax(p[keep], -1).astype(jnp.int32)
    ex = xj.explain(model, x, t, method="fgvis", game="deletion", iterations=30,
                    lam_candidates=(3e-5, 1e-4))
    print({k: np.asarray(ex.extras[k]) for k in ("score_image", "score_explanation", "lam")},
          np.asarray(ex.extras["mask"]).mean(axis=(1, 2, 3)))
    assert np.all(np.asarray(ex.extras["mask"]).mean(axis=(1, 2, 3)) >= 0.9)
    assert np.all(np.asarray(ex.extras["score_explanation"])
                  < 0.1 * np.asarray(ex.extras["score_image"]))
