"""Hand-drawn object boxes for the bundled photos, and their place after preprocessing.

The boxes live in ``boxes.json`` next to this module (how they were drawn is recorded there).
A box is ``[x0, y0, x1, y1)`` in pixels, half-open, as :func:`xaijax.metrics.boxes_to_masks`
reads it.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

_FILE = os.path.join(os.path.dirname(__file__), "boxes.json")
_RESIZE_MODES = ("crop", "stretch", "none")


class ObjectBoxes(NamedTuple):
    """The annotated objects of one photo.

    Attributes:
      boxes: ``(K, 4)`` int32 ``[x0, y0, x1, y1)`` in the photo's pixels.
      labels: ``(K,)`` int32 ImageNet-1k class indices.
      class_names: the K class names.
    """

    boxes: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]


@functools.lru_cache(maxsize=1)
def _annotations() -> Dict[str, Any]:
    with open(_FILE, encoding="utf-8") as f:
        return json.load(f)


def box_annotations() -> Dict[str, Any]:
    """The whole ``boxes.json`` (a copy): per photo its size, the pretrained
    EfficientNet-Lite0's top-1 class and the objects with their boxes, classes and notes."""
    return copy.deepcopy(_annotations())


def object_boxes(name: str) -> ObjectBoxes:
    """The hand-drawn boxes of the objects in a bundled photo.

    Args:
      name: a bundled photo (``xaijax.data.SAMPLE_NAMES``: chelsea, coffee, rocket, astronaut,
        motorcycle).

    Returns:
      :class:`ObjectBoxes` in the coordinates of ``load_image(name)``.

    Examples:
      >>> ob = object_boxes("coffee")
      >>> ob.boxes.tolist(), ob.labels.tolist(), ob.class_names
      ([[173, 18, 408, 304]], [967], ('espresso',))
    """
    images = _annotations()["images"]
    if name not in images:
        raise ValueError(f"no boxes for {name!r}; annotated photos: {sorted(images)}")
    objs = images[name]["objects"]
    return ObjectBoxes(np.asarray([o["box"] for o in objs], np.int32).reshape(-1, 4),
                       np.asarray([o["class_index"] for o in objs], np.int32),
                       tuple(o["class_name"] for o in objs))


def _geometry(image_hw: Tuple[int, int], size: Tuple[int, int], resize: str,
              crop_fraction: float) -> Tuple[float, float, float, float, int, int]:
    """(scale_x, scale_y, left, top, out_w, out_h) of ``xaijax.models.preprocess``'s resize:
    the same arithmetic as ``xaijax.models.base._resize_pil`` (PIL maps edges to edges)."""
    ih, iw = image_hw
    h, w = size
    if resize == "crop":
        short = int(math.floor(min(h, w) / crop_fraction))
        scale = short / min(iw, ih)
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
        return nw / iw, nh / ih, (nw - w) // 2, (nh - h) // 2, w, h
    if resize == "stretch":
        return w / iw, h / ih, 0, 0, w, h
    return 1.0, 1.0, 0, 0, iw, ih


def preprocess_boxes(model: Any, boxes: Any, image_shape: Sequence[int], *,
                     size: Optional[Tuple[int, int]] = None, resize: str = "crop",
                     crop_fraction: float = 0.875) -> np.ndarray:
    """Boxes in a photo -> boxes in ``xaijax.models.preprocess(model, photo, ...)``'s output.

    Takes the same ``size``, ``resize`` and ``crop_fraction`` as ``preprocess`` and applies its
    geometry to the box edges (``"crop"``: scale so the shorter side is
    ``floor(min(size) / crop_fraction)``, then centre-crop; ``"stretch"``: scale each axis to
    ``size``; ``"none"``: unchanged). Edges are scaled exactly, not rounded: the result is
    fractional, which :func:`xaijax.metrics.boxes_to_masks` compares with pixel centres.
    Boxes are clipped to the output; one cropped away entirely comes back empty
    (``x0 == x1`` or ``y0 == y1``).

    Args:
      model: an xaijax ``Model`` (for its ``input_size``), or ``None`` when ``size`` is given.
      boxes: ``(K, 4)`` ``[x0, y0, x1, y1)`` in the photo's pixels (or one box ``(4,)``).
      image_shape: the photo's ``(H, W)`` or ``(H, W, C)``.
      size, resize, crop_fraction: as for ``xaijax.models.preprocess``.

    Returns:
      ``(K, 4)`` float32 boxes in the preprocessed image's pixels.

    Examples:
      >>> preprocess_boxes(None, [[0, 0, 100, 50]], (200, 400), size=(100, 100),
      ...                  resize="stretch").tolist()
      [[0.0, 0.0, 25.0, 25.0]]
    """
    if resize not in _RESIZE_MODES:
        raise ValueError(f"resize must be one of {_RESIZE_MODES}; got {resize!r}")
    if size is None:
        spec = getattr(model, "spec", None)
        if spec is None:
            raise ValueError("preprocess_boxes needs the output size: pass an xaijax Model or "
                             "size=(H, W)")
        size = spec.input_size
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W), two positive ints; got {size!r}")
    if len(image_shape) not in (2, 3) or min(image_shape[:2]) < 1:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C); got {tuple(image_shape)!r}"
                         " — pass photo.shape")
    b = np.asarray(boxes, np.float64)
    single = b.ndim == 1
    b = b.reshape(-1, 4) if single else b
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4) [x0, y0, x1, y1]; got shape {np.shape(boxes)}")
    sx, sy, left, top, ow, oh = _geometry(tuple(image_shape[:2]), size, resize, crop_fraction)
    out = np.stack([b[:, 0] * sx - left, b[:, 1] * sy - top,
                    b[:, 2] * sx - left, b[:, 3] * sy - top], axis=1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, ow)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, oh)
    out = out.astype(np.float32)
    return out[0] if single else out
