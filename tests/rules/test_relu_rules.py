"""ReLU rules against closed forms on tiny layers (zennit practice)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.nn import layers as L
from xaijax.rules.relu import (deconvnet_relu, deconvnet_rules, forward_mask, guided_backprop_rules,
                               guided_relu)

X = jnp.array([[-2.0, -0.5, 0.0, 0.5, 3.0, 6.0, 7.0]])
G = jnp.array([[1.0, -1.0, 2.0, -3.0, 4.0, 5.0, -6.0]])


def _backward(rule, layer, x, g):
    y, vjp = jax.vjp(lambda z: rule(layer, {}, z), x)
    return y, vjp(g)[0]


def test_guided_relu_zeroes_negative_gradients_and_negative_inputs():
    y, gx = _backward(guided_relu, L.ReLU(), X, G)
    np.testing.assert_array_equal(y, np.maximum(X, 0))
    # relu(g) * [x > 0]  (survey Fig. 5d); x = 0 counts as inactive (torch convention)
    np.testing.assert_array_equal(gx, [[0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0]])


def test_deconvnet_relu_rectifies_the_signal_and_ignores_the_forward_mask():
    y, gx = _backward(deconvnet_relu, L.ReLU(), X, G)
    np.testing.assert_array_equal(y, np.maximum(X, 0))
    np.testing.assert_array_equal(gx, np.maximum(G, 0))  # Fig. 5c


def test_relu6_rules_use_its_own_mask():
    y, gx = _backward(guided_relu, L.ReLU6(), X, G)
    np.testing.assert_array_equal(y, np.clip(X, 0, 6))
    np.testing.assert_array_equal(gx, [[0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0]])  # 0 < x < 6
    _, gd = _backward(deconvnet_relu, L.ReLU6(), X, G)
    np.testing.assert_array_equal(gd, np.maximum(G, 0))


def test_rules_reject_other_layers():
    with pytest.raises(TypeError, match="ReLU rules apply to xaijax ReLU / ReLU6 layers; got "
                                        "Identity"):
        guided_relu(L.Identity(tap="id"), {}, X)
    with pytest.raises(TypeError):
        forward_mask(L.Conv(), X)


def test_composites_place_rules_on_rectifiers_only():
    for comp, rule in ((guided_backprop_rules(), guided_relu), (deconvnet_rules(), deconvnet_relu)):
        assert comp(L.ReLU()) is rule and comp(L.ReLU6()) is rule
        assert comp(L.Conv()) is None and comp(L.MaxPool()) is None


def test_guided_backprop_on_a_network_equals_hand_written_chain():
    """conv -> relu -> dense on a tiny input: guided backprop = W1^T (relu(W2^T e_c) * [z > 0])."""
    m = xj.models.get("small_cnn", num_classes=3, seed=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 3))
    ex = xj.methods.guided_backprop(m, x, jnp.array([2]))

    def manual(z):
        # ordinary gradient, with every ReLU's backward replaced through the identity
        # relu(g) * mask, written with stop-gradient algebra instead of custom_vjp
        @jax.custom_vjp
        def gr(a):
            return jnp.maximum(a, 0)

        gr.defvjp(lambda a: (jnp.maximum(a, 0), a),
                  lambda a, g: (jnp.where(a > 0, jnp.maximum(g, 0), 0.0),))
        comp = xj.nn.by_type({L.ReLU: lambda layer, p, a: gr(a)})
        return m.forward(z, rules=comp)[0][0, 2]

    np.testing.assert_allclose(ex.attribution, jax.grad(manual)(x), rtol=1e-6, atol=1e-9)
