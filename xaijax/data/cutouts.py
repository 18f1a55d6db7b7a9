"""Composite images with exact ground truth: objects cut from the bundled photos by their
hand-drawn boxes, scaled and pasted at known places onto other photos and procedural textures.

The cut-outs are rectangles (the boxes), so the mask of a composite is exactly the pasted
rectangle and its box is that rectangle: exact for "where are the pasted pixels", while the
object itself fills its box only partly (a cat's head fills most of it, the rocket a thin
column, so the mask also holds some of the source photo's background).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from xaijax.data.boxes import _annotations
from xaijax.data.images import SAMPLE_NAMES, load_image
from xaijax.progress import bar, shown

BACKGROUNDS = ("photo", "blurred", "noise", "stripes", "gradient", "checkerboard")
# Photos never used as the background of each other's objects: both hold a launch vehicle
# (the rocket, the astronaut's shuttle model), which a model may call by the other's class.
_LOOK_ALIKE = {"rocket": ("astronaut",), "astronaut": ("rocket",)}


@functools.lru_cache(maxsize=None)
def _photo(name: str):
    from PIL import Image

    return Image.fromarray(load_image(name))


def _objects(names: Sequence[str]):
    images = _annotations()["images"]
    out = []
    for name in names:
        for o in images[name]["objects"]:
            out.append((name, tuple(o["box"]), int(o["class_index"])))
    return out


def _texture(kind: str, rng: np.random.Generator, size: int, grid) -> np.ndarray:
    """A procedural ``(size, size, 3)`` float image in 0..255 with two random colours."""
    from PIL import Image

    yy, xx = grid
    c1, c2 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "noise":  # smooth value noise: a coarse random field, bicubically enlarged
        k = int(rng.integers(2, 17))
        field = (rng.random((k, k, 3)) * 255).astype(np.uint8)
        t = np.asarray(Image.fromarray(field).resize((size, size), Image.BICUBIC),
                       np.float32) / 255.0
        t = t + rng.normal(0.0, rng.uniform(0.0, 0.08), t.shape).astype(np.float32)
    elif kind == "stripes":
        period = rng.uniform(4, 48) / size
        phase = u / period + rng.uniform(0, 1)
        if rng.random() < 0.5:
            t = (phase % 1.0 < rng.uniform(0.25, 0.75)).astype(np.float32)
        else:
            t = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
        t = t[..., None]
    elif kind == "gradient":
        if rng.random() < 0.5:  # linear along theta
            t = (u - u.min()) / (u.max() - u.min())
        else:  # radial from a random centre
            cy, cx = rng.uniform(0, 1, 2)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            t = d / d.max()
        t = t[..., None]
    elif kind == "checkerboard":
        cell = rng.uniform(6, 56) / size
        if rng.random() < 0.5:
            theta = 0.0
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)[..., None]
    else:  # pragma: no cover - checked by the caller
        raise ValueError(kind)
    return c1 + (c2 - c1) * t


def _photo_background(name: str, rng: np.random.Generator, size: int, blur: bool) -> np.ndarray:
    """A random square crop (half to all of the shorter side) of a photo, resized."""
    from PIL import Image, ImageFilter

    im = _photo(name)
    w, h = im.size
    side = rng.uniform(0.5, 1.0) * min(w, h)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    out = im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if blur:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 8.0) * size / 224))
    return np.asarray(out)


def composites(n: int, *, size: int = 224, seed: int = 0, objects: Optional[Sequence[str]] = None,
               backgrounds: Sequence[str] = BACKGROUNDS, scale: Tuple[float, float] = (0.4, 0.8),
               flip: bool = True, progress: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """Objects from the bundled photos pasted at random places onto other backgrounds.

    Image ``i`` draws everything from its own generator ``np.random.default_rng([seed, i])``:
    which object, its size (longer side ``uniform(*scale) * size``, aspect kept), a mirror flip,
    its position (wholly inside), and the background: another bundled photo (a random square
    crop), the same blurred, or a texture (smooth colour noise, hard or soft stripes, a linear
    or radial gradient, a checkerboard, each in two random colours). So the set is a pure
    function of ``seed``, and ``composites(10)`` is the first ten of ``composites(200)``.
    A photo background is never the object's own photo, nor, for the rocket and the
    astronaut's shuttle model, the other one (two launch vehicles).

    Args:
      n: number of images.
      size: side of the square images.
      seed: non-negative int.
      objects: bundled photos whose annotated objects (``object_boxes``) are pasted; default
        all of them.
      backgrounds: background kinds drawn uniformly, a subset of ``BACKGROUNDS``.
      scale: range of the object's longer side as a fraction of ``size``, in (0, 1].
      flip: mirror half of the objects left-right.
      progress: a bar of the images on stderr (default: when stderr is a terminal;
        :mod:`xaijax.progress`).

    Returns:
      dict with ``images`` ``(n, size, size, 3)`` uint8; ``masks`` ``(n, size, size)`` bool,
      exactly the pasted pixels; ``boxes`` ``(n, 4)`` int32 ``[x0, y0, x1, y1)``, the masks'
      bounding boxes; ``labels`` ``(n,)`` int32, the pasted object's ImageNet class;
      ``sources`` ``(n,)`` str, its photo; ``backgrounds`` ``(n,)`` str, ``"photo:NAME"``,
      ``"blurred:NAME"`` or the texture kind.

    Examples:
      >>> d = composites(4, size=64, seed=1)
      >>> d["images"].shape, d["masks"].shape, d["boxes"].shape, d["labels"].dtype
      ((4, 64, 64, 3), (4, 64, 64), (4, 4), dtype('int32'))
    """
    from PIL import Image

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8; got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    names = tuple(SAMPLE_NAMES if objects is None else objects)
    annotated = _annotations()["images"]
    bad = [o for o in names if o not in annotated]
    if bad or not names:
        raise ValueError(f"objects must name annotated photos {sorted(annotated)}; got {names!r}")
    kinds = tuple(backgrounds)
    bad = [k for k in kinds if k not in BACKGROUNDS]
    if bad or not kinds:
        raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUNDS}; got {kinds!r}")
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1; got {scale!r}")
    objs = _objects(names)
    size = int(size)
    grid = tuple(np.mgrid[0:size, 0:size].astype(np.float32) / size)

    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    boxes = np.empty((n, 4), np.int32)
    labels = np.empty((n,), np.int32)
    sources, bgs = [], []
    step = bar(n, shown(progress) and n > 1, unit="image", desc="composites")
    for i in range(n):
        step()
        rng = np.random.default_rng([int(seed), i])
        src, (bx0, by0, bx1, by1), label = objs[int(rng.integers(len(objs)))]
        bw, bh = bx1 - bx0, by1 - by0
        longer = rng.uniform(lo, hi) * size
        ow = max(1, min(size, round(longer * bw / max(bw, bh))))
        oh = max(1, min(size, round(longer * bh / max(bw, bh))))
        mirror = flip and rng.random() < 0.5
        x0, y0 = int(rng.integers(0, size - ow + 1)), int(rng.integers(0, size - oh + 1))
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind in ("photo", "blurred"):
            others = [p for p in SAMPLE_NAMES
                      if p != src and p not in _LOOK_ALIKE.get(src, ())]
            other = others[int(rng.integers(len(others)))]
            images[i] = _photo_background(other, rng, size, kind == "blurred")
            kind = f"{kind}:{other}"
        else:
            images[i] = np.clip(_texture(kind, rng, size, grid) + 0.5, 0, 255).astype(np.uint8)
        cut = _photo(src).resize((ow, oh), Image.BILINEAR, box=(bx0, by0, bx1, by1))
        if mirror:
            cut = cut.transpose(Image.FLIP_LEFT_RIGHT)
        images[i, y0:y0 + oh, x0:x0 + ow] = np.asarray(cut)
        masks[i, y0:y0 + oh, x0:x0 + ow] = True
        boxes[i] = (x0, y0, x0 + ow, y0 + oh)
        labels[i] = label
        sources.append(src)
        bgs.append(kind)
    step(None)
    return {"images": images, "masks": masks, "boxes": boxes, "labels": labels,
            "sources": np.asarray(sources, dtype=str).reshape(n),
            "backgrounds": np.asarray(bgs, dtype=str).reshape(n)}


def filter_by_model(model: Callable[[Any], Any], data: Dict[str, np.ndarray], *, top_k: int = 1,
                    batch_size: int = 32,
                    preprocess: Optional[Callable[[np.ndarray], Any]] = None,
                    progress: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """The images of ``data`` that ``model`` classifies as their ``labels``.

    An image is kept when its label is among the model's ``top_k`` logits (``top_k=1``: the
    arg-max; ties go to the lower class index). Works with any ``f(x) -> logits``; batches are
    padded to one shape so a compiled model compiles once.

    Args:
      model: a callable from a preprocessed batch to ``(B, classes)`` logits.
      data: a dict like :func:`composites` returns: ``images`` ``(N, H, W, 3)`` uint8 and
        ``labels`` ``(N,)``; every entry with a leading axis of N is filtered alike.
      top_k: how many of the highest logits may hold the label.
      batch_size: images per call of ``model``.
      preprocess: uint8 batch -> model input. Default: for an xaijax ``Model``,
        ``xaijax.models.preprocess(model, images, resize="stretch")`` (its normalisation; no
        resampling when the images already have its input size); for any other callable,
        ``images / 255`` as float32.
      progress: a bar of the batches on stderr (default: when stderr is a terminal;
        :mod:`xaijax.progress`).

    Returns:
      The kept entries of ``data`` plus ``index`` ``(M,)``, their positions in ``data``.

    Examples:
      >>> d = {"images": np.zeros((3, 8, 8, 3), np.uint8), "labels": np.array([0, 1, 0])}
      >>> filter_by_model(lambda x: np.tile([[1.0, 0.0]], (len(x), 1)), d)["index"].tolist()
      [0, 2]
    """
    from xaijax.models.base import Model

    if "images" not in data or "labels" not in data:
        raise ValueError(f"data needs 'images' and 'labels'; got keys {sorted(data)}")
    images, labels = np.asarray(data["images"]), np.asarray(data["labels"])
    n = len(images)
    if images.ndim != 4 or labels.shape != (n,):
        raise ValueError(f"images must be (N, H, W, C) and labels (N,); got {images.shape} and "
                         f"{labels.shape}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive int; got {top_k!r}")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if preprocess is None:
        if isinstance(model, Model):
            from xaijax.models.base import preprocess as model_preprocess

            def preprocess(im):
                return model_preprocess(model, im, resize="stretch")
        else:
            def preprocess(im):
                return np.asarray(im, np.float32) / 255.0
    keep = np.zeros(n, bool)
    bs = min(int(batch_size), n)
    step = bar(-(-n // max(bs, 1)), shown(progress), desc="filter_by_model")
    for s in range(0, n, max(bs, 1)):
        step()
        batch = images[s:s + bs]
        m = len(batch)
        if m < bs:  # pad with the last image: one input shape for every call
            batch = np.concatenate([batch, np.repeat(batch[-1:], bs - m, axis=0)])
        logits = np.asarray(model(preprocess(batch)))
        if logits.ndim != 2 or logits.shape[0] != bs:
            raise ValueError(f"model must return (B, classes) logits; got shape {logits.shape} "
                             f"for a batch of {bs}")
        logits = logits[:m]
        if top_k == 1:
            hit = np.argmax(logits, axis=1) == labels[s:s + m]
        else:
            top = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
            hit = (top == labels[s:s + m, None]).any(axis=1)
        keep[s:s + m] = hit
    step(None)
    index = np.nonzero(keep)[0]
    out = {k: (np.asarray(v)[index] if np.ndim(v) >= 1 and len(v) == n else v)
           for k, v in data.items()}
    out["index"] = index
    return out
