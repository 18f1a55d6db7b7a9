"""DeconvNet and guided backprop: parity with Captum (float64, see test_gradient's docstring for
why), filter visualisation from a tap against a plain-torch reference, and the stride fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import xaijax as xj  # noqa: E402
from tests.helpers import assert_compiles_once, assert_jit_vmap_agree, assert_rel_close, to_nhwc  # noqa: E402
from tests.methods.test_gradient import MODELS, RTOL, TARGETS, pair64, run64, torch_in  # noqa

from xaijax.methods.backprop import start_cotangent  # noqa: E402
from xaijax.rules.stride import grid_energy  # noqa: E402


@pytest.fixture
def relu6_hooks(monkeypatch):
    """Captum overrides only ``nn.ReLU``; EfficientNet-Lite uses ``nn.ReLU6``, which xaijax's
    rules treat as a rectifier too (mask ``0 < x < 6``). Make Captum hook ReLU6 the same way, so
    the comparison covers the extended rule (Captum's hook returns relu(grad_input), and
    grad_input already carries ReLU6's own mask)."""
    from captum.attr._core import guided_backprop_deconvnet as gbd

    orig = gbd.ModifiedReluGradientAttribution._register_hooks

    def register(self, module):
        if isinstance(module, torch.nn.ReLU6):
            hook = module.register_full_backward_hook(self._backward_hook)
            self.backward_hooks.append(hook)
        else:
            orig(self, module)

    monkeypatch.setattr(gbd.ModifiedReluGradientAttribution, "_register_hooks", register)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("meth,peer", [("guided_backprop", "GuidedBackprop"),
                                       ("deconvnet", "Deconvolution")])
def test_matches_captum(name, meth, peer, relu6_hooks):
    tm, m, x = pair64(name)
    ex = run64(getattr(xj.methods, meth), m, x)
    ref = getattr(captum_attr, peer)(tm).attribute(torch_in(x).requires_grad_(),
                                                   target=torch.tensor(TARGETS))
    ref = to_nhwc(ref.detach().numpy())
    assert_rel_close(ex.attribution, ref, RTOL, meth)
    assert_rel_close(ex.heatmap, np.abs(ref).max(-1), RTOL, f"{meth} heatmap")


def _torch_filter_reference(tm, x, layer_index, filters, guided, start):
    """Plain torch: VGG features[:layer_index + 1], ReLU backward hooks (relu of grad_input for
    guided backprop, relu of grad_output for DeconvNet), cotangent = that channel's map."""
    hooks = []

    def hook(mod, gin, gout):
        return (torch.relu(gin[0]) if guided else torch.relu(gout[0]),)

    for mod in tm.features[: layer_index + 1]:
        if isinstance(mod, torch.nn.ReLU):
            hooks.append(mod.register_full_backward_hook(hook))
    try:
        xt = torch_in(x).requires_grad_()
        a = tm.features[: layer_index + 1](xt)
        ct = torch.zeros_like(a)
        for i, f in enumerate(filters):
            chan = a[i, f].detach()
            if start == "max":
                flat = torch.zeros_like(chan).flatten()
                flat[chan.flatten().argmax()] = chan.max()
                chan = flat.reshape(chan.shape)
            ct[i, f] = chan
        a.backward(ct)
        return to_nhwc(xt.grad.numpy())
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("meth", ["guided_backprop", "deconvnet"])
@pytest.mark.parametrize("start", ["activation", pytest.param("max", marks=pytest.mark.slow)])
def test_filter_visualisation_matches_torch_reference_vgg16(meth, start):
    tm, m, x = pair64("vgg16")
    filters = np.array([5, 40])
    with jax.enable_x64(True):
        ex = run64(getattr(xj.methods, meth), m, x, tap="features.8",
                   filter=jnp.asarray(filters), start=start)
    ref = _torch_filter_reference(tm, x, 8, filters, meth == "guided_backprop", start)
    assert_rel_close(ex.attribution, ref, RTOL, f"{meth} from features.8 ({start})")


def test_start_cotangent_max_keeps_one_location():
    a = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 6, 4))
    ct = np.asarray(start_cotangent(a, jnp.array([1, 3]), "max"))
    for i, f in enumerate((1, 3)):
        assert (ct[i] != 0).sum() == 1
        assert ct[i, ..., f].max() == pytest.approx(float(a[i, ..., f].max()))
    with pytest.raises(ValueError, match="start must be"):
        start_cotangent(a, jnp.array([0, 0]), "mean")


@pytest.fixture(scope="module")
def small():
    m = xj.models.get("small_cnn", num_classes=5, seed=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    return m, x, jnp.array([1, 4], jnp.int32)


def test_errors_name_the_problem(small):
    m, x, t = small
    with pytest.raises(TypeError, match="needs rule-aware layers"):
        xj.methods.guided_backprop(m.apply_fn, x, t)
    with pytest.raises(ValueError, match="unknown tap 'conv9'"):
        xj.methods.guided_backprop(m, x, t, tap="conv9")
    with pytest.raises(ValueError, match=r"filter must be a channel of tap 'relu1', in 0..15"):
        xj.methods.deconvnet(m, x, t, tap="relu1", filter=16)


@pytest.mark.parametrize("meth", ["guided_backprop", "deconvnet"])
@pytest.mark.parametrize("opts", [{}, {"stride_fix": True, "tap": "relu3"}])
def test_jit_and_jit_vmap_agree(small, meth, opts):
    m, x, t = small
    fn = getattr(xj.methods, meth)
    assert_jit_vmap_agree(lambda xx, tt: fn(m, xx, tt, **opts).heatmap, x, t)


@pytest.mark.parametrize("meth", ["guided_backprop", "deconvnet"])
def test_explain_compiles_once_for_new_inputs_targets_and_filters(small, meth, compiles):
    m, x, t = small
    argsets = [(x + 0.1 * i, t[::-1] if i % 2 else t, i) for i in range(3)]
    assert_compiles_once(compiles, lambda xx, tt, f: xj.explain(
        m, xx, tt, method=meth, tap="relu3", filter=f, stride_fix=True), argsets)


@pytest.mark.parametrize("tap,period", [("features.6", 2), ("features.11", 4)])
def test_stride_fix_reduces_grid_energy_vgg16(tap, period):
    """Oramas §3.3: the fix removes the period-S grid that strided layers leave in DeconvNet
    maps. VGG16 (random weights), two photos at 64x64, DeconvNet from each image's most active
    filter of a layer behind one (period 2) or two (period 4) stride-2 max-pools. Observed
    (no fix -> fix): features.6 0.029 / 0.100 -> 0.0012 / 0.00006; features.11 0.0058 /
    0.0133 -> 0.0014 / 0.0014."""
    from xaijax.data.images import load_image

    m = xj.models.get("vgg16")
    x = xj.models.preprocess(m, [load_image("chelsea"), load_image("coffee")], size=(64, 64))
    _, acts = m.forward(x, capture=[tap])
    filt = jnp.argmax(acts[tap].sum((1, 2)), -1)
    e = {}
    for fix in (False, True):
        ex = xj.explain(m, x, 0, method="deconvnet", tap=tap, filter=filt, stride_fix=fix)
        e[fix] = np.asarray(grid_energy(ex.heatmap, period))
    assert (e[True] < 0.5 * e[False]).all(), e
