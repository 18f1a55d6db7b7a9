"""A small VGG-style CNN: a deeper second architecture for synthetic (an8Flower-like) and digit
data (the trained models of :mod:`xaijax.train`)."""

from __future__ import annotations

from xaijax.models.base import ModelSpec, register
from xaijax.models.vgg import Sequential


@register("small_vgg")
def small_vgg(num_classes: int = 10, in_channels: int = 3, width: int = 16, size: int = 32,
              hidden: int = 64):
    """Three VGG blocks of two 3×3 conv-ReLU pairs and a 2×2 max-pool (six conv layers, widths
    ``w, 2w, 4w``), a 2×2 adaptive average pool, and a two-layer classifier (dense-ReLU-dense),
    so that it has fully-connected layers before the last (Oramas et al.'s "All" selection)
    and accepts any input of at least 8×8. ``size`` is the side it is trained at (what
    ``preprocess`` produces)."""
    items = []
    for b, f in enumerate((width, 2 * width, 4 * width), start=1):
        for i in (1, 2):
            items.append((f"conv{b}_{i}", "Conv", dict(features=f, kernel_size=3, padding=1)))
            items.append((f"relu{b}_{i}", "ReLU", {}))
        items.append((f"pool{b}", "MaxPool", dict(window=2, strides=2)))
    items += [
        ("avgpool", "AdaptiveAvgPool", dict(output_size=2)),
        ("flatten", "Flatten", {}),
        ("fc1", "Dense", dict(features=hidden)),
        ("relu_fc1", "ReLU", {}),
        ("fc2", "Dense", dict(features=num_classes)),
    ]
    spec = ModelSpec(name="small_vgg", input_size=(size, size), mean=(0.5,) * in_channels,
                     std=(0.5,) * in_channels, num_classes=num_classes, cam_tap="relu3_2",
                     block_taps=("relu1_2", "relu2_2", "relu3_2"), min_size=8, labels=None,
                     in_channels=in_channels)
    return Sequential(items=tuple(items)), spec
