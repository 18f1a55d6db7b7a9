"""The explain() entry point: input validation, targets, jit caching, plain-callable models."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.methods import base
from tests.helpers import assert_compiles_once


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


# ------------------------------------------------------------------------------------------------
# every option check of every method, through explain (values and static options alike)

_X = (2, 32, 32, 3)
_CHECKS = [
    # backprop
    ("guided_backprop", dict(tap="relu3", filter=999), ValueError, r"channel of tap 'relu3', in 0\.\.31"),
    ("deconvnet", dict(tap="relu3", filter=[1, -1]), ValueError, "channel of tap"),
    ("guided_backprop", dict(tap="relu3", filter=[1, 2, 3]), ValueError, r"shape \(2,\)"),
    ("guided_backprop", dict(start="middle"), ValueError, "start must be one of"),
    ("guided_backprop", dict(tap="nope"), ValueError, "unknown tap 'nope'"),
    # relevance
    ("lrp", dict(composite="alpha_beta", alpha=3, beta=1), ValueError, "α = β \\+ 1"),
    ("lrp", dict(composite="epsilon_alpha_beta", alpha=2.0, beta=-1.0), ValueError, "α, β >= 0"),
    ("lrp", dict(composite="nope"), ValueError, "unknown LRP composite 'nope'"),
    ("lrp", dict(composite="epsilon", epsilon=-0.1), ValueError, "epsilon must be >= 0"),
    ("lrp", dict(composite=3), TypeError, "preset name or a composite"),
    ("deeplift", dict(rule="nope"), ValueError, "unknown DeepLIFT rule"),
    ("deeplift", dict(maxpool="nope"), ValueError, "maxpool must be one of"),
    ("deeplift", dict(baseline="ones"), ValueError, "baseline must be None, 'zeros' or an array"),
    ("deeplift", dict(baseline=np.zeros((5, 5, 3), np.float32)), ValueError, "does not broadcast"),
    # excitation backprop, linear approximation, centre baseline
    ("excitation_backprop", dict(variant="nope"), ValueError, r"variant must be one of \('paper'"),
    ("excitation_backprop", dict(tap="nope"), ValueError, "unknown tap 'nope'"),
    ("excitation_backprop", dict(tap="fc"), ValueError, "spatial feature map"),
    ("contrastive_excitation_backprop", dict(classifier="relu3"), ValueError,
     "classifier must be a Dense or Conv layer"),
    ("contrastive_excitation_backprop", dict(classifier="conv3"), ValueError,
     "tap 'pool2' must lie below the classifier 'conv3'"),
    ("contrastive_excitation_backprop", dict(variant="torch"), ValueError, "variant must be"),
    ("linear_approx", dict(tap="nope"), ValueError, "unknown tap 'nope'"),
    ("linear_approx", dict(tap="flatten"), ValueError, "spatial feature map"),
    ("center", dict(point="middle"), ValueError, r"point must be one of \('geometric'"),
    ("center", dict(sigma=0.0), ValueError, "sigma must be a positive scalar"),
    # cam
    ("gradcam", dict(tap="fc"), ValueError, "spatial"),
    ("cam", dict(tap="relu3"), ValueError, "defined only at the input of the global average"),
    ("scorecam", dict(softmax="nope"), ValueError, "softmax must be 'classes' or 'channels'"),
    ("scorecam", dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    ("ablationcam", dict(batch_size=-2), ValueError, "batch_size must be a positive int"),
    # gradient family
    ("integrated_gradients", dict(steps=1), ValueError, "steps must be >= 2"),
    ("integrated_gradients", dict(baseline="nope"), ValueError, "baseline must be one of"),
    ("smoothgrad", dict(base="vargrad"), ValueError, "gradient-type method"),
    ("vargrad", dict(base_options=[("x", 1)]), TypeError, "must be hashable"),
    ("smoothgrad", dict(noise=np.zeros((2, 3, 32, 32, 3), np.float32), n_samples=2), ValueError,
     "samples per image but n_samples"),
    ("smoothgrad", dict(noise=np.zeros((2, 2, 8, 8, 3), np.float32), n_samples=2), ValueError,
     "noise must have shape"),
    # perturbation
    ("occlusion", dict(score="nope"), ValueError, "score must be one of"),
    ("occlusion", dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    ("occlusion", dict(window=(64, 64)), ValueError, "larger than the image"),
    ("occlusion", dict(window=(4, 4), strides=(8, 8)), ValueError, "larger than the window"),
    ("occlusion", dict(window=(4, 4, 4, 4)), ValueError, "must be an int, \\(h, w\\) or"),
    ("rise", dict(p1=0.0, num_masks=4), ValueError, "p1 \\(keep probability\\)"),
    ("rise", dict(grid_size=0, num_masks=4), ValueError, "grid_size must be >= 1"),
    ("rise", dict(num_masks=0), ValueError, "num_masks must be >= 1"),
    ("rise", dict(masks=np.ones((4, 16, 16), np.float32)), ValueError, "masks must have shape"),
    ("lime", dict(segmentation="nope"), ValueError, "segmentation must be one of"),
    ("lime", dict(kernel_space="nope"), ValueError, "kernel_space must be one of"),
    ("lime", dict(num_samples=1), ValueError, "num_samples must be >= 2"),
    ("lime", dict(kernel_width=0.0, num_samples=4), ValueError, "kernel_width must be > 0"),
    ("lime", dict(alpha=-1.0, num_samples=4), ValueError, "alpha \\(ridge penalty\\)"),
    ("lime", dict(segments=np.full((32, 32), 60), num_samples=4), ValueError,
     "segment labels must lie in"),
    ("lime", dict(segments=np.zeros((5, 5), np.int32)), ValueError, "segments must have shape"),
    ("lime", dict(segments=np.zeros((32, 32), np.float32)), TypeError, "integer labels"),
    ("lime", dict(samples=np.ones((4, 7), np.float32), segmentation="grid", num_segments=16),
     ValueError, "samples must have shape"),
    # mask games
    ("meaningful_perturbation", dict(game="nope"), ValueError, "game must be one of"),
    ("meaningful_perturbation", dict(iterations=0), ValueError, "iterations must be >= 1"),
    ("meaningful_perturbation", dict(mask_size=0, iterations=1), ValueError,
     "mask_size must be positive"),
    ("meaningful_perturbation", dict(jitter=-1, iterations=1), ValueError, "jitter must be >= 0"),
    ("extremal_perturbation", dict(areas=(1.5,)), ValueError, "areas must be fractions"),
    ("extremal_perturbation", dict(variant="nope"), ValueError, "variant must be one of"),
    ("extremal_perturbation", dict(reward="nope"), ValueError, "reward must be one of"),
    ("extremal_perturbation", dict(max_iter=0), ValueError, "max_iter must be >= 1"),
    ("extremal_perturbation", dict(num_levels=1, max_iter=1), ValueError, "num_levels must be >= 2"),
    ("extremal_perturbation", dict(step=0, max_iter=1), ValueError, "step must be a positive"),
    ("fgvis", dict(game="nope"), ValueError, "game must be one of"),
    ("fgvis", dict(similarity="nope"), ValueError, "similarity must be one of"),
    ("fgvis", dict(optimizer="nope"), ValueError, "optimizer must be one of"),
    ("fgvis", dict(iterations=0), ValueError, "iterations must be a positive int"),
    ("fgvis", dict(lam=np.zeros(3, np.float32), iterations=1), ValueError, "lam must be a scalar"),
    ("dssr", dict(reference_space="nope"), ValueError, "reference_space must be one of"),
    ("dssr", dict(iterations=0), ValueError, "iterations must be a positive int"),
    ("dssr", dict(k1=0, iterations=1), ValueError, "k1 must be a positive int"),
]


@pytest.mark.parametrize("method,opts,err,match", _CHECKS,
                         ids=[f"{m}-{'-'.join(o)}-{i}" for i, (m, o, _, _) in enumerate(_CHECKS)])
def test_every_option_check_is_reached_through_explain(model, method, opts, err, match):
    x = jnp.zeros(_X)
    with pytest.raises(err, match=match):
        xj.explain(model, x, [0, 1], method=method, **opts)


@pytest.mark.parametrize("opts,match", [
    (dict(method="nope"), "method must be one of"),
    (dict(method="riemann_left", steps=1), "steps must be >= 2"),
    (dict(method="gausslegendre", steps=0), "steps must be >= 1"),
])
def test_integration_rule_checks_through_bind_and_cli(model, opts, match, tmp_path, capsys):
    """IG's ``method`` option shares its name with explain's ``method=``: it goes through
    ``bind`` (and the CLI, which calls bind)."""
    from xaijax import cli

    with pytest.raises(ValueError, match=match):
        xj.methods.bind("integrated_gradients", **opts)(model, jnp.zeros(_X), 0)
    args = ["explain", "chelsea", "--model", "small_cnn", "--random", "--method",
            "integrated_gradients", "--out", str(tmp_path / "ig.png")]
    for k, v in opts.items():
        args += ["--opt", f"{k}={v!r}"]
    assert cli.main(args) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "ig.png").exists()


def test_black_baseline_of_a_plain_function_is_refused(model):
    with pytest.raises(ValueError, match="needs the model's normalisation"):
        xj.explain(lambda z: model.apply_fn(z), jnp.zeros(_X), 0, method="integrated_gradients",
                   baseline="black", steps=2)


def test_value_checks_run_on_direct_calls_too(model):
    x = jnp.zeros(_X)
    with pytest.raises(ValueError, match="channel of tap"):
        xj.methods.guided_backprop(model, x, jnp.array([0, 1]), tap="relu3", filter=999)
    with pytest.raises(ValueError, match="α = β \\+ 1"):
        xj.methods.lrp(model, x, jnp.array([0, 1]), composite="alpha_beta", alpha=3.0, beta=1.0)


def test_cli_reports_a_bad_option_value_and_writes_nothing(tmp_path, capsys):
    from xaijax import cli

    out = tmp_path / "out.png"
    out.write_bytes(b"kept")
    rc = cli.main(["explain", "chelsea", "--model", "small_cnn", "--random", "--method",
                   "guided_backprop", "--opt", "tap='relu3'", "--opt", "filter=999",
                   "--out", str(out)])
    assert rc == 2
    assert "channel of tap 'relu3'" in capsys.readouterr().err
    assert out.read_bytes() == b"kept"


# ------------------------------------------------------------------------------------------------
# bind, targets and compilation


def test_top1_and_class_names_compile_once(model, x, compiles):
    assert_compiles_once(compiles, lambda xx: xj.explain(model, xx, "top1"), [(x,), (x * 2,),
                                                                             (x - 1,)])
    net = _ImageNetNet()
    v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    m = xj.models.wrap(net, v, input_size=(8, 8), num_classes=1000, mean=(0.5,) * 3,
                       std=(0.5,) * 3, labels="imagenet")
    z = jnp.ones((2, 8, 8, 3))
    ex = xj.explain(m, z, "Egyptian cat")
    assert ex.target.tolist() == [285, 285]
    assert_compiles_once(compiles, lambda tt: xj.explain(m, z, tt),
                         [("Egyptian cat",), ("tabby",), (3,), ([1, 2],)])


def test_top1_is_the_prediction_for_a_plain_function(model, x):
    f = lambda z: model.apply_fn(z)  # noqa: E731
    assert np.array_equal(xj.explain(f, x, "top1").target, np.argmax(model(x), -1))


def test_bind_is_cached_and_equals_explain(model, x, compiles):
    f = xj.methods.bind("gradcam", tap="relu3")
    assert f is xj.methods.bind("gradcam", tap="relu3")
    np.testing.assert_allclose(f(model, x, [0, 1, 2]).heatmap,
                               xj.explain(model, x, [0, 1, 2], method="gradcam",
                                          tap="relu3").heatmap, rtol=1e-6)
    g = xj.methods.bind("lrp", composite="epsilon")
    assert_compiles_once(compiles, lambda e: g(model, x, 1, epsilon=e), [(0.1,), (0.3,), (1,)])
    with pytest.raises(TypeError, match="fixed by bind"):
        g(model, x, 1, composite="zplus")
    with pytest.raises(TypeError, match="static"):
        g(model, x, 1, canonize=False)
    with pytest.raises(TypeError, match="no option"):
        xj.methods.bind("gradcam", steps=3)
    with pytest.raises(TypeError, match="hashable"):
        xj.methods.bind("occlusion", window=[4, 4])


def test_nan_check_of_a_device_array_copies_nothing_to_the_host(model, x, monkeypatch):
    from xaijax.models import base as mb

    copied = []

    class _Numpy:  # models.base's numpy, recording what is copied to the host
        def __getattr__(self, name):
            return getattr(np, name)

        def asarray(self, a, *args, **kw):
            copied.append(a)
            return np.asarray(a, *args, **kw)

    monkeypatch.setattr(mb, "np", _Numpy())
    xj.explain(model, x, 0)
    assert not any(a is x for a in copied)  # finite: one reduction on the device
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\), the first at index \(0, 1, 2, 0\)"):
        xj.explain(model, x.at[0, 1, 2, 0].set(jnp.nan), 0)


# ------------------------------------------------------------------------------------------------
# rules that match nothing, user models, composites


class _ImageNetNet(__import__("flax").linen.Module):
    @__import__("flax").linen.compact
    def __call__(self, x):
        from xaijax.nn import layers as L

        x = L.ReLU(tap="relu1")(L.Conv(features=4, kernel_size=3, padding=1, tap="conv1")(x))
        return L.Dense(features=1000, tap="fc")(L.Flatten(tap="flatten")(x))


class _LinenReluNet(__import__("flax").linen.Module):
    """xaijax Conv/Dense layers but flax's plain ``nn.relu``: rules on ReLU cannot apply."""

    @__import__("flax").linen.compact
    def __call__(self, x):
        import flax.linen as nn

        from xaijax.nn import layers as L

        x = nn.relu(L.Conv(features=4, kernel_size=3, padding=1, tap="conv1")(x))
        return L.Dense(features=3, tap="fc")(L.Flatten()(x))


