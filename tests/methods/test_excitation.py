"""Excitation backprop (MWP), contrastive MWP, linear approximation and the centre baseline:
parity with TorchRay on the same converted weights, the rules against their closed form, and
the paper's properties (MWP is a probability distribution at every layer).

Parity runs in float64 on both sides, like the gradient family (tests/methods/test_gradient.py):
excitation backprop itself is continuous in the ReLU masks (every signal is multiplied by the
activation), but contrastive MWP subtracts two nearly equal distributions, which magnifies
float32 rounding: on VGG16 at 64x64 (random weights) contrastive MWP agreed with TorchRay to
5e-3-9e-3 relative in float32 and 2e-11 in float64; plain MWP at pool4 to 2e-7 and 2e-15; MWP at
the input flips ReLU masks in float32 (1e-2), 7e-12 in float64. On ResNet-18 (these tests):
float64 agreement 5e-16 (MWP), 3e-15 (contrastive), 5e-15 (linear approximation), 2e-13 (MWP at
the input); float32 3e-7, 3e-6, 2e-6. ``benchmarks/bench_excitation.py`` prints both tables.
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchray")

import xaijax as xj  # noqa: E402
from tests.helpers import (assert_compiles_once, assert_jit_vmap_agree,  # noqa: E402
                           assert_rel_close)
from tests.methods.test_gradient import RTOL, TARGETS, pair64, torch_in  # noqa: E402
from xaijax.methods.excitation import default_tap  # noqa: E402
from xaijax.nn import layers as L  # noqa: E402
from xaijax.rules import excitation as R  # noqa: E402

# TorchRay's layers: examples/attribution_benchmark.py reads (contrastive) excitation backprop at
# VGG16 pool4 / ResNet layer3 with the contrast at relu7 / avgpool; a second contrast layer
# further down shows that the contrast layer does not matter; linear approximation at the last
# convolutional features (TorchRay's linear_approx example: VGG16 features.29)
LAYERS = {
    "vgg16": dict(eb="features.23", contrasts=("classifier.4", "features.30"), la="features.29"),
    "resnet18": dict(eb="layer3", contrasts=("avgpool", "layer4"), la="layer4"),
}
# ResNet-18 covers everything VGG16 has (conv, max pool, adaptive average pool, dense) plus the
# residual sum, BatchNorm and the strided 1x1 downsampling, in a third of VGG16's time (whose
# float64 classifier alone is 800 MB: 22 s of CPU for the four methods and their seven TorchRay
# passes, against 10 s); VGG16 runs in benchmarks/bench_excitation.py
MODELS = ["resnet18"]


def _torchray_model(name):
    """A private copy of the float64 torch model; ResNets get TorchRay's EltwiseSum skip
    connection (``update_resnet``, as its benchmark does for excitation backprop), without which
    the residual sum would not be an excitation-backprop layer."""
    from torchray.attribution.excitation_backprop import update_resnet

    tm, m, x = pair64(name)
    tm = copy.deepcopy(tm)
    return (update_resnet(tm) if name.startswith("resnet") else tm), m, x


@functools.lru_cache(maxsize=None)
def _parity(name):
    """``(ours, refs)``: the four xaijax outputs (one compiled program, default layers,
    ``variant="torchray"``) and TorchRay's on the same float64 weights and images."""
    from torchray.attribution.common import resize_saliency
    from torchray.attribution.excitation_backprop import (contrastive_excitation_backprop,
                                                          excitation_backprop)
    from torchray.attribution.linear_approx import linear_approx

    tm, m, x = _torchray_model(name)
    lay = LAYERS[name]
    assert default_tap(m) == m.resolve(lay["eb"]) and m.spec.cam_tap == m.resolve(lay["la"])
    M = xj.methods

    def run(mm, xx, tt):
        return dict(eb=M.excitation_backprop(mm, xx, tt, variant="torchray"),
                    eb_input=M.excitation_backprop(mm, xx, tt, tap="input", variant="torchray"),
                    ceb=M.contrastive_excitation_backprop(mm, xx, tt, variant="torchray"),
                    la=M.linear_approx(mm, xx, tt))

    with jax.enable_x64(True):
        ours = jax.tree_util.tree_map(np.asarray, jax.jit(run)(
            m, jnp.asarray(x, jnp.float64), jnp.asarray(TARGETS, jnp.int32)))
    xt, t = torch_in(x), TARGETS.tolist()
    eb = excitation_backprop(tm, xt, t, saliency_layer=lay["eb"])
    refs = dict(eb=eb.detach().numpy()[:, 0],
                eb_resized=resize_saliency(xt, eb, True, "bilinear").detach().numpy()[:, 0],
                eb_input=excitation_backprop(tm, xt, t).detach().numpy()[:, 0],
                la=linear_approx(tm, xt, t, saliency_layer=lay["la"],
                                 resize=True).detach().numpy()[:, 0])
    for c in lay["contrasts"]:
        refs[c] = contrastive_excitation_backprop(tm, xt, t, saliency_layer=lay["eb"],
                                                  contrast_layer=c).detach().numpy()[:, 0]
    return ours, refs


