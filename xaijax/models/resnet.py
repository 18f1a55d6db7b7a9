"""ResNet-18/34/50/101 in torchvision layout (``conv1`` ... ``layer4.1.relu2`` ... ``fc`` taps).

The architecture is torchvision's ``ResNet`` (the "v1.5" variant: a Bottleneck block strides on
its 3x3 convolution, not on the first 1x1), so a torchvision ``state_dict`` converts with the
generic :func:`xaijax.io.state_dict_to_variables`.

Tap names are torchvision module paths. Where torchvision reuses one ``ReLU`` module several
times per block (``layer1.0.relu``), xaijax has one module per use, numbered in forward order
(``layer1.0.relu1``, ``layer1.0.relu2``; a Bottleneck also has ``relu3``), and the residual sum
is an :class:`~xaijax.nn.layers.Add` module (``layer1.0.add``) so relevance rules can treat it.
Torchvision module names whose output equals one of our taps are aliases: ``layer1.0`` (the
block) is its last ReLU, ``layer1`` is the last block's last ReLU.

References:
  He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (Table 1).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import flax.linen as nn

from xaijax.models.base import ModelSpec, register
from xaijax.nn import layers as L

# name -> (block type, blocks per stage)
_CONFIGS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
_WIDTHS = (64, 128, 256, 512)


class ResNet(nn.Module):
    """torchvision ResNet as one flat linen module: every layer is a submodule whose flax name
    and tap are its torchvision module path.

    Attributes:
      block: ``"basic"`` (two 3x3 convolutions) or ``"bottleneck"`` (1x1, 3x3, 1x1, expansion 4).
      stages: number of blocks in ``layer1`` .. ``layer4``.
      num_classes: logits.
    """

    block: str = "basic"
    stages: Tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 1000

    def _layer(self, kind: str, name: str, **kw):
        return getattr(L, kind)(tap=name, name=name, **kw)

    def _bn(self, name: str):
        return self._layer("BatchNorm", name, epsilon=1e-5)

    def _conv(self, name: str, features: int, k: int, stride: int = 1):
        return self._layer("Conv", name, features=features, kernel_size=k, strides=stride,
                           padding=k // 2, use_bias=False)

    @nn.compact
    def __call__(self, x):
        x = self._conv("conv1", 64, 7, 2)(x)
        x = self._bn("bn1")(x)
        x = self._layer("ReLU", "relu")(x)
        x = self._layer("MaxPool", "maxpool", window=3, strides=2, padding=1)(x)
        expansion = 1 if self.block == "basic" else 4
        cin = 64
        for s, (width, n) in enumerate(zip(_WIDTHS, self.stages)):
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                p = f"layer{s + 1}.{b}"
                identity = x
                if self.block == "basic":
                    h = self._conv(f"{p}.conv1", width, 3, stride)(x)
                    h = self._bn(f"{p}.bn1")(h)
                    h = self._layer("ReLU", f"{p}.relu1")(h)
                    h = self._conv(f"{p}.conv2", width, 3)(h)
                    h = self._bn(f"{p}.bn2")(h)
                else:
                    h = self._conv(f"{p}.conv1", width, 1)(x)
                    h = self._bn(f"{p}.bn1")(h)
                    h = self._layer("ReLU", f"{p}.relu1")(h)
                    h = self._conv(f"{p}.conv2", width, 3, stride)(h)
                    h = self._bn(f"{p}.bn2")(h)
                    h = self._layer("ReLU", f"{p}.relu2")(h)
                    h = self._conv(f"{p}.conv3", width * 4, 1)(h)
                    h = self._bn(f"{p}.bn3")(h)
                if stride != 1 or cin != width * expansion:
                    identity = self._conv(f"{p}.downsample.0", width * expansion, 1, stride)(x)
                    identity = self._bn(f"{p}.downsample.1")(identity)
                h = self._layer("Add", f"{p}.add")(h, identity)
                x = self._layer("ReLU", f"{p}.{_last_relu(self.block)}")(h)
                cin = width * expansion
        x = self._layer("AdaptiveAvgPool", "avgpool", output_size=1)(x)
        x = self._layer("Flatten", "flatten")(x)
        return self._layer("Dense", "fc", features=self.num_classes)(x)


def _last_relu(block: str) -> str:
    return "relu2" if block == "basic" else "relu3"


def _aliases(block: str, stages: Sequence[int]) -> Tuple[Tuple[str, str], ...]:
    out: List[Tuple[str, str]] = []
    last = _last_relu(block)
    for s, n in enumerate(stages):
        for b in range(n):
            out.append((f"layer{s + 1}.{b}", f"layer{s + 1}.{b}.{last}"))
        out.append((f"layer{s + 1}", f"layer{s + 1}.{n - 1}.{last}"))
    return tuple(out)


def _make(name: str, num_classes: int):
    block, stages = _CONFIGS[name]
    last = _last_relu(block)
    stage_out = tuple(f"layer{s + 1}.{n - 1}.{last}" for s, n in enumerate(stages))
    spec = ModelSpec(
        name=name, num_classes=num_classes, cam_tap=stage_out[-1],
        # the stem's ReLU (112x112 before the max pool), then each stage's output
        block_taps=("relu",) + stage_out,
        aliases=_aliases(block, stages),
        gap_dense=(stage_out[-1], "fc"),
        # 32x32 gives a 1x1 layer4 map (overall stride 32)
        min_size=32)
    return ResNet(block=block, stages=tuple(stages), num_classes=num_classes), spec


@register("resnet18")
def resnet18(num_classes: int = 1000):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); torchvision ``resnet18`` layout."""
    return _make("resnet18", num_classes)


@register("resnet34")
def resnet34(num_classes: int = 1000):
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]); torchvision ``resnet34`` layout."""
    return _make("resnet34", num_classes)


@register("resnet50")
def resnet50(num_classes: int = 1000):
    """ResNet-50 (Bottleneck, [3, 4, 6, 3], stride on the 3x3 conv); torchvision ``resnet50``."""
    return _make("resnet50", num_classes)


@register("resnet101")
def resnet101(num_classes: int = 1000):
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]); torchvision ``resnet101`` layout."""
    return _make("resnet101", num_classes)
