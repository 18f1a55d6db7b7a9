import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.nn import layers as L


@pytest.fixture(scope="module")
def model():
    return xj.models.get("small_cnn", num_classes=5)


def test_capture_returns_pre_edit_activations_and_edit_changes_output(model):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    y0, acts = model.forward(x, capture=["relu5"])
    y1, acts1 = model.forward(x, capture=["relu5"], edits={"relu5": lambda a: a * 0.0})
    np.testing.assert_allclose(acts["relu5"], acts1["relu5"])
    # zeroing the last features leaves only the dense bias
    np.testing.assert_allclose(y1, jnp.broadcast_to(model.variables["params"]["fc"]["bias"],
                                                    y1.shape), rtol=1e-6)
    np.testing.assert_allclose(y0, model(x), rtol=1e-6)


def test_gradient_wrt_tap_through_additive_edit_matches_split_network(model):
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 32, 32, 3))

    def score(delta):
        y, _ = model.forward(x, edits={"relu5": lambda a: a + delta})
        return y[0, 2]

    g = jax.grad(score)(jnp.zeros((1, 8, 8, 64)))
    w = model.variables["params"]["fc"]["kernel"][:, 2]
    # d logit / d relu5 = w / (8*8) at every position (GAP then dense)
    np.testing.assert_allclose(g[0], jnp.broadcast_to(w / 64.0, (8, 8, 64)), rtol=1e-5)


def test_rules_replace_backward_pass_without_editing_model(model):
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 32, 32, 3))

    @jax.custom_vjp
    def relu_zero_grad(a):
        return jnp.maximum(a, 0)

    relu_zero_grad.defvjp(lambda a: (jnp.maximum(a, 0), None), lambda _, g: (jnp.zeros_like(g),))
    rules = xj.nn.by_type({L.ReLU: lambda layer, params, a: relu_zero_grad(a)})

    def f(z, rules):
        return model.forward(z, rules=rules)[0][0, 0]

    assert np.abs(jax.grad(f)(x, None)).max() > 0
    assert np.abs(jax.grad(lambda z: f(z, rules))(x)).max() == 0
    np.testing.assert_allclose(f(x, rules), f(x, None), rtol=1e-6)


def test_unknown_tap_errors_name_the_tap(model):
    with pytest.raises(ValueError, match="unknown tap 'nope'"):
        model.forward(jnp.zeros((1, 32, 32, 3)), capture=["nope"])
    with pytest.raises(ValueError, match="unknown tap"):
        model.forward(jnp.zeros((1, 32, 32, 3)), edits={"nope": lambda a: a})


def test_interception_works_under_jit_and_vmap(model):
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 32, 32, 3))
    f = jax.jit(lambda z: model.forward(z, capture=["conv1"])[1]["conv1"])
    np.testing.assert_allclose(f(x), model.forward(x, capture=["conv1"])[1]["conv1"], rtol=1e-6)
    fv = jax.vmap(lambda z: model.forward(z[None], capture=["relu2"])[1]["relu2"][0])
    np.testing.assert_allclose(fv(x), model.forward(x, capture=["relu2"])[1]["relu2"],
                               rtol=1e-5, atol=1e-6)


def test_list_taps_in_forward_order_with_types(model):
    shapes = model.tap_shapes()
    assert list(shapes)[:3] == ["conv1", "relu1", "conv2"]
    assert shapes["relu5"] == (8, 8, 64)
    assert model.tap_type("relu5") == "ReLU"
    assert model.nonlinearity_taps == ("relu1", "relu2", "relu3", "relu4", "relu5")


def test_observer_sees_every_layer_and_changes_nothing(model):
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 32, 32, 3))
    seen = {}

    def observe(layer, params, inputs, y):
        seen[layer.tap] = (type(layer).__name__, inputs[0].shape, y.shape, sorted(params))

    y, _ = model.forward(x, observe=observe)
    np.testing.assert_array_equal(y, model(x))
    assert list(seen) == list(model.taps)
    assert seen["conv1"] == ("Conv", (1, 32, 32, 3), (1, 32, 32, 16), ["bias", "kernel"])
    assert seen["pool1"][0] == "MaxPool" and seen["pool1"][2] == (1, 16, 16, 16)


def test_a_composite_that_matches_nothing_is_an_error(model):
    from xaijax.nn.intercept import RulesMatchedNothing, by_type
    from xaijax.rules.relu import guided_relu

    x = jnp.ones((1, 32, 32, 3))
    only_relu6 = by_type({L.ReLU6: guided_relu})
    with pytest.raises(RulesMatchedNothing, match=r"look for ReLU6.*xaijax\.nn\.layers\.ReLU6"):
        model.forward(x, rules=only_relu6)
    # a rule that does match (ReLU) satisfies a requirement on any of the listed types
    model.forward(x, rules=by_type({L.ReLU: guided_relu}), require=(L.ReLU, L.ReLU6))
    with pytest.raises(RulesMatchedNothing, match="look for BatchNorm"):
        model.forward(x, rules=by_type({L.ReLU: guided_relu}), require=(L.BatchNorm,))
