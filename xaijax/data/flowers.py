"""Synthetic an8Flower-style data: flower-like objects made of parts, where the colour of a part
(single-6c) or the colour and the part carrying it (double-12c) decide the class, with an exact
mask of the discriminative part for every image (Oramas et al. 2019, §4.3).

The original an8Flower set (rendered 3-D flowers) is not reachable from here, so this module
draws its 2-D analogue procedurally, vectorised over the images with numpy (no Python loop over
pixels; about 4,000 images per second at 64×64 on one core). Every flower has

* a **centre** disc,
* **8 petals** (ellipses arranged around the centre: the "8" of an8Flower), and
* a **stem** with a **leaf** (a bar below the centre and an ellipse attached to it),

drawn in that order back to front (stem, leaf, petals, centre) over a procedural background
(a smooth colour gradient plus value noise). Pose, scale, position, petal length, lighting
(global gain and a linear shading ramp) and sensor noise vary per image.

Colours: the discriminative part takes one of six saturated **class colours**
(:data:`CLASS_COLOURS`: red, green, blue, yellow, magenta, cyan, each jittered); every other
part takes a **neutral colour** (whites, greys, beiges and browns, jittered), so no other part
can carry a class colour. The background is drawn from a darker, desaturated range.

Variants:

* ``"single6"``: the centre disc carries the class colour; ``label = colour`` (6 classes).
  The mask is the visible centre disc.
* ``"double12"``: the class colour sits on the centre disc or on the stem and leaf;
  ``label = 2 · colour + part`` (part 0: centre, 1: stem + leaf; 12 classes). The mask is the
  visible part that carries it. A model must use colour and shape (which part) to tell the
  classes apart, as in the paper.

Everything is deterministic given ``seed``; labels cycle through the classes (``label = i mod
C``, then shuffled) so that every class is equally frequent.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from xaijax.progress import bar, shown

VARIANTS = {"single6": 6, "double12": 12}
_CHUNK = 64

#: The six class colours (RGB in [0, 1]) of the discriminative part.
CLASS_COLOURS = np.array([
    [0.85, 0.12, 0.12],  # red
    [0.12, 0.72, 0.18],  # green
    [0.15, 0.25, 0.90],  # blue
    [0.92, 0.85, 0.10],  # yellow
    [0.82, 0.15, 0.80],  # magenta
    [0.10, 0.80, 0.85],  # cyan
], np.float32)

# neutral part colours: whites, greys, beiges, browns (low saturation)
_NEUTRAL = np.array([
    [0.92, 0.92, 0.90], [0.75, 0.74, 0.72], [0.55, 0.55, 0.55], [0.85, 0.78, 0.65],
    [0.62, 0.50, 0.38], [0.45, 0.36, 0.28], [0.70, 0.66, 0.60], [0.95, 0.90, 0.82],
], np.float32)


def _rotate(dx, dy, c, s):
    return dx * c + dy * s, -dx * s + dy * c


def _ellipse(px, py, cx, cy, a, b, ang):
    """Boolean ``(n, H, W)``: inside the ellipse with centre (cx, cy), semi-axes a (along the
    angle ``ang``) and b; parameters ``(n, 1, 1)``."""
    u, v = _rotate(px - cx, py - cy, np.cos(ang), np.sin(ang))
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _jitter(rng, base, n, amount):
    return np.clip(base + rng.uniform(-amount, amount, (n, 3)).astype(np.float32), 0.0, 1.0)


def _value_noise(rng, n, size, cells=4):
    """Smooth noise in [0, 1]: a random ``cells×cells`` grid upsampled bilinearly."""
    g = rng.uniform(0, 1, (n, cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(t.astype(np.int32), cells - 1)
    f = t - i0
    rows = g[:, i0] * (1 - f)[None, :, None] + g[:, i0 + 1] * f[None, :, None]  # (n, S, c+1)
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def flowers(n: int, variant: str = "single6", size: int = 64, seed: int = 0,
            progress: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """``n`` synthetic flowers of ``variant`` (``"single6"`` or ``"double12"``) at ``size``.

    Args:
      n: number of images (>= 1).
      variant: ``"single6"`` (the centre's colour decides among 6 classes) or ``"double12"``
        (the colour and whether the centre or the stem + leaf carries it: 12 classes).
      size: image side in pixels (>= 16).
      seed: the images, labels and masks are a function of ``(n, variant, size, seed)``.
      progress: a bar of the chunks of 64 images on stderr (default: when stderr is a
        terminal; :mod:`xaijax.progress`).

    Returns:
      a dict with ``"images"`` ``(n, size, size, 3)`` float32 in [0, 1], ``"labels"``
      ``(n,)`` int32, ``"masks"`` ``(n, size, size)`` bool (the visible discriminative part),
      ``"parts"`` ``(n,)`` int32 (0 centre, 1 stem + leaf) and ``"num_classes"`` (int).

    Examples:
      >>> d = flowers(12, "double12", size=32, seed=1)
      >>> d["images"].shape, d["labels"].shape, d["masks"].dtype.name, d["num_classes"]
      ((12, 32, 32, 3), (12,), 'bool', 12)
      >>> sorted(set(d["labels"].tolist())) == list(range(12))
      True
    """
    if variant not in VARIANTS:
        raise ValueError(f"flowers: variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"flowers: n must be a positive int; got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"flowers: size must be an int >= 16; got {size!r}")
    n, size = int(n), int(size)
    num_classes = VARIANTS[variant]
    rng = np.random.default_rng([seed, size, num_classes])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    if variant == "single6":
        colour, part = labels, np.zeros(n, np.int32)
    else:
        colour, part = labels // 2, labels % 2
    # chunks of images small enough to stay in the CPU caches (3x faster at 64 px than one
    # whole-set pass); each chunk has its own generator, so the set is fixed by the seed
    images, masks = [], []
    step = bar(-(-n // _CHUNK), shown(progress) and n > _CHUNK, unit="chunk", desc="flowers")
    for c0 in range(0, n, _CHUNK):
        sub = np.random.default_rng([seed, size, num_classes, 1 + c0 // _CHUNK])
        im, m = _render(sub, colour[c0:c0 + _CHUNK], part[c0:c0 + _CHUNK], size)
        images.append(im)
        masks.append(m)
        step()
    step(None)
    return {"images": np.concatenate(images), "labels": labels,
            "masks": np.concatenate(masks), "parts": part.astype(np.int32),
            "num_classes": num_classes}


def _render(rng, colour, part, size):
    """Images ``(n, size, size, 3)`` and masks of the flowers with class colours ``colour`` on
    parts ``part`` (both ``(n,)``)."""
    n = len(colour)


    def col(shape=()):
        return rng.uniform(size=(n,) + shape).astype(np.float32)[..., None, None]

    px, py = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5,
                         np.arange(size, dtype=np.float32) + 0.5)
    px, py = px[None] / size, py[None] / size  # (1, S, S) in [0, 1]

    # pose: centre position, scale, rotation of the whole flower
    scale = 0.75 + 0.35 * col()
    cx = 0.5 + (col() - 0.5) * 0.24
    cy = 0.42 + (col() - 0.5) * 0.16
    tilt = (col() - 0.5) * 0.6  # radians the stem leans
    spin = col() * 2 * np.pi  # petal ring rotation

    # stem: a bar from the centre downwards (leaning by tilt)
    stem_len, stem_w = 0.55 * scale, 0.035 * scale
    su, sv = _rotate(px - cx, py - cy, np.cos(tilt), np.sin(tilt))
    stem = (sv > 0) & (sv < stem_len) & (np.abs(su) < stem_w)
    side = np.where(col() > 0.5, 1.0, -1.0)
    leaf_t = 0.6 + 0.2 * col()
    lx = cx + np.cos(tilt) * side * 0.09 * scale - np.sin(tilt) * leaf_t * stem_len
    ly = cy + np.sin(tilt) * side * 0.09 * scale + np.cos(tilt) * leaf_t * stem_len
    leaf = _ellipse(px, py, lx, ly, 0.10 * scale, 0.04 * scale, tilt + side * 0.5)

    # petals: 8 ellipses around the centre
    petal_a = (0.11 + 0.04 * col()) * scale
    petal_b = 0.45 * petal_a
    r0 = 0.07 * scale + petal_a
    petals = np.zeros((n, size, size), bool)
    for k in range(8):  # 8 parts, not pixels: each step is a whole-array operation
        ang = spin + k * (2 * np.pi / 8)
        petals |= _ellipse(px, py, cx + r0 * np.cos(ang), cy + r0 * np.sin(ang),
                           petal_a, petal_b, ang)
    centre_r = (0.085 + 0.02 * col()) * scale
    centre = (px - cx) ** 2 + (py - cy) ** 2 <= centre_r ** 2

    # colours
    def neutral():
        return _jitter(rng, _NEUTRAL[rng.integers(0, len(_NEUTRAL), n)], n, 0.06)

    cls = _jitter(rng, CLASS_COLOURS[colour], n, 0.07)
    c_centre = np.where((part == 0)[:, None], cls, neutral())
    c_stem = np.where((part == 1)[:, None], cls, neutral() * 0.8)
    c_petal = neutral()

    # background: a dark, desaturated gradient plus value noise
    bg0 = rng.uniform(0.05, 0.45, (n, 3)).astype(np.float32)
    bg1 = rng.uniform(0.05, 0.45, (n, 3)).astype(np.float32)
    grey0, grey1 = bg0.mean(1, keepdims=True), bg1.mean(1, keepdims=True)
    bg0, bg1 = 0.5 * bg0 + 0.5 * grey0, 0.5 * bg1 + 0.5 * grey1
    ga = col() * 2 * np.pi
    ramp = np.clip(0.5 + (px - 0.5) * np.cos(ga) + (py - 0.5) * np.sin(ga), 0, 1)[..., None]
    img = bg0[:, None, None] * (1 - ramp) + bg1[:, None, None] * ramp
    img = img + 0.12 * (_value_noise(rng, n, size)[..., None] - 0.5)

    # one part index per pixel (0: background, 1: stem or leaf, 2: petal, 3: centre; later
    # parts cover earlier ones), then one gather of the per-image part colours
    part_map = np.where(centre, 3, np.where(petals, 2, np.where(stem | leaf, 1, 0)))
    palette = np.stack([np.zeros_like(c_stem), c_stem, c_petal, c_centre], 1)  # (n, 4, 3)
    painted = np.take_along_axis(palette, part_map.reshape(n, -1, 1), 1).reshape(img.shape)
    img = np.where((part_map > 0)[..., None], painted, img)
    mask = part_map == np.where(part == 0, 3, 1)[:, None, None]

    # lighting: global gain and a linear shading ramp; sensor noise
    gain = 0.75 + 0.4 * col()
    sa = col() * 2 * np.pi
    shade = 1.0 + 0.25 * ((px - 0.5) * np.cos(sa) + (py - 0.5) * np.sin(sa))
    img = img * (gain * shade)[..., None]
    img = img + 0.02 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask
