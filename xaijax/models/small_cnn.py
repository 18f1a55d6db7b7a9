"""A small CNN for synthetic (an8Flower-like) and digit data, and for fast tests."""

from __future__ import annotations

from xaijax.models.base import ModelSpec, register
from xaijax.models.vgg import Sequential


@register("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16, size: int = 32):
    """conv-relu-conv-relu-pool ×2, then global average pooling and one dense layer (so CAM
    applies). Input ``size``×``size`` (32 by default; what ``preprocess`` produces), any size
    ≥ 8 runs."""
    w = width
    items = (
        ("conv1", "Conv", dict(features=w, kernel_size=3, padding=1)),
        ("relu1", "ReLU", {}),
        ("conv2", "Conv", dict(features=w, kernel_size=3, padding=1)),
        ("relu2", "ReLU", {}),
        ("pool1", "MaxPool", dict(window=2, strides=2)),
        ("conv3", "Conv", dict(features=2 * w, kernel_size=3, padding=1)),
        ("relu3", "ReLU", {}),
        ("conv4", "Conv", dict(features=2 * w, kernel_size=3, padding=1)),
        ("relu4", "ReLU", {}),
        ("pool2", "MaxPool", dict(window=2, strides=2)),
        ("conv5", "Conv", dict(features=4 * w, kernel_size=3, padding=1)),
        ("relu5", "ReLU", {}),
        ("gap", "AdaptiveAvgPool", dict(output_size=1)),
        ("flatten", "Flatten", {}),
        ("fc", "Dense", dict(features=num_classes)),
    )
    spec = ModelSpec(name="small_cnn", input_size=(size, size), mean=(0.5,) * in_channels,
                     std=(0.5,) * in_channels, num_classes=num_classes, cam_tap="relu5",
                     block_taps=("relu2", "relu4", "relu5"), gap_dense=("relu5", "fc"),
                     min_size=8, labels=None, in_channels=in_channels)
    return Sequential(items=items), spec
