"""GoogLeNet (Inception v1) in torchvision layout, auxiliary heads off.

The network is torchvision's ``GoogLeNet(aux_logits=False, transform_input=False)``:

* ``BasicConv2d`` = conv (no bias) + BatchNorm (eps 0.001) + ReLU. Torchvision applies the ReLU
  as a function; here it is a module with tap ``<path>.relu`` and the torchvision module path
  ``<path>`` (e.g. ``conv1``, ``inception3a.branch2.1``) is an alias of it.
* Each Inception module concatenates its four branches with a :class:`~xaijax.nn.layers.Concat`
  whose tap is the module's torchvision name (``inception3a``); torchvision's ``branchK``
  sequentials are aliases of their last ReLU.
* Max pools use ``ceil_mode=True`` as torchvision does.
* Torchvision's "5x5" branch (``branch3``) uses a 3x3 convolution (a known torchvision quirk,
  kept so that its checkpoints convert).

``transform_input``: torchvision's ImageNet weights for GoogLeNet were ported from TensorFlow and
are used with ``transform_input=True``, which maps an ImageNet-normalised input to the
``(x - 0.5) / 0.5`` normalisation those weights expect. xaijax exposes the plain network
(``transform_input=False``); to use such weights, either give the model inputs normalised with
mean = std = 0.5 per channel (``dataclasses.replace(model, spec=dataclasses.replace(model.spec,
mean=(0.5,) * 3, std=(0.5,) * 3))`` before :func:`xaijax.models.preprocess`), or apply the same
affine map yourself.

References:
  Szegedy et al. Going Deeper with Convolutions. CVPR 2015 (Table 1; torchvision adds
  BatchNorm after every convolution).
"""

from __future__ import annotations

from typing import List, Tuple

import flax.linen as nn

from xaijax.models.base import ModelSpec, register
from xaijax.nn import layers as L

# name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), torchvision's table
_INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """torchvision GoogLeNet as one flat linen module (flax names = taps = torch paths)."""

    num_classes: int = 1000

    def _layer(self, kind: str, name: str, **kw):
        return getattr(L, kind)(tap=name, name=name, **kw)

    def _basic(self, name: str, x, features: int, k: int, stride: int = 1, padding: int = 0):
        x = self._layer("Conv", f"{name}.conv", features=features, kernel_size=k,
                        strides=stride, padding=padding, use_bias=False)(x)
        x = self._layer("BatchNorm", f"{name}.bn", epsilon=1e-3)(x)
        return self._layer("ReLU", f"{name}.relu")(x)

    def _pool(self, name: str, x, k: int = 3, stride: int = 2, padding: int = 0):
        return self._layer("MaxPool", name, window=k, strides=stride, padding=padding,
                           ceil_mode=True)(x)

    def _inception(self, name: str, x):
        c1, c3r, c3, c5r, c5, pp = _INCEPTIONS[name]
        b1 = self._basic(f"{name}.branch1", x, c1, 1)
        b2 = self._basic(f"{name}.branch2.0", x, c3r, 1)
        b2 = self._basic(f"{name}.branch2.1", b2, c3, 3, padding=1)
        b3 = self._basic(f"{name}.branch3.0", x, c5r, 1)
        b3 = self._basic(f"{name}.branch3.1", b3, c5, 3, padding=1)  # torchvision: 3x3 here
        b4 = self._pool(f"{name}.branch4.0", x, 3, 1, 1)
        b4 = self._basic(f"{name}.branch4.1", b4, pp, 1)
        return self._layer("Concat", name)(b1, b2, b3, b4)

    @nn.compact
    def __call__(self, x):
        x = self._basic("conv1", x, 64, 7, 2, 3)
        x = self._pool("maxpool1", x)
        x = self._basic("conv2", x, 64, 1)
        x = self._basic("conv3", x, 192, 3, padding=1)
        x = self._pool("maxpool2", x)
        x = self._inception("inception3a", x)
        x = self._inception("inception3b", x)
        x = self._pool("maxpool3", x)
        for n in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = self._inception(n, x)
        x = self._pool("maxpool4", x, 2, 2)
        x = self._inception("inception5a", x)
        x = self._inception("inception5b", x)
        x = self._layer("AdaptiveAvgPool", "avgpool", output_size=1)(x)
        x = self._layer("Flatten", "flatten")(x)
        # torchvision's dropout (p=0.2) is the identity in inference mode
        return self._layer("Dense", "fc", features=self.num_classes)(x)


def _aliases() -> Tuple[Tuple[str, str], ...]:
    out: List[Tuple[str, str]] = [(c, f"{c}.relu") for c in ("conv1", "conv2", "conv3")]
    for n in _INCEPTIONS:
        out.append((f"{n}.branch1", f"{n}.branch1.relu"))
        for b in ("branch2", "branch3"):
            out += [(f"{n}.{b}.0", f"{n}.{b}.0.relu"), (f"{n}.{b}.1", f"{n}.{b}.1.relu"),
                    (f"{n}.{b}", f"{n}.{b}.1.relu")]
        out += [(f"{n}.branch4.1", f"{n}.branch4.1.relu"), (f"{n}.branch4", f"{n}.branch4.1.relu")]
    return tuple(out)


@register("googlenet")
def googlenet(num_classes: int = 1000):
    """GoogLeNet, torchvision layout (``aux_logits=False``, ``transform_input=False``)."""
    spec = ModelSpec(
        name="googlenet", num_classes=num_classes, cam_tap="inception5b",
        # last layer before each resolution drop: 112 (conv1), 56 (conv3), 28, 14, 7
        block_taps=("conv1.relu", "conv3.relu", "inception3b", "inception4e", "inception5b"),
        aliases=_aliases(), gap_dense=("inception5b", "fc"),
        # 32x32 reaches maxpool4 with a 2x2 map (1x1 after it)
        min_size=32)
    return GoogLeNet(num_classes=num_classes), spec