@pytest.mark.parametrize("name", MODELS)
def test_excitation_backprop_matches_torchray(name):
    ours, refs = _parity(name)
    eb = ours["eb"]
    assert_rel_close(eb.extras["low_res"], refs["eb"], RTOL, f"MWP at {LAYERS[name]['eb']}")
    assert_rel_close(eb.heatmap, refs["eb_resized"], RTOL, "MWP resized to the input")
    np.testing.assert_allclose(eb.extras["mass"], 1.0, rtol=1e-9)
    # TorchRay's default layer, the input: the first convolution sees the signed image, where
    # the variants differ (TorchRay takes the inputs as they are)
    assert_rel_close(ours["eb_input"].heatmap, refs["eb_input"], RTOL, "MWP at the input")
    assert_rel_close(ours["eb_input"].attribution.sum(-1), refs["eb_input"], RTOL,
                     "per-channel MWP at the input")


@pytest.mark.parametrize("name", MODELS)
def test_contrastive_excitation_backprop_matches_torchray_for_any_contrast_layer(name):
    ours, refs = _parity(name)
    for c in LAYERS[name]["contrasts"]:
        assert_rel_close(ours["ceb"].extras["low_res"], refs[c], RTOL, f"cMWP, contrast at {c}")


@pytest.mark.parametrize("name", MODELS)
def test_linear_approx_matches_torchray(name):
    ours, refs = _parity(name)
    assert_rel_close(ours["la"].heatmap, refs["la"], RTOL,
                     f"linear approximation at {LAYERS[name]['la']}")


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_center_scores_the_torchray_pointing_game_hits(size):
    """TorchRay's centre baseline is the point ``(w/2, h/2)``; with ``point="torchray"`` the
    heatmap's arg-max is that pixel and xaijax's pointing game scores TorchRay's hits on random
    boxes near the centre (some just inside, some just outside the 15-pixel tolerance)."""
    from torchray.benchmark.pointing_game import PointingGame

    h, w = size
    rng = np.random.default_rng(0)
    n = 48
    x0 = w // 2 + rng.integers(-30, 20, n)
    y0 = h // 2 + rng.integers(-30, 20, n)
    x1, y1 = x0 + rng.integers(1, 10, n), y0 + rng.integers(1, 10, n)
    boxes = np.stack([x0, y0, np.minimum(x1, w), np.minimum(y1, h)], 1).clip(0)
    masks = np.asarray(xj.metrics.boxes_to_masks(boxes, size))
    ex = xj.methods.center(None, jnp.zeros((n, h, w, 3)), jnp.zeros(n, jnp.int32),
                           point="torchray")
    point = np.array([w / 2, h / 2])
    np.testing.assert_array_equal(ex.extras["point"][0], point)
    flat = int(np.argmax(np.asarray(ex.heatmap[0])))
    assert (flat % w, flat // w) == tuple(point.astype(int))
    ours = np.asarray(xj.metrics.pointing_game(ex.heatmap, masks, 15))
    game = PointingGame(1, tolerance=15)
    ref = np.array([game.evaluate(torch.tensor(mk), point) for mk in masks]) > 0
    np.testing.assert_array_equal(ours, ref.astype(np.float32))
    assert 0.2 < ref.mean() < 0.8


def test_center_geometric_point_is_the_grid_centre():
    ex = xj.methods.center(None, jnp.zeros((1, 5, 6, 3)), jnp.array([0]))
    top = np.argwhere(np.asarray(ex.heatmap[0]) == np.asarray(ex.heatmap[0]).max())
    assert top.tolist() == [[2, 2], [2, 3]]  # (H-1)/2 = 2, (W-1)/2 = 2.5: two pixels tie
    np.testing.assert_array_equal(ex.extras["point"][0], [2.5, 2.0])


# ------------------------------------------------------------------------------------------------
# the rules against their closed form (Zhang et al. §3.2-3.3)


def _closed_form(a, w, p):
    """The MWP rule by hand for one dense layer:
    P(a_i) = sum_j a_i w+_ij / sum_k a_k w+_kj P(a_j)."""
    wp = np.maximum(w, 0.0)
    return a * ((p / (a @ wp + R.STABILIZER)) @ wp.T)


def test_excitation_and_contrastive_rules_match_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.0, 2.0, (3, 5))
    w = rng.standard_normal((5, 4))
    p = rng.dirichlet(np.ones(4), 3)
    layer = L.Dense(features=4)
    params = {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.ones(4, jnp.float32)}

    def vjp(rule, v):
        y, f = jax.vjp(lambda z: rule(layer, params, z), jnp.asarray(v, jnp.float32))
        np.testing.assert_allclose(y, layer.forward(params, jnp.asarray(v, jnp.float32)),
                                   rtol=1e-6)  # the forward value is the layer's own
        return np.asarray(f(jnp.asarray(p, jnp.float32))[0])

    eb = vjp(R.excitation(), a)
    np.testing.assert_allclose(eb, _closed_form(a, w, p), rtol=1e-5)
    np.testing.assert_allclose(eb.sum(1), p.sum(1), rtol=1e-5)  # mass conserved, bias ignored
    np.testing.assert_allclose(vjp(R.contrastive(), a),
                               _closed_form(a, w, p) - _closed_form(a, -w, p), rtol=1e-5,
                               atol=1e-7)
    signed = a - 1.0  # the variants differ only on negative inputs
    np.testing.assert_allclose(vjp(R.excitation("paper"), signed),
                               _closed_form(np.maximum(signed, 0), w, p), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vjp(R.excitation("torchray"), signed),
                               _closed_form(signed, w, p), rtol=1e-4, atol=1e-6)


