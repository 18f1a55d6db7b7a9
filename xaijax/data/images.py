"""Real photos shipped inside the package (no download needed)."""

from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np

_DIR = os.path.join(os.path.dirname(__file__), "images")
_FILES = {
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "astronaut": "astronaut.jpg",
    "motorcycle": "motorcycle.jpg",
}
SAMPLE_NAMES = tuple(_FILES)


def image_path(name: str) -> str:
    if name not in _FILES:
        raise ValueError(f"unknown sample image {name!r}; bundled: {list(SAMPLE_NAMES)}")
    return os.path.join(_DIR, _FILES[name])


def load_image(name: str) -> np.ndarray:
    """A bundled photo as a uint8 ``(H, W, 3)`` array (``chelsea``, ``coffee``, ...)."""
    from PIL import Image

    return np.asarray(Image.open(image_path(name)).convert("RGB"))


def sample_images(names: Sequence[str] = SAMPLE_NAMES) -> Dict[str, np.ndarray]:
    return {n: load_image(n) for n in names}
