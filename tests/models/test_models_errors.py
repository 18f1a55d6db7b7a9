"""Bad input to the zoo fails with an error that names the problem (issue 2, "Bad input")."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj


@functools.lru_cache(maxsize=None)
def _skeleton(name):
    # shapes and checks only: zero variables, no random-init compilation
    return xj.models.build(name, random_init=False)


@pytest.fixture(scope="module")
def resnet():
    return _skeleton("resnet18")


@pytest.fixture(scope="module")
def small():
    return _skeleton("small_cnn")


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_wrong_rank_single_image(resnet):
    with pytest.raises(ValueError, match=r"NHWC with 4 dimensions; got shape \(64, 64, 3\) "
                                         r"— add a batch axis with x\[None\]"):
        resnet(jnp.zeros((64, 64, 3)))


@pytest.mark.parametrize("shape", [(64, 64), (1, 2, 64, 64, 3)])
def test_wrong_rank(resnet, shape):
    with pytest.raises(ValueError, match=rf"4 dimensions; got shape {re_shape(shape)}"):
        resnet(jnp.zeros(shape))


def test_channels_first_is_detected(resnet):
    with pytest.raises(ValueError, match=r"did you pass NCHW\? use x\.transpose\(0, 2, 3, 1\)"):
        resnet(jnp.zeros((2, 3, 64, 64)))


def test_channels_first_is_detected_under_jit(resnet):
    with pytest.raises(ValueError, match="did you pass NCHW"):
        jax.jit(lambda m, z: m(z))(resnet, jnp.zeros((2, 3, 64, 64)))


def test_wrong_channel_count(resnet):
    with pytest.raises(ValueError,
                       match=r"3 channels in the last axis; got shape \(2, 64, 64, 1\)"):
        resnet(jnp.zeros((2, 64, 64, 1)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.bool_])
def test_integer_images_are_refused(resnet, dtype):
    with pytest.raises(TypeError, match=r"float32 in the model's normalised space; got dtype "
                                        r".*xj\.models\.preprocess"):
        resnet(np.zeros((2, 64, 64, 3), dtype))


def test_non_array_is_refused(resnet):
    with pytest.raises(TypeError, match=r"array of shape \(N, H, W, C\); got list"):
        resnet([[0.0]])


@pytest.mark.parametrize("name,size", [("resnet18", 31), ("googlenet", 16), ("vgg16", 16),
                                       ("alexnet", 62)])
def test_too_small_image(name, size):
    model = _skeleton(name)
    with pytest.raises(ValueError, match=rf"model '{name}' needs images of at least "
                                         rf"{model.spec.min_size}x{model.spec.min_size}; got "
                                         rf"{size}x{size + 8}"):
        model(jnp.zeros((1, size, size + 8, 3)))


def test_min_size_is_accepted_by_every_zoo_architecture():
    """The documented minimum really runs (shapes only: no compilation)."""
    for name in ("resnet18", "resnet50", "googlenet", "alexnet"):
        model = _skeleton(name)
        s = model.spec.min_size
        out = jax.eval_shape(model.apply_fn, jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))
        assert out.shape == (1, 1000), name


def test_fixed_size_head_refuses_other_sizes(small):
    fixed = dataclasses.replace(small, spec=dataclasses.replace(small.spec, fixed_size=(32, 32)))
    with pytest.raises(ValueError, match=r"fixed-size head that takes 32x32 images; got 40x40"):
        fixed(jnp.zeros((1, 40, 40, 3)))
    assert fixed(jnp.zeros((1, 32, 32, 3))).shape == (1, 10)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'; available: \[.*'resnet18'"):
        xj.models.get("resnet19")


def test_unknown_tap_name(resnet):
    with pytest.raises(ValueError, match=r"unknown tap 'layer9' for model 'resnet18'.*"
                                         r"Block outputs: \['relu', 'layer1\.1\.relu2'"):
        resnet.forward(jnp.zeros((1, 64, 64, 3)), capture=["layer9"])
    with pytest.raises(ValueError, match=r"unknown tap 'layer4\.1\.relu'.*similar: \["):
        resnet.resolve("layer4.1.relu")


def test_unknown_edit_tap(resnet):
    with pytest.raises(ValueError, match="unknown tap 'fc2'"):
        resnet.forward(jnp.zeros((1, 64, 64, 3)), edits={"fc2": lambda a: a})


def test_aliases_resolve_to_taps(resnet):
    assert resnet.resolve("layer4") == "layer4.1.relu2" == resnet.spec.cam_tap
    assert resnet.resolve("layer2.0") == "layer2.0.relu2"
    g = _skeleton("googlenet")
    assert g.resolve("conv1") == "conv1.relu"
    assert g.resolve("inception4a.branch3") == "inception4a.branch3.1.relu"


def test_nan_and_inf_are_named():
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[0, 2, 5, 1] = np.nan
    x[0, 3, 0, 0] = np.inf
    with pytest.raises(ValueError,
                       match=r"2 NaN/inf value\(s\), the first at index \(0, 2, 5, 1\)"):
        xj.models.check_finite(x)


def test_pretrained_for_architecture_without_shipped_weights():
    with pytest.raises(ValueError, match=r"no pretrained weights are shipped for 'resnet18'.*"
                                         r"weights=FILE"):
        xj.models.get("resnet18", pretrained=True)


def test_pretrained_and_weights_together():
    with pytest.raises(ValueError, match="either pretrained=True or weights=FILE"):
        xj.models.get("resnet18", pretrained=True, weights="x.pth")


def test_models_build_and_run_with_x64_enabled():
    # variables stay float32 when the user switched on 64-bit mode globally
    with jax.enable_x64(True):
        m = xj.models.get("small_cnn", num_classes=3)
        assert {str(a.dtype) for a in jax.tree_util.tree_leaves(m.variables)} == {"float32"}
        y = m(jnp.zeros((1, *m.spec.input_size, 3), jnp.float32))
    assert y.shape == (1, 3) and y.dtype == jnp.float32


def test_eager_call_is_compiled_and_respects_interceptors():
    import flax.linen as nn

    from xaijax.models import base

    m = xj.models.get("small_cnn", num_classes=3)
    x = jnp.ones((2, 32, 32, 3))
    before = base._compiled_apply._cache_size()
    y = m(x)
    assert base._compiled_apply._cache_size() == before + 1
    np.testing.assert_allclose(y, m.apply_fn(x), rtol=1e-6)
    seen = []

    def spy(next_fun, args, kwargs, context):
        seen.append(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        m(x)
    assert "Conv" in seen


def test_variables_of_another_shape_name_the_layer_and_both_shapes():
    """A parameter is read without flax's eval_shape check (nn.layers.Layer._param), so the
    layer checks the shape itself."""
    m = xj.models.build("small_cnn", random_init=False)
    v = jax.tree_util.tree_map(lambda a: a, m.variables)
    v["params"]["conv2"]["kernel"] = jnp.zeros((3, 3, 16, 8))
    with pytest.raises(ValueError, match=r"parameter 'kernel' of layer 'conv2' has shape "
                                         r"\(3, 3, 16, 8\); this layer expects \(3, 3, 16, 16\)"):
        m.replace_variables(v)(jnp.zeros((1, 32, 32, 3)))
