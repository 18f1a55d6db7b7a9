"""The FGVis gradient filter (Wagner et al. 2019, §3.2, Eq. 4–6), tested against a by-hand
backward pass on a tiny network and, on a real architecture, by what it does to the bounds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from tests.helpers import pretrained_efficientnet
from xaijax.models.vgg import Sequential
from xaijax.metrics import adversarial as M
from xaijax.rules import fgvis as R


def test_bounds_follow_eq5():
    h = jnp.array([-2.0, -0.5, 0.0, 0.25, 4.0])
    bl, bu = R.bounds(h)
    np.testing.assert_array_equal(bl, [-2.0, -0.5, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(bu, [0.0, 0.0, 0.0, 0.25, 4.0])


def test_bounded_identity_is_identity_forward_and_eq6_backward():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    a = jax.random.normal(k1, (4, 5, 6))
    h_x = jax.random.normal(k2, (4, 5, 6))
    g = jax.random.normal(k3, (4, 5, 6))
    filt = R.bound_filter(h_x)
    np.testing.assert_array_equal(filt(a), a)
    _, vjp = jax.vjp(filt, a)
    (got,) = vjp(g)
    h = np.asarray(h_x)
    slack = 1000 * np.finfo(np.float32).eps * np.abs(h).max(axis=(1, 2), keepdims=True)
    bl, bu = np.minimum(h, 0) - slack, np.maximum(h, 0) + slack
    an = np.asarray(a)
    expected = np.asarray(g) * ((an <= bu) & (an >= bl))
    np.testing.assert_array_equal(got, expected)
    assert 0 < np.count_nonzero(expected) < expected.size  # the filter really cuts something


def test_filter_forgives_rounding_but_not_real_violations():
    """h(e) equal to h(x) up to float32 rounding is inside (Eq. 6 passes everything at e = x);
    1e-3 of the layer's maximum beyond a bound is outside (shifted up, the 25 positive units
    pass their upper bound; down, the 15 negative ones their lower bound). The slack is per
    image: the second image is the first scaled by 1e-2."""
    h_x = jnp.stack([jnp.linspace(-3.0, 5.0, 40), jnp.linspace(-0.03, 0.05, 40)])
    g = jnp.ones_like(h_x)
    scale = jnp.abs(h_x).max(axis=1, keepdims=True)
    for a, kept in [(h_x * (1 + 3e-6), 40), (h_x + 1e-5 * scale, 40), (h_x - 1e-5 * scale, 40),
                    (h_x + 1e-3 * scale, 15), (h_x - 1e-3 * scale, 25)]:
        _, vjp = jax.vjp(R.bound_filter(h_x), a)
        np.testing.assert_array_equal(np.count_nonzero(vjp(g)[0], axis=1), [kept, kept])


def _tiny_model():
    """input (1, 2, 2, 3) -> flatten -> dense 6 -> relu -> dense 5 -> relu -> dense 3."""
    items = (
        ("flatten", "Flatten", {}),
        ("fc1", "Dense", dict(features=6)),
        ("relu1", "ReLU", {}),
        ("fc2", "Dense", dict(features=5)),
        ("relu2", "ReLU", {}),
        ("fc3", "Dense", dict(features=3)),
    )
    module = Sequential(items=items)
    x = jnp.zeros((1, 2, 2, 3))
    variables = module.init(jax.random.PRNGKey(3), x)
    return xj.models.wrap(module, variables, input_size=(2, 2), num_classes=3,
                          mean=(0.0,) * 3, std=(1.0,) * 3, name="tiny")


def _hand_defended_grad(model, x, m, t):
    """∂φ/∂m for φ = −log softmax(f(m·x))_t with Eq. 6 applied after both ReLUs, by hand."""
    p = model.variables["params"]
    w1, b1 = np.asarray(p["fc1"]["kernel"]), np.asarray(p["fc1"]["bias"])
    w2, b2 = np.asarray(p["fc2"]["kernel"]), np.asarray(p["fc2"]["bias"])
    w3, b3 = np.asarray(p["fc3"]["kernel"]), np.asarray(p["fc3"]["bias"])
    flat = lambda z: np.asarray(z).transpose(0, 3, 1, 2).reshape(-1)  # torch NCHW flatten
    xv, mv = flat(x), flat(m)

    def fwd(v):
        z1 = v @ w1 + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2 + b2
        h2 = np.maximum(z2, 0)
        return z1, h1, z2, h2, h2 @ w3 + b3

    _, h1x, _, h2x, _ = fwd(xv)
    z1, h1, z2, h2, logits = fwd(mv * xv)
    sm = np.exp(logits - logits.max())
    sm /= sm.sum()
    d_logits = sm - np.eye(3)[t]
    d_h2 = w3 @ d_logits
    d_h2 = d_h2 * ((h2 <= np.maximum(h2x, 0)) & (h2 >= np.minimum(h2x, 0)))  # Eq. 6
    d_z2 = d_h2 * (z2 > 0)
    d_h1 = w2 @ d_z2
    d_h1 = d_h1 * ((h1 <= np.maximum(h1x, 0)) & (h1 >= np.minimum(h1x, 0)))  # Eq. 6
    d_z1 = d_h1 * (z1 > 0)
    d_e = w1 @ d_z1
    d_m = d_e * xv
    return d_m.reshape(1, 3, 2, 2).transpose(0, 2, 3, 1)


def test_defended_mask_gradient_equals_hand_computation_of_eq6():
    model = _tiny_model()
    kx, km = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (1, 2, 2, 3)) * 2.0
    m = jax.random.uniform(km, (1, 2, 2, 3)) * 1.8  # mask values beyond 1 move neurons out
    t = 2
    edits = R.defense_edits(model, x)
    assert sorted(edits) == ["relu1", "relu2"]

    def phi(mask, defended):
        f = (lambda e: model.forward(e, edits=edits)[0]) if defended else model.apply_fn
        return -jax.nn.log_softmax(f(mask * x)[0])[t]

    got = jax.grad(phi)(m, True)
    expected = _hand_defended_grad(model, x, m, t)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    plain = jax.grad(phi)(m, False)
    # some neurons are outside their bounds here, so the filter changes the gradient
    outside = [M.bound_violation(a, b)[0] for a, b in zip(
        model.forward(x, capture=["relu1", "relu2"])[1].values(),
        model.forward(m * x, capture=["relu1", "relu2"])[1].values())]
    assert any(bool(o.any()) for o in outside)
    assert not np.allclose(plain, got)


def test_fgvis_step_uses_the_filtered_gradient_and_unfiltered_sparsity_gradient():
    """One SGD step of the generation game from m = 0 equals clip(−lr·(∂φ/∂m|Eq.6 + λ))."""
    model = _tiny_model()
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 2, 2, 3)) * 2.0
    t = jnp.array([1])
    lr, lam = 0.5, 0.01
    ex = xj.methods.fgvis(model, x, t, game="generation", lam=lam, iterations=1,
                          learning_rate=lr, optimizer="sgd", defense=True)
    g = _hand_defended_grad(model, x, jnp.zeros_like(x), 1)
    expected = np.clip(-lr * (g + lam), 0.0, 1.0)
    np.testing.assert_allclose(ex.extras["mask"], expected, rtol=1e-5, atol=1e-7)


def test_default_taps_cover_every_relu_including_hidden_fc():
    m = xj.models.build("vgg16", random_init=False)  # shapes only, no init compile
    taps = R.default_taps(m)
    assert "classifier.1" in taps and "classifier.4" in taps
    assert all(m.tap_type(t) in ("ReLU", "ReLU6") for t in taps)
    assert len(taps) == 13 + 2


def test_default_taps_error_names_the_problem():
    m = _tiny_model()
    bare = dataclasses.replace(m.spec, tap_types=tuple("Dense" for _ in m.spec.taps))
    with pytest.raises(ValueError, match="no nonlinearity taps"):
        R.default_taps(dataclasses.replace(m, spec=bare))


def test_violation_summary_counts_neurons_outside_eq5_bounds():
    model = xj.models.get("small_cnn", num_classes=10)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
    inside = M.violation_summary(model, x, x)
    assert set(inside) == {"outside", "excess"}
    np.testing.assert_array_equal(inside["outside"], 0.0)
    np.testing.assert_array_equal(inside["excess"], 0.0)
    out = M.violation_summary(model, x, 3.0 * x, e_start=3.0 * x)
    assert np.all(np.asarray(out["outside"]) > 0) and np.all(np.asarray(out["excess"]) > 0)
    np.testing.assert_array_equal(out["new_outside"], 0.0)  # nothing new relative to the start
    np.testing.assert_array_equal(out["excess_growth"], 0.0)
    grown = M.violation_summary(model, x, 3.0 * x, e_start=x)
    np.testing.assert_allclose(grown["new_outside"], out["outside"])


@pytest.mark.slow
def test_defense_blocks_adversarial_class_on_pretrained_model():
    """FGVis Table 1 in miniature (benchmarks/fgvis_table1.py runs it at scale): generation
    game, λ = 0, target the least-likely class. Without the defense the explanation becomes that
    class; with it, it does not. Starts at m = 0.01: at m = 0 the defended gradient is exactly
    zero on this model, which would make the defended half trivially pass."""
    model = pretrained_efficientnet()
    x = xj.models.preprocess(model, [xj.data.load_image("chelsea")], size=(128, 128))
    logits = model(x)
    zero_pred = int(jnp.argmax(model(jnp.zeros_like(x))[0]))
    order = np.argsort(np.asarray(logits[0]))
    t = jnp.array([order[1] if order[0] == zero_pred else order[0]], jnp.int32)
    hit, expl = {}, {}
    for defense in (False, True):
        ex = xj.explain(model, x, t, method="fgvis", game="generation", lam=0.0,
                        iterations=10, defense=defense, mask_init=0.01)
        expl[defense] = ex.extras["explanation"]
        hit[defense] = int(jnp.argmax(model(expl[defense])[0])) == int(t[0])
    if not (hit[False] and not hit[True]):  # the bound violations only to explain a failure
        stats = {d: {k: float(v[0]) for k, v in M.violation_summary(
            model, x, e, e_start=0.01 * x).items()} for d, e in expl.items()}
        pytest.fail(f"adversarial class reached {hit} (defense -> reached); violations {stats}")


@pytest.mark.slow
def test_first_deletion_step_is_unfiltered_on_pretrained_model():
    """At m = 1 the explanation is the image, so every neuron is inside its Eq. 5 bounds and the
    defended first step equals the undefended one. The bounds and h(e) come from two separately
    compiled forward passes; compared exactly, their rounding differences blocked most of this
    step's gradient on EfficientNet-Lite0 (BatchNorm, depthwise convolutions)."""
    model = pretrained_efficientnet()
    x = xj.models.preprocess(model, [xj.data.load_image("chelsea")], size=(64, 64))
    t = jnp.array([285], jnp.int32)  # Egyptian cat
    ex = xj.explain(model, x, t, method="fgvis", game="deletion", lam=0.0, iterations=1,
                    optimizer="sgd", learning_rate=1.0, defense=True)
    # one SGD step (lr 1) of the deletion game with λ = 0 from m = 1, undefended:
    # 1 - m = ∂ log p_t(m·x) / ∂m = x · ∂ log p_t / ∂e at e = x (clipped to [0, 1])
    grad_e = jax.jit(jax.grad(lambda e: jax.nn.log_softmax(model(e))[0, t[0]]))(x)
    step = np.asarray(x * grad_e)
    assert step.max() > 1e-3  # the step moves the mask
    np.testing.assert_allclose(1.0 - np.asarray(ex.extras["mask"]), np.clip(step, 0.0, 1.0),
                               rtol=0, atol=1e-4 * step.max())