def _wrapped(module, size=8):
    v = module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
    return xj.models.wrap(module, v, input_size=(size, size), num_classes=3, mean=(0.5,) * 3,
                          std=(0.5,) * 3)


@pytest.mark.parametrize("method,opts", [("guided_backprop", {}), ("deconvnet", {}),
                                         ("guided_backprop", {"stride_fix": True}),
                                         ("deeplift", {})])
def test_rules_that_match_no_layer_raise_and_name_the_fix(method, opts):
    from xaijax.nn.intercept import RulesMatchedNothing

    m = _wrapped(_LinenReluNet())
    with pytest.raises(RulesMatchedNothing, match=r"xaijax\.nn\.layers\.ReLU") as e:
        xj.explain(m, jnp.ones((1, 8, 8, 3)), 0, method=method, **opts)
    assert "'custom'" in str(e.value) and "Conv" in str(e.value)


def test_lrp_on_a_model_without_xaijax_linear_layers_raises():
    import flax.linen as nn

    from xaijax.nn.intercept import RulesMatchedNothing

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    m = _wrapped(Plain())
    assert m.taps == ()
    with pytest.raises(RulesMatchedNothing, match=r"xaijax\.nn\.layers\.Conv"):
        xj.explain(m, jnp.ones((1, 8, 8, 3)), 0, method="lrp", composite="epsilon")
    with pytest.raises(ValueError, match="names no taps"):
        xj.explain(m, jnp.ones((1, 8, 8, 3)), 0, method="gradcam", tap="conv1")