def _split(variant, a, b, p):
    _, f = jax.vjp(lambda u, v: R.excitation(variant)(L.Add(), {}, u, v), jnp.array(a),
                   jnp.array(b))
    return [np.asarray(g) for g in f(jnp.array(p))]


def test_residual_sum_splits_in_proportion():
    """The residual sum (weights +1) hands P to its summands in proportion. With a negative
    summand (a BatchNorm output in a ResNet) TorchRay's split goes negative; the paper variant
    splits in proportion to the positive parts, so P stays a distribution."""
    ga, gb = _split("paper", [[1.0, 3.0]], [[3.0, 1.0]], [[1.0, 2.0]])
    np.testing.assert_allclose(ga, [[0.25, 1.5]], rtol=1e-6)
    np.testing.assert_allclose(gb, [[0.75, 0.5]], rtol=1e-6)
    ga, gb = _split("torchray", [[3.0]], [[-1.0]], [[1.0]])
    np.testing.assert_allclose([ga, gb], [[[1.5]], [[-0.5]]], rtol=1e-6)
    ga, gb = _split("paper", [[3.0]], [[-1.0]], [[1.0]])
    np.testing.assert_allclose([ga, gb], [[[1.0]], [[0.0]]], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# properties, jit / vmap, compile once, errors (small CNN and ResNet-18, float32)


@pytest.fixture(scope="module")
def small():
    m = xj.models.get("small_cnn", num_classes=5, seed=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    return m, x, jnp.array([1, 4], jnp.int32)


def _signals(m, x, t, rules, taps):
    """The backward signal at each of ``taps``, one backward pass (edits ``a + delta``)."""
    shapes = m.tap_shapes(x.shape[1:3])

    def score(deltas):
        edits = {k: (lambda a, k=k: a + deltas[k]) for k in taps}
        logits, _ = m.forward(x, edits=edits, rules=rules)
        return jnp.sum(jnp.take_along_axis(logits, t[:, None], 1))

    zeros = {k: jnp.zeros((x.shape[0], *shapes[k]), x.dtype) for k in taps}
    return jax.jit(jax.grad(score))(zeros)


def test_mwp_is_a_probability_distribution_at_every_layer(small):
    """Zhang et al. §3.2: P is non-negative and sums to 1 at every layer (no unit here is
    excited by its bias alone); the contrastive signal sums to 0 (two distributions
    subtracted). (Residual sums: test_residual_sum_splits_in_proportion.)"""
    m, x, t = small
    shapes = m.tap_shapes()
    cuts = [k for k in m.taps if len(shapes[k]) == 3]
    assert len(cuts) >= 10
    sig = _signals(m, x, t, R.composite("paper"), cuts)
    for k, p in sig.items():
        p = np.asarray(p, np.float64)
        assert p.min() >= 0.0, f"negative MWP at {k}"
        np.testing.assert_allclose(p.sum((1, 2, 3)), 1.0, rtol=1e-5, err_msg=k)
    cls = xj.methods.excitation.classifier_tap(m)
    for k, p in _signals(m, x, t, R.composite("paper", classifier=cls), cuts).items():
        np.testing.assert_allclose(np.asarray(p).sum((1, 2, 3)), 0.0, atol=1e-5, err_msg=k)


def test_heatmaps_and_their_signs(small):
    m, x, t = small
    eb = xj.explain(m, x, t, method="excitation_backprop")
    assert eb.extras["low_res"].shape == (2, 8, 8)  # pool2, after the second-to-last block
    np.testing.assert_allclose(eb.extras["low_res"].sum((1, 2)), 1.0, rtol=1e-5)
    ceb = xj.explain(m, x, t, method="contrastive_excitation_backprop")
    assert float(ceb.heatmap.min()) >= 0.0 and float(ceb.heatmap.max()) > 0.0
    la = xj.explain(m, x, t, method="linear_approx", tap="input")
    ixg = xj.explain(m, x, t, method="input_x_gradient")
    np.testing.assert_allclose(la.heatmap, ixg.heatmap, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["excitation_backprop", "contrastive_excitation_backprop",
                                    "linear_approx", "center"])
def test_jit_and_jit_vmap_agree(small, method):
    m, x, t = small
    fn = getattr(xj.methods, method)
    assert_jit_vmap_agree(lambda xx, tt: fn(m, xx, tt).heatmap, x, t)


@pytest.mark.parametrize("method,opts", [
    ("excitation_backprop", {"variant": "torchray"}),
    ("contrastive_excitation_backprop", {}),
    ("linear_approx", {"tap": "relu3"}),
    ("center", {}),
])
def test_repeated_calls_compile_once(small, method, opts, compiles):
    """New images, targets (and for ``center`` a new ``sigma``) reuse the compiled program."""
    m, x, t = small
    argsets = [(x + 0.1 * i, t[::-1] if i % 2 else t, 0.2 + 0.1 * i) for i in range(3)]

    def run(xx, tt, s):
        traced = {"sigma": s} if method == "center" else {}
        return xj.explain(m, xx, tt, method=method, **opts, **traced)

    assert_compiles_once(compiles, run, argsets)


def test_rules_that_match_no_layer_raise_and_name_the_fix():
    import flax.linen as nn

    from xaijax.nn.intercept import RulesMatchedNothing

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Conv(4, (3, 3))(x)).reshape(x.shape[0], -1))

    v = Plain().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    m = xj.models.wrap(Plain(), v, input_size=(8, 8), num_classes=3, mean=(0.5,) * 3,
                       std=(0.5,) * 3)
    x = jnp.ones((1, 8, 8, 3))
    with pytest.raises(RulesMatchedNothing,
                       match=r"look for Conv, Dense.*xaijax\.nn\.layers\.Conv"):
        xj.explain(m, x, 0, method="excitation_backprop", tap="input")
    with pytest.raises(ValueError,
                       match="no xaijax Dense or Conv layer to serve as the classifier"):
        xj.explain(m, x, 0, method="contrastive_excitation_backprop", tap="input")
