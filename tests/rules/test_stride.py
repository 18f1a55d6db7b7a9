"""The Oramas stride fix (§3.3, Eq. 2-3) against loop-by-loop numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xaijax.nn import layers as L
from xaijax.rules.stride import (grid_energy, resample_nearest, stride_fix_rules, stride_fixed)


def _rule_backward(layer, params, x, g):
    y, vjp = jax.vjp(lambda p, z: stride_fixed(layer, p, z), params, x)
    return y, vjp(g)


def _nearest(g, new):
    """numpy nearest neighbour with half-pixel centres, one axis at a time (MATLAB imresize)."""
    b = g.shape[0]
    idx = [min(int(np.floor((i + 0.5) * b / new)), b - 1) for i in range(new)]
    return g[idx][:, idx]


def test_resample_nearest_matches_half_pixel_formula_and_jax_image_resize():
    g = np.random.default_rng(0).standard_normal((1, 5, 5, 2)).astype(np.float32)
    out = np.asarray(resample_nearest(jnp.asarray(g), (9, 9)))
    np.testing.assert_array_equal(out[0, ..., 0], _nearest(g[0, ..., 0], 9))
    np.testing.assert_array_equal(out, jax.image.resize(g, (1, 9, 9, 2), "nearest"))


@pytest.mark.parametrize("a,m,s,o", [(7, 3, 2, 1), (8, 3, 2, 0), (9, 5, 3, 2)])
def test_strided_conv_backward_is_stride_one_transpose_of_resampled_signal(a, m, s, o):
    rng = np.random.default_rng(1)
    layer = L.Conv(features=2, kernel_size=m, strides=s, padding=o)
    k = rng.standard_normal((m, m, 3, 2)).astype(np.float32)
    params = {"kernel": jnp.asarray(k), "bias": jnp.asarray([0.5, -0.5], jnp.float32)}
    x = jnp.asarray(rng.standard_normal((1, a, a, 3)).astype(np.float32))
    b = (a + 2 * o - m) // s + 1  # Eq. 3
    g = rng.standard_normal((1, b, b, 2)).astype(np.float32)
    y, (p_ct, x_ct) = _rule_backward(layer, params, x, jnp.asarray(g))
    np.testing.assert_allclose(y, layer.forward(params, x), rtol=1e-6)  # forward unchanged
    b1 = a + 2 * o - m + 1  # B|_{S=1}
    gr = np.stack([_nearest(g[0, ..., c], b1) for c in range(2)], -1)
    ref = np.zeros((a + 2 * o, a + 2 * o, 3))
    for u in range(b1):
        for v in range(b1):  # stride-1 transpose: each output spreads g' over its window
            ref[u:u + m, v:v + m] += np.einsum("ijco,o->ijc", k, gr[u, v])
    ref = ref[o:o + a, o:o + a]
    np.testing.assert_allclose(x_ct[0], ref, rtol=1e-5, atol=1e-5)
    # the parameter cotangent is the ordinary one
    p_ref = jax.vjp(layer.forward, params, x)[1](jnp.asarray(g))[0]
    np.testing.assert_allclose(p_ct["kernel"], p_ref["kernel"], rtol=1e-6)


@pytest.mark.parametrize("kind", ["MaxPool", "AvgPool"])
def test_strided_pool_backward_uses_stride_one_windows(kind):
    rng = np.random.default_rng(2)
    a, m, s, o = 7, 3, 2, 1
    layer = getattr(L, kind)(window=m, strides=s, padding=o)
    x = rng.standard_normal((1, a, a, 1)).astype(np.float32)
    b = (a + 2 * o - m) // s + 1
    g = rng.standard_normal((1, b, b, 1)).astype(np.float32)
    _, (_, x_ct) = _rule_backward(layer, {}, jnp.asarray(x), jnp.asarray(g))
    b1 = a + 2 * o - m + 1
    gr = _nearest(g[0, ..., 0], b1)
    xp = np.pad(x[0, ..., 0], o, constant_values=-np.inf)
    ref = np.zeros((a + 2 * o, a + 2 * o))
    for u in range(b1):
        for v in range(b1):
            win = xp[u:u + m, v:v + m]
            if kind == "MaxPool":  # the stride-1 switch: first maximum in the window
                i, j = np.unravel_index(np.argmax(win), win.shape)
                ref[u + i, v + j] += gr[u, v]
            else:  # count_include_pad: every window averages m*m values
                ref[u:u + m, v:v + m] += gr[u, v] / (m * m)
    np.testing.assert_allclose(x_ct[0, ..., 0], ref[o:o + a, o:o + a], rtol=1e-5, atol=1e-6)


def test_stride_one_layers_keep_their_gradient():
    layer = L.MaxPool(window=3, strides=1, padding=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 5, 2))
    g = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 2))
    _, (_, a) = _rule_backward(layer, {}, x, g)
    np.testing.assert_allclose(a, jax.vjp(lambda z: layer.forward({}, z), x)[1](g)[0])
    comp = stride_fix_rules()
    assert comp(L.Conv()) is stride_fixed and comp(L.AvgPool()) is stride_fixed
    assert comp(L.ReLU()) is None


def test_grid_energy():
    grid = jnp.tile(jnp.array([[1.0, 0.0], [0.0, 0.0]]), (8, 8))[None]
    np.testing.assert_allclose(grid_energy(grid, 2), [1.0], rtol=1e-6)
    smooth = jnp.outer(jnp.hanning(16), jnp.hanning(16))[None]
    assert float(grid_energy(smooth, 2)[0]) < 1e-3
    with pytest.raises(ValueError, match="divide the heatmap size"):
        grid_energy(grid, 3)
