"""VGG16 and AlexNet in torchvision layout (``features.i`` / ``classifier.i`` taps)."""

from __future__ import annotations

from typing import List, Tuple

import flax.linen as nn

from xaijax.models.base import ModelSpec, register
from xaijax.nn import layers as L

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class Sequential(nn.Module):
    """Run ``(name, layer)`` pairs in order (names are torchvision module paths)."""

    items: Tuple[Tuple[str, str, dict], ...] = ()

    @nn.compact
    def __call__(self, x):
        for name, kind, kw in self.items:
            x = getattr(L, kind)(tap=name, name=name, **kw)(x)
        return x


def _vgg_features(cfg) -> List[Tuple[str, str, dict]]:
    items, i = [], 0
    for v in cfg:
        if v == "M":
            items.append((f"features.{i}", "MaxPool", dict(window=2, strides=2)))
            i += 1
        else:
            items.append((f"features.{i}", "Conv", dict(features=v, kernel_size=3, padding=1)))
            items.append((f"features.{i + 1}", "ReLU", {}))
            i += 2
    return items


def _classifier(hidden: int, num_classes: int, start_dropout: bool) -> List[Tuple[str, str, dict]]:
    # torchvision: [Dropout,] Linear, ReLU, Dropout, Linear, ReLU, [Dropout,] Linear
    if start_dropout:  # AlexNet: 0 Dropout, 1 Linear, 2 ReLU, 3 Dropout, 4 Linear, 5 ReLU, 6 Linear
        idx = (1, 2, 4, 5, 6)
    else:  # VGG: 0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear
        idx = (0, 1, 3, 4, 6)
    return [
        (f"classifier.{idx[0]}", "Dense", dict(features=hidden)),
        (f"classifier.{idx[1]}", "ReLU", {}),
        (f"classifier.{idx[2]}", "Dense", dict(features=hidden)),
        (f"classifier.{idx[3]}", "ReLU", {}),
        (f"classifier.{idx[4]}", "Dense", dict(features=num_classes)),
    ]


def _seq(features, pool, classifier):
    return Sequential(items=tuple(features) + (("avgpool", "AdaptiveAvgPool",
                                                dict(output_size=pool)),
                                               ("flatten", "Flatten", {})) + tuple(classifier))


@register("vgg16")
def vgg16(num_classes: int = 1000):
    feats = _vgg_features(_VGG16)
    module = _seq(feats, 7, _classifier(4096, num_classes, start_dropout=False))
    blocks = tuple(f"features.{i}" for i in (3, 8, 15, 22, 29))
    spec = ModelSpec(name="vgg16", num_classes=num_classes, cam_tap="features.29",
                     block_taps=blocks, min_size=32)
    return module, spec


@register("alexnet")
def alexnet(num_classes: int = 1000):
    feats = [
        ("features.0", "Conv", dict(features=64, kernel_size=11, strides=4, padding=2)),
        ("features.1", "ReLU", {}),
        ("features.2", "MaxPool", dict(window=3, strides=2)),
        ("features.3", "Conv", dict(features=192, kernel_size=5, padding=2)),
        ("features.4", "ReLU", {}),
        ("features.5", "MaxPool", dict(window=3, strides=2)),
        ("features.6", "Conv", dict(features=384, kernel_size=3, padding=1)),
        ("features.7", "ReLU", {}),
        ("features.8", "Conv", dict(features=256, kernel_size=3, padding=1)),
        ("features.9", "ReLU", {}),
        ("features.10", "Conv", dict(features=256, kernel_size=3, padding=1)),
        ("features.11", "ReLU", {}),
        ("features.12", "MaxPool", dict(window=3, strides=2)),
    ]
    module = _seq(feats, 6, _classifier(4096, num_classes, start_dropout=True))
    spec = ModelSpec(name="alexnet", num_classes=num_classes, cam_tap="features.11",
                     block_taps=("features.1", "features.4", "features.11"), min_size=63)
    return module, spec
