"""Heatmap overlays, grids and PNG output (what a person looks at)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from xaijax.io.files import atomic_path
from xaijax.viz.colormaps import apply_colormap


def normalize(heatmap: np.ndarray, *, signed: Optional[bool] = None,
              percentile: float = 99.5) -> np.ndarray:
    """Scale one ``(H, W)`` map for display.

    Unsigned maps go to [0, 1] (min-max after clipping at ``percentile``); signed maps (any
    negative value, or ``signed=True``) go to [0, 1] with 0.5 at zero, symmetric in the
    ``percentile`` of ``|h|``, so positive and negative evidence keep their meaning.
    """
    h = np.asarray(heatmap, np.float64)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be (H, W); got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmap contains NaN or inf")
    if signed is None:
        signed = bool((h < 0).any())
    if signed:
        m = np.percentile(np.abs(h), percentile) if percentile < 100 else np.abs(h).max()
        m = m if m > 0 else 1.0
        return np.clip(0.5 + 0.5 * h / m, 0.0, 1.0)
    lo = h.min()
    hi = np.percentile(h, percentile) if percentile < 100 else h.max()
    if hi <= lo:
        return np.zeros_like(h)
    return np.clip((h - lo) / (hi - lo), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5,
            cmap: Optional[str] = None, signed: Optional[bool] = None) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image.

    Args:
      image: ``(H, W, 3)`` in [0, 1] (e.g. ``xj.models.images_from_normalised(model, x)[i]``).
      heatmap: ``(H, W)`` raw map (normalised here).
      alpha: weight of the colour map.
      cmap: ``"jet"`` for unsigned maps, ``"bwr"`` for signed ones by default.

    Returns:
      ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) in [0, 1]; got shape {image.shape}")
    heatmap = np.asarray(heatmap)
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image "
                         f"{image.shape[:2]}")
    is_signed = bool((heatmap < 0).any()) if signed is None else signed
    v = normalize(heatmap, signed=is_signed)
    colours = apply_colormap(v, cmap or ("bwr" if is_signed else "jet"))
    return np.clip((1.0 - alpha) * image + alpha * colours, 0.0, 1.0).astype(np.float32)


def grid(images: Sequence[np.ndarray], *, cols: Optional[int] = None, pad: int = 4,
         background: float = 1.0) -> np.ndarray:
    """Tile ``(H, W, 3)`` images (all the same size) into one image."""
    images = [np.asarray(i, np.float32) for i in images]
    if not images:
        raise ValueError("grid needs at least one image")
    h, w = images[0].shape[:2]
    for i in images:
        if i.shape[:2] != (h, w):
            raise ValueError(f"all grid images must be {h}x{w}; got {i.shape[:2]}")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.float32)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        im3 = im if im.ndim == 3 else np.repeat(im[..., None], 3, -1)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + c * (w + pad):pad + c * (w + pad) + w] = im3
    return out


def caption(image: np.ndarray, text: str, *, height: int = 16) -> np.ndarray:
    """Add a white strip with ``text`` above an RGB image in [0, 1]."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(to_uint8(image))
    out = Image.new("RGB", (img.width, img.height + height), (255, 255, 255))
    out.paste(img, (0, height))
    ImageDraw.Draw(out).text((3, 2), text, fill=(0, 0, 0))
    return np.asarray(out, np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(image, np.float32), 0, 1) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str, image: np.ndarray) -> str:
    """Write an RGB image in [0, 1] as PNG/JPEG atomically (temp file + rename): an existing
    file is replaced only by a complete new one."""
    from PIL import Image

    ext = os.path.splitext(path)[1].lower() or ".png"
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(ext)
    if fmt is None:
        raise ValueError(f"output must end in .png, .jpg or .jpeg; got {path!r}")
    with atomic_path(path, ext) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format=fmt)
    return path


def save_overlay(path: str, image: np.ndarray, heatmap: np.ndarray, **kw) -> str:
    """``save_image(path, overlay(image, heatmap, **kw))``."""
    return save_image(path, overlay(image, heatmap, **kw))


def explanation_images(model, x, ex, *, alpha: float = 0.5, cmap: Optional[str] = None):
    """One overlay per image of an Explanation (photo recovered from the normalised ``x``)."""
    from xaijax.models.base import images_from_normalised

    photos = images_from_normalised(model, x) if hasattr(model, "spec") else np.clip(
        np.asarray(x), 0, 1)
    maps = np.asarray(ex.heatmap)
    return [overlay(photos[i], maps[i], alpha=alpha, cmap=cmap) for i in range(maps.shape[0])]
