"""Descriptors by hand, fit / explain / ablate / average-image properties (Oramas et al. 2019,
§3.1–3.3, §4.1) on a tiny sequential CNN with a hidden Dense layer, and compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax import interpretation as xi
from xaijax.models.vgg import Sequential
from tests.helpers import assert_compiles_once

C = 3
ITEMS = (
    ("conv1", "Conv", dict(features=4, kernel_size=3, padding=1)),
    ("relu1", "ReLU", {}),
    ("pool1", "MaxPool", dict(window=2, strides=2)),
    ("conv2", "Conv", dict(features=6, kernel_size=3, padding=1)),
    ("relu2", "ReLU", {}),
    ("gap", "AdaptiveAvgPool", dict(output_size=1)),
    ("flatten", "Flatten", {}),
    ("fc1", "Dense", dict(features=5)),
    ("relu3", "ReLU", {}),
    ("fc2", "Dense", dict(features=C)),
)


@pytest.fixture(scope="module")
def tiny():
    module = Sequential(items=ITEMS)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return xj.models.wrap(module, variables, input_size=(16, 16), num_classes=C, mean=(0.5,) * 3,
                          std=(0.5,) * 3, name="tiny")


@pytest.fixture(scope="module")
def data():
    d = xj.data.flowers(24, "single6", size=16, seed=1)
    x = (d["images"] - 0.5) / 0.5
    return d["images"], x.astype(np.float32), d["labels"] % C


@pytest.fixture(scope="module")
def fit(tiny, data):
    return xi.fit_relevant_filters(tiny, data[1], data[2], mu=1.0, batch_size=16)


def test_descriptor_layers_are_conv_and_dense_but_the_last_read_after_their_relu(tiny):
    assert xi.descriptor_layers(tiny) == (("conv1", "relu1", "Conv"), ("conv2", "relu2", "Conv"),
                                          ("fc1", "relu3", "Dense"))
    assert [t[0] for t in xi.descriptor_layers(tiny, "conv")] == ["conv1", "conv2"]
    with pytest.raises(ValueError, match="not descriptor layers"):
        xi.descriptor_layers(tiny, ["fc2"])


def _descr16(model, x):
    """Descriptors by the jitted function that fit_relevant_filters compiled (batches of 16)."""
    from xaijax.interpretation.relevant import _batched, _descr_jit
    return _batched(lambda b: _descr_jit(model, b, "all"), np.asarray(x), 16)


def test_descriptors_by_hand(tiny, data):
    x = data[1][:16]
    _, acts = jax.jit(lambda z: tiny.forward(z, capture=["relu1", "relu2", "relu3"]))(x)
    parts = []
    for t in ("relu1", "relu2"):
        a = np.asarray(acts[t], np.float64)
        n = np.sqrt((a ** 2).sum(axis=(1, 2)))          # L2 over H, W per channel
        parts.append(n / n.sum(1, keepdims=True))          # L1-normalised per layer
    a = np.abs(np.asarray(acts["relu3"], np.float64))
    parts.append(a / a.sum(1, keepdims=True))
    want = np.concatenate(parts, 1)
    got = _descr16(tiny, x)
    assert got.shape == (16, 4 + 6 + 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[:, :4].sum(1), 1.0, rtol=1e-6)


def test_fit_is_the_mu_lasso_of_the_descriptors(tiny, data, fit):
    d = _descr16(tiny, data[1])
    lab = np.eye(C, dtype=np.float32)[data[2]]
    w = np.asarray(xi.mu_lasso(jnp.asarray(d.T), jnp.asarray(lab.T), 1.0, max_iter=2000, tol=1e-5))
    np.testing.assert_allclose(np.asarray(fit.weights), w, atol=1e-5)
    assert fit.layers == ("conv1", "conv2", "fc1") and fit.sizes == (4, 6, 5)
    assert np.all(np.abs(np.asarray(fit.weights)).sum(0) <= 1.0 + 1e-5)
    rel = fit.relevant(0)
    assert [r[2] for r in rel] == sorted((r[2] for r in rel), reverse=True)
    nz = np.nonzero(np.asarray(fit.weights)[:, 0])[0]
    assert {(ly, f) for ly, f, _ in rel} == {fit.pair(r) for r in nz}
    sel = fit.selection()
    assert sum(len(v) for v in sel.values()) == int(np.any(np.asarray(fit.weights) != 0, 1).sum())


def test_explain_ranks_weighted_responses_and_matches_single_filter_guided_backprop(tiny, data,
                                                                                   fit):
    x = jnp.asarray(data[1][:4])
    k = 3
    ex = xi.explain_by_interpretation(tiny, x, fit, k=k)
    np.testing.assert_array_equal(ex.target, np.argmax(np.asarray(tiny(x)), 1))
    r = _descr16(tiny, data[1][:16])[:4] * np.asarray(fit.weights).T[np.asarray(ex.target)]
    np.testing.assert_allclose(ex.scores, -np.sort(-r, 1)[:, :k], rtol=1e-5, atol=1e-8)
    assert ex.heatmaps.shape == (4, k, 16, 16)
    gb = jax.jit(lambda z, t, f, tap: xj.methods.guided_backprop(
        tiny, z, t, tap=tap, filter=f, stride_fix=True).heatmap, static_argnums=3)
    checked = 0
    for j in range(k):
        for li, tap in enumerate(fit.taps):
            on = np.asarray(ex.layer[:, j]) == li
            if not on.any():
                continue
            ref = gb(x, ex.target, jnp.where(on, ex.filter[:, j], 0), tap)
            np.testing.assert_allclose(ex.heatmaps[on, j], ref[on], rtol=1e-4, atol=1e-6)
            checked += int(on.sum())
    assert checked == 4 * k
    for i, j in [(0, 0), (3, 2)]:
        assert fit.pair(int(ex.features[i, j])) == (fit.layers[int(ex.layer[i, j])],
                                                    int(ex.filter[i, j]))


def test_upsampled_feedback_is_the_resized_activation_and_zero_for_dense(tiny, data, fit):
    x = jnp.asarray(data[1][:4])
    ex = xi.explain_by_interpretation(tiny, x, fit, k=fit.weights.shape[0], feedback="upsampled")
    _, acts = tiny.forward(x, capture=list(fit.taps))
    for i, j in [(0, 0), (1, 2), (2, 7), (3, 14)]:
        layer, f = fit.pair(int(ex.features[i, j]))
        a = acts[fit.taps[fit.layers.index(layer)]]
        if a.ndim == 2:
            assert float(jnp.abs(ex.heatmaps[i, j]).max()) == 0.0
        else:
            want = jax.image.resize(a[i, ..., f], (16, 16), "bilinear")
            np.testing.assert_allclose(ex.heatmaps[i, j], np.maximum(want, 0), rtol=1e-5,
                                       atol=1e-6)
    with pytest.raises(ValueError, match="feedback must be one of"):
        xi.explain_by_interpretation(tiny, x, fit, k=2, feedback="cam")


def test_ablation_equals_zeroing_the_next_layers_input_weights(tiny, data):
    x = data[1]
    sel = {"conv1": [0, 2], "fc1": [1]}
    v = jax.tree_util.tree_map(np.array, tiny.variables)
    v["params"]["conv2"]["kernel"][:, :, [0, 2], :] = 0.0   # relu1 channels 0, 2 feed nothing
    v["params"]["fc2"]["kernel"][1, :] = 0.0                # relu3 unit 1 feeds nothing
    cut = tiny.replace_variables(v)
    pred_cut = np.argmax(np.asarray(cut(jnp.asarray(x))), 1)
    assert xi.ablate_filters(tiny, x, pred_cut, sel, batch_size=10) == 1.0
    pred = np.argmax(np.asarray(tiny(jnp.asarray(x))), 1)
    assert xi.ablate_filters(tiny, x, pred, {}, batch_size=10) == 1.0
    assert xi.ablate_filters(tiny, x, pred, [("conv1", 0), ("conv1", 2), ("fc1", 1)],
                             batch_size=10) == np.mean(pred == pred_cut)
    with pytest.raises(ValueError, match="out of range"):
        xi.ablate_filters(tiny, x, pred, {"conv1": [4]})


def test_random_filters_match_the_selection_size(fit):
    sel = fit.selection()
    for per_layer in (False, True):
        rnd = xi.random_filters(fit, jax.random.key(1), per_layer=per_layer)
        assert sum(len(v) for v in rnd.values()) == sum(len(v) for v in sel.values())
        if per_layer:
            assert {k: len(v) for k, v in rnd.items()} == {k: len(v) for k, v in sel.items()}


def test_receptive_fields_contain_the_gradient_support(tiny):
    rf = xi.receptive_fields(tiny)
    assert rf["relu1"] == (3, 1.0, 0.0) and rf["pool1"] == (4, 2.0, 0.5)
    assert rf["relu2"] == (8, 2.0, 0.5) and rf["fc1"][0] == 0
    # the input pixels that unit (i, j) of relu2 depends on lie in its computed window
    i, j = 3, 5
    g = jax.jit(jax.grad(lambda z: jnp.sum(tiny.forward(z, capture=["conv2"])[1]["conv2"][0, i, j])))(
        jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 16, 3)), jnp.float32))
    rows, cols = np.nonzero(np.abs(np.asarray(g[0])).sum(-1))
    size, jump, start = rf["conv2"]
    lo_i, lo_j = start + i * jump - (size - 1) / 2, start + j * jump - (size - 1) / 2
    assert rows.min() >= lo_i and rows.max() <= lo_i + size - 1
    assert cols.min() >= lo_j and cols.max() <= lo_j + size - 1


def test_average_image_of_top_one_is_the_crop_at_the_maximum(tiny, data, fit):
    images, x, _ = data
    avg = xi.average_images(tiny, images, fit, inputs=x, top=1, batch_size=16)
    assert set(avg) == {(ly, f) for ly, f, _ in fit.relevant()}
    _, acts = tiny.forward(jnp.asarray(x), capture=["relu2"])
    a = np.asarray(acts["relu2"])
    for (layer, f), im in avg.items():
        if layer == "fc1":
            assert im.shape == (16, 16, 3)
            continue
        if layer != "conv2":
            continue
        n = int(np.argmax(a[..., f].reshape(len(a), -1).max(1)))
        pi, pj = np.unravel_index(np.argmax(a[n, ..., f]), a.shape[1:3])
        top, left = int(round(0.5 + 2 * pi - 3.5)), int(round(0.5 + 2 * pj - 3.5))
        padded = np.pad(images[n], ((8, 8), (8, 8), (0, 0)))
        np.testing.assert_allclose(im, padded[top + 8:top + 16, left + 8:left + 16], atol=1e-6)


def test_explain_and_ablate_compile_once(tiny, data, fit, compiles):
    x = data[1]
    xs = [jnp.asarray(x[:4]), jnp.asarray(x[4:8])]
    assert_compiles_once(compiles, lambda z: xi.explain_by_interpretation(tiny, z, fit, k=3),
                         [(z,) for z in xs])
    y = data[2]
    assert_compiles_once(compiles, lambda s: xi.ablate_filters(tiny, x[:8], y[:8], s),
                         [({"conv1": [0]},), ({"conv2": [1, 3], "fc1": [0]},)])
