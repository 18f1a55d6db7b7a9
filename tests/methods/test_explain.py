"""The explain() entry point: input validation, targets, jit caching, plain-callable models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.methods import base


@pytest.fixture(scope="module")
def model():
    return xj.models.get("small_cnn", num_classes=6)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(0), (3, 32, 32, 3))


def test_top1_int_and_per_image_targets(model, x):
    top = np.argmax(np.asarray(model(x)), -1)
    assert np.array_equal(xj.explain(model, x, "top1").target, top)
    assert np.array_equal(xj.explain(model, x, 4).target, [4, 4, 4])
    assert np.array_equal(xj.explain(model, x, [0, 1, 2]).target, [0, 1, 2])


def test_gradient_heatmap_is_max_abs_channel_gradient(model, x):
    ex = xj.explain(model, x, [1, 2, 3], method="gradient")
    g = jax.grad(lambda z: model(z)[jnp.arange(3), jnp.array([1, 2, 3])].sum())(x)
    np.testing.assert_allclose(ex.attribution, g, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ex.heatmap, np.abs(g).max(-1), rtol=1e-5, atol=1e-8)
    assert ex.heatmap.shape == (3, 32, 32) and ex.method == "gradient"


def test_plain_callable_model_is_accepted_for_function_level_methods(model, x):
    f = lambda z: model.apply_fn(z)  # noqa: E731 - any JAX callable
    a = xj.explain(f, x, 2, method="gradient").heatmap
    b = xj.explain(model, x, 2, method="gradient").heatmap
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("bad,err,match", [
    (np.zeros((32, 32, 3), np.float32), ValueError, "4 dimensions"),
    (np.zeros((2, 3, 32, 32), np.float32), ValueError, "NCHW"),
    (np.zeros((2, 32, 32, 3), np.uint8), TypeError, "float32"),
    (np.zeros((2, 32, 32, 4), np.float32), ValueError, "3 channels"),
    (np.zeros((2, 4, 4, 3), np.float32), ValueError, "at least"),
])
def test_bad_inputs_have_clear_errors(model, bad, err, match):
    with pytest.raises(err, match=match):
        xj.explain(model, bad, 0)


def test_nan_input_is_refused_with_position(model, x):
    bad = np.array(x)
    bad[1, 3, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\), the first at index \(1, 3, 4, 2\)"):
        xj.explain(model, bad, 0)


def test_unknown_class_method_and_option(model, x):
    with pytest.raises(ValueError, match="unknown class 6"):
        xj.explain(model, x, 6)
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        xj.explain(model, x, [1, 2])
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        xj.explain(model, x, 0, method="nope")
    with pytest.raises(TypeError, match="no option"):
        xj.explain(model, x, 0, method="gradient", steps=3)
    with pytest.raises(ValueError, match="unknown class 9"):
        xj.explain(lambda z: model.apply_fn(z), x, 9)


def test_repeated_calls_with_new_values_compile_once(model):
    calls = []
    name = "_trace_counter"

    @base.register(name)
    def counting(m, x, target, scale=1.0):
        calls.append(1)
        return xj.Explanation(heatmap=x[..., 0] * scale, target=target, method=name)

    try:
        for i in range(3):
            xj.explain(model, jnp.full((2, 32, 32, 3), float(i)), i, method=name, scale=0.5 + i)
        assert len(calls) == 1
    finally:
        base._METHODS.pop(name)


def test_string_and_none_options_are_passed_as_static(model, x):
    calls = []
    name = "_static_option"

    @base.register(name)
    def with_mode(m, x, target, mode="a", scale=1.0):
        calls.append(mode)
        return xj.Explanation(heatmap=x[..., 0] * (2.0 if mode == "b" else 1.0) * scale,
                              target=target, method=name)

    try:
        a = xj.explain(model, x, 0, method=name, mode="a", scale=1.0).heatmap
        b = xj.explain(model, x, 0, method=name, mode="b", scale=1.0).heatmap
        np.testing.assert_allclose(b, 2 * a)
        xj.explain(model, x, 0, method=name, mode="b", scale=3.0)
        assert calls == ["a", "b"]
    finally:
        base._METHODS.pop(name)