def test_wrap_finds_taps_and_checks_its_arguments():
    net = _LinenReluNet()
    v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    w = xj.models.wrap(net, v, input_size=(8, 8), num_classes=3, mean=(0.5,) * 3,
                       std=(0.5,) * 3, cam_tap="conv1")
    assert w.taps == ("conv1", "fc") and w.spec.cam_tap == "conv1"
    assert xj.explain(w, jnp.ones((2, 8, 8, 3)), 1, method="gradcam").heatmap.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="cam_tap: 'relu9' is not a tap"):
        xj.models.wrap(net, v, input_size=(8, 8), num_classes=3, mean=(0.5,) * 3,
                       std=(0.5,) * 3, cam_tap="relu9")
    with pytest.raises(ValueError, match="num_classes=5"):
        xj.models.wrap(net, v, input_size=(8, 8), num_classes=5, mean=(0.5,) * 3,
                       std=(0.5,) * 3)


def test_lrp_takes_a_user_composite(model, x):
    from xaijax.nn import layers as L
    from xaijax.nn.intercept import by_type
    from xaijax.rules import lrp as R

    mine = by_type({L.Conv: R.epsilon(0.25), L.Dense: R.epsilon(0.25)})
    a = xj.explain(model, x, 1, method="lrp", composite=mine, stabilizer=1e-6)
    b = xj.explain(model, x, 1, method="lrp", composite="epsilon", epsilon=0.25)
    np.testing.assert_allclose(a.attribution, b.attribution, rtol=1e-5, atol=1e-8)
