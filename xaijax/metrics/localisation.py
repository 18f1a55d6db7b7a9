"""Ground-truth localisation metrics: how well a heatmap falls on the annotated object.

Every function takes heatmaps ``(N, H, W)`` and ground-truth masks ``(N, H, W)`` (bool, or 0/1
numbers; :func:`boxes_to_masks` builds them from bounding boxes), runs as one compiled program
per shape, and returns one value per image as a ``(N,)`` float32 array in [0, 1]: the caller
averages (over images, or per class first as the pointing game's papers do).

* :func:`pointing_game` — is the maximum within ``tolerance`` pixels of the object (Zhang et al.
  2016; Gu et al. 2020 §4.2, Table 3).
* :func:`energy_pointing_game` — EBPG, the share of the map's energy inside the object (Wang et
  al. 2020; Sattarzadeh et al. 2021, "Quantitative Results").
* :func:`miou` — IoU of the top-20 % pixels with the object (Sattarzadeh et al. 2021).
* :func:`bbox_score` — the share of the top-``|G|`` pixels inside the object (Schulz et al.
  2020, as Sattarzadeh et al. 2021 use it).

Ties. A top-k selection or an arg-max is ambiguous where the map has equal values (an all-zero
or a saturated map, a coarse CAM). Here the tied pixels share the choice evenly, which is the
expected score when ties are broken uniformly at random: the result never depends on where in
the image the object lies relative to the scan order, and a constant map scores the chance
level. (The model-based metrics in :mod:`xaijax.metrics.faithfulness` need one binary mask or
one order and break ties by the row-major index instead.)
"""

from __future__ import annotations

import functools
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import check_choice
from xaijax.models.base import check_finite

Array = jax.Array

TIES = ("mean", "any", "first")


# ------------------------------------------------------------------------------------------------
# argument checks (host side, before entering jit)


def _check_heatmap(heatmap: Any, what: str) -> Tuple[int, int, int]:
    shape = getattr(heatmap, "shape", None)
    if shape is None:
        raise TypeError(f"{what}: heatmap must be an array of shape (N, H, W); got "
                        f"{type(heatmap).__name__}")
    if len(shape) != 3:
        hint = ""
        if len(shape) == 4:
            hint = (" — a per-channel map (N, H, W, C)? pass Explanation.heatmap, or sum over "
                    "channels: a.sum(-1)")
        elif len(shape) == 2:
            hint = " — add a batch axis with heatmap[None]"
        raise ValueError(f"{what}: heatmap must be (N, H, W); got shape {tuple(shape)}{hint}")
    if not jnp.issubdtype(heatmap.dtype, jnp.number) or jnp.issubdtype(heatmap.dtype,
                                                                       jnp.complexfloating):
        raise TypeError(f"{what}: heatmap must be real numbers; got dtype {heatmap.dtype}")
    check_values(heatmap, f"{what}: heatmap")
    return tuple(int(s) for s in shape)


def check_values(a: Any, name: str) -> None:
    """Refuse NaN/inf in a concrete array (a device array: one reduction on the device, the
    details only when it fails); traced values are not checked."""
    check_finite(a, name=name)


def check_masks(masks: Any, shape: Tuple[int, ...], what: str) -> Any:
    """``masks`` as a bool array of ``shape`` ``(N, H, W)``, or an error naming the problem.

    Concrete masks are checked for non-empty objects (every image needs one object pixel) and
    converted on the host; traced masks (inside a user's ``jit``) are only compared with 0.
    """
    mshape = getattr(masks, "shape", None)
    if mshape is None:
        raise TypeError(f"{what}: masks must be an array of shape {shape}; got "
                        f"{type(masks).__name__}")
    if tuple(mshape) != tuple(shape):
        hint = ""
        if len(mshape) == 4 and mshape[-1] == 1:
            hint = " — drop the channel axis: masks[..., 0]"
        elif len(mshape) == 3 and mshape[0] == shape[0]:
            hint = (f" — resize the heatmap to the masks' size first: "
                    f"xaijax.methods.base.upsample(heatmap, {tuple(mshape[1:])})")
        elif len(mshape) == 2 and len(shape) == 3:
            hint = " — add a batch axis with masks[None]"
        elif len(mshape) == 2 and mshape[-1] == 4:
            hint = " — boxes? convert them with xj.metrics.boxes_to_masks(boxes, (H, W))"
        raise ValueError(f"{what}: masks must have the heatmap's shape {tuple(shape)} (N, H, W); "
                         f"got {tuple(mshape)}{hint}")
    if isinstance(masks, jax.core.Tracer):
        return masks if masks.dtype == jnp.bool_ else masks != 0
    m = np.asarray(masks)
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{what}: masks must be bool (or 0/1) object masks; got values "
                             f"other than 0 and 1 (dtype {m.dtype}) — threshold them, e.g. "
                             f"masks > 0.5")
        m = m != 0
    empty = np.flatnonzero(~m.reshape(m.shape[0], -1).any(axis=1))
    if empty.size:
        raise ValueError(f"{what}: masks[{int(empty[0])}] is empty ({empty.size} of {m.shape[0]} "
                         f"image(s) have no object pixel: {empty[:8].tolist()}); the metric is "
                         f"undefined without an object — drop those images or give them a mask")
    return m


def check_top(top: Any, what: str) -> float:
    if isinstance(top, bool) or not isinstance(top, (float, int, np.floating, np.integer)) or (
            not 0.0 < float(top) <= 1.0):
        raise ValueError(f"{what}: top must be a fraction of the pixels in (0, 1] (0.2 for the "
                         f"top 20 %); got {top!r}")
    return float(top)


def top_count(top: float, num_pixels: int) -> int:
    """The number of pixels in the top fraction ``top`` of ``num_pixels``: the nearest integer
    (halves rounded up), at least 1."""
    return int(min(num_pixels, max(1, np.floor(top * num_pixels + 0.5))))


# ------------------------------------------------------------------------------------------------
# shared pieces (pure, traceable)


def top_weights(h: Array, k: Array) -> Array:
    """Weights of the top-``k`` pixels of each map ``h`` ``(N, P)``, ties shared evenly.

    Pixels above the ``k``-th largest value get 1, the pixels equal to it share the remaining
    places (``(k − #above) / #tied`` each), all others 0: each row sums to ``k``, and the weight
    of a pixel is the probability that a uniformly random tie-break puts it in the top ``k``.

    Args:
      h: ``(N, P)`` maps, flattened.
      k: ``(N,)`` or scalar int counts, ``1 <= k <= P``.

    Returns:
      ``(N, P)`` float32 weights.
    """
    n, p = h.shape
    k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), (n,))
    s = -jnp.sort(-h, axis=1)  # descending
    t = jnp.take_along_axis(s, (k - 1)[:, None], axis=1)
    above = h > t
    tied = h == t
    n_above = jnp.sum(above, axis=1, keepdims=True)
    n_tied = jnp.sum(tied, axis=1, keepdims=True)
    share = (k[:, None] - n_above).astype(jnp.float32) / n_tied.astype(jnp.float32)
    return jnp.where(above, 1.0, jnp.where(tied, share, 0.0)).astype(jnp.float32)


def _disk(tolerance: int) -> np.ndarray:
    """The offsets ``(dy, dx)`` with ``dy² + dx² < max(tolerance, 1)²`` as a 0/1 kernel."""
    r = max(tolerance, 1) - 1
    d = np.arange(-r, r + 1)
    return ((d[:, None] ** 2 + d[None, :] ** 2) < max(tolerance, 1) ** 2).astype(np.float32)


def accept_region(masks: Array, tolerance: int) -> Array:
    """``(N, H, W)`` bool: pixels with an object pixel at Euclidean distance ``< tolerance``
    (the mask itself for ``tolerance`` 0 or 1), i.e. the mask dilated by an open disk."""
    if tolerance <= 1:
        return masks
    k = jnp.asarray(_disk(tolerance))[:, :, None, None]
    m = masks.astype(jnp.float32)[..., None]
    d = jax.lax.conv_general_dilated(m, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return d[..., 0] > 0.5


# ------------------------------------------------------------------------------------------------
# pointing game


def pointing_game(heatmap: Array, masks: Array, tolerance: int = 15, *,
                  ties: str = "mean") -> Array:
    """Pointing game: is the maximum of each heatmap within ``tolerance`` pixels of the object?

    The point is the arg-max of the heatmap; it is a hit when some object pixel lies at a
    Euclidean distance below ``tolerance`` pixels from it (TorchRay's reference implementation
    of Zhang et al.'s benchmark: ``(u − u₀)² + (v − v₀)² < tolerance²``). ``tolerance`` 0 (and 1)
    means the point must lie on the object, which is Quantus' ``PointingGame``. The accuracy of
    the papers is the mean hit per class, ``hits / (hits + misses)``, left to the caller.

    Args:
      heatmap: ``(N, H, W)`` maps at the masks' resolution.
      masks: ``(N, H, W)`` bool object masks (or boxes through :func:`boxes_to_masks`); none may
        be empty.
      tolerance: the margin in pixels, a non-negative int (static); 15 as in Zhang et al. 2016
        and Gu et al. 2020.
      ties: when several pixels share the maximum: ``"mean"`` (default) the share of them that
        hit, the expected hit when the tie is broken uniformly at random — an all-constant map
        scores the share of the image within ``tolerance`` of the object (chance), not a free
        hit; ``"any"`` a hit when any of them hits (Quantus); ``"first"`` the first in row-major
        order (``argmax`` of the flattened map, as most reference scripts do).

    Returns:
      ``(N,)`` float32: 1 (hit) or 0 (miss); with ``ties="mean"`` a fraction where the maximum
      is tied.

    Examples:
      >>> import jax.numpy as jnp
      >>> h = jnp.zeros((1, 8, 8)).at[0, 0, 7].set(1.0)
      >>> m = jnp.zeros((1, 8, 8), bool).at[0, 0, 4].set(True)
      >>> pointing_game(h, m, tolerance=3).tolist(), pointing_game(h, m, tolerance=4).tolist()
      ([0.0], [1.0])

    References:
      Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (the pointing
      game, 15-pixel tolerance); Gu et al. 2020 (DSSR), §4.2, Table 3; TorchRay
      ``benchmark.pointing_game.PointingGame.evaluate``.
    """
    what = "pointing_game"
    shape = _check_heatmap(heatmap, what)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or \
            tolerance < 0:
        raise ValueError(f"{what}: tolerance must be a non-negative int number of pixels (15 in "
                         f"the papers, 0 for 'on the object'); got {tolerance!r}")
    check_choice(ties, TIES, "ties", what)
    m = check_masks(masks, shape, what)
    return _pointing_game(heatmap, m, int(tolerance), ties)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _pointing_game(h, m, tolerance, ties):
    n = h.shape[0]
    hit = accept_region(m, tolerance).reshape(n, -1)
    h = h.reshape(n, -1).astype(jnp.float32)
    if ties == "first":
        i = jnp.argmax(h, axis=1)
        return jnp.take_along_axis(hit, i[:, None], axis=1)[:, 0].astype(jnp.float32)
    top = h == jnp.max(h, axis=1, keepdims=True)
    if ties == "any":
        return jnp.any(top & hit, axis=1).astype(jnp.float32)
    return (jnp.sum(top & hit, axis=1) / jnp.sum(top, axis=1)).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------
# energy-based pointing game


def energy_pointing_game(heatmap: Array, masks: Array) -> Array:
    """Energy-based pointing game (EBPG): the share of the map's energy inside the object.

    ``EBPG = ||S ⊙ G||₁ / ||S||₁`` with ``S`` the non-negative part of the heatmap
    (``max(S, 0)``: SISE's maps are non-negative, and negative evidence is not energy "captured"
    anywhere; take ``abs`` yourself to count it). An all-zero (or all-negative) map has no
    energy; as EBPG is invariant to scaling it is scored as the constant map it is the limit of,
    ``|G| / (H·W)`` (chance) — Quantus' ``RelevanceMassAccuracy`` returns NaN there.

    Args:
      heatmap: ``(N, H, W)`` maps at the masks' resolution.
      masks: ``(N, H, W)`` bool object masks; none may be empty.

    Returns:
      ``(N,)`` float32 in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> h = jnp.array([[[3.0, 1.0], [0.0, -5.0]]])
      >>> energy_pointing_game(h, jnp.array([[[True, False], [False, False]]])).tolist()
      [0.75]

    References:
      Wang et al. 2020, "Score-CAM" (energy-based pointing game); Sattarzadeh et al. 2021
      (SISE), "Quantitative Results" (Table 1, EBPG). Equals Quantus'
      ``RelevanceMassAccuracy`` (Arras et al. 2022) on non-negative maps.
    """
    what = "energy_pointing_game"
    shape = _check_heatmap(heatmap, what)
    m = check_masks(masks, shape, what)
    return _ebpg(heatmap, m)


@jax.jit
def _ebpg(h, m):
    n = h.shape[0]
    s = jnp.maximum(h.reshape(n, -1).astype(jnp.float32), 0.0)
    g = m.reshape(n, -1)
    total = jnp.sum(s, axis=1)
    inside = jnp.sum(jnp.where(g, s, 0.0), axis=1)
    chance = jnp.mean(g.astype(jnp.float32), axis=1)
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), chance)


# ------------------------------------------------------------------------------------------------
# mIoU and Bbox


def miou(heatmap: Array, masks: Array, top: float = 0.2) -> Array:
    """IoU of the top-``top`` pixels of each heatmap with its object mask.

    The top set ``T`` holds the ``k = round(top·H·W)`` highest pixels (at least 1; ties at the
    ``k``-th value share the remaining places evenly, see the module notes), and the score is
    ``|T ∩ G| / |T ∪ G|`` with ``|T ∪ G| = k + |G| − |T ∩ G|``. The papers' mIoU is the mean of
    these over images.

    Args:
      heatmap: ``(N, H, W)`` maps at the masks' resolution.
      masks: ``(N, H, W)`` bool object masks; none may be empty.
      top: the fraction of pixels selected, in (0, 1]; 0.2 as in SISE.

    Returns:
      ``(N,)`` float32 in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> h = jnp.arange(10.0).reshape(1, 2, 5)      # the top 20 %: the pixels 8 and 9
      >>> g = jnp.zeros((1, 2, 5), bool).at[0, 1, 3:].set(True).at[0, 0, 0].set(True)
      >>> miou(h, g).tolist()                        # |T ∩ G| = 2, |T ∪ G| = 3
      [0.6666666865348816]

    References:
      Sattarzadeh et al. 2021 (SISE), "Quantitative Results" (Table 1, mIoU at the top 20 %).
    """
    what = "miou"
    shape = _check_heatmap(heatmap, what)
    top = check_top(top, what)
    m = check_masks(masks, shape, what)
    k = top_count(top, shape[1] * shape[2])
    return _miou(heatmap, m, np.int32(k))


@jax.jit
def _miou(h, m, k):
    n = h.shape[0]
    w = top_weights(h.reshape(n, -1).astype(jnp.float32), k)
    g = m.reshape(n, -1)
    inter = jnp.sum(jnp.where(g, w, 0.0), axis=1)
    union = k.astype(jnp.float32) + jnp.sum(g, axis=1).astype(jnp.float32) - inter
    return inter / union


def bbox_score(heatmap: Array, masks: Array) -> Array:
    """Bbox: the share of the ``N = |G|`` highest pixels of each heatmap that lie inside ``G``.

    A size-adaptive mIoU: the number of pixels selected is the object's own area, so a perfect
    map scores 1 whatever the object's size. Ties at the ``N``-th value share the remaining
    places evenly (see the module notes).

    Args:
      heatmap: ``(N, H, W)`` maps at the masks' resolution.
      masks: ``(N, H, W)`` bool object masks (boxes through :func:`boxes_to_masks`); none may be
        empty.

    Returns:
      ``(N,)`` float32 in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> h = jnp.array([[[4.0, 3.0], [2.0, 1.0]]])
      >>> bbox_score(h, jnp.array([[[True, False], [True, False]]])).tolist()  # top 2: 4, 3
      [0.5]

    References:
      Schulz et al. 2020, "Restricting the Flow: Information Bottlenecks for Attribution"
      (bounding-box test); Sattarzadeh et al. 2021 (SISE), "Quantitative Results" (Table 1,
      Bbox). Equals Quantus' ``TopKIntersection`` with ``k = |G|``.
    """
    what = "bbox_score"
    shape = _check_heatmap(heatmap, what)
    m = check_masks(masks, shape, what)
    return _bbox(heatmap, m)


@jax.jit
def _bbox(h, m):
    n = h.shape[0]
    g = m.reshape(n, -1)
    size = jnp.sum(g, axis=1).astype(jnp.int32)
    w = top_weights(h.reshape(n, -1).astype(jnp.float32), jnp.maximum(size, 1))
    return jnp.sum(jnp.where(g, w, 0.0), axis=1) / jnp.maximum(size, 1).astype(jnp.float32)


# ------------------------------------------------------------------------------------------------
# boxes


def boxes_to_masks(boxes: Array, size: Tuple[int, int]) -> Array:
    """Object masks ``(N, H, W)`` from one bounding box per image.

    A box is ``[x0, y0, x1, y1)`` in pixels, half-open: pixel ``(row i, column j)`` is inside
    when ``x0 <= j < x1`` and ``y0 <= i < y1``. Fractional coordinates (boxes scaled with the
    image) are compared with the pixel centres, ``x0 <= j + 0.5 < x1``, which is the same for
    integers. Coordinates outside the image are clipped. (PASCAL VOC's 1-based inclusive
    ``[xmin, ymin, xmax, ymax]`` is ``[xmin − 1, ymin − 1, xmax, ymax)``.) For several objects
    per image, combine their masks with ``|``.

    Args:
      boxes: ``(N, 4)`` numbers ``[x0, y0, x1, y1]``.
      size: ``(H, W)`` of the masks (the heatmaps' size).

    Returns:
      ``(N, H, W)`` bool.

    Examples:
      >>> boxes_to_masks([[1, 0, 3, 2]], (3, 4)).astype(int).tolist()
      [[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    what = "boxes_to_masks"
    if (not isinstance(size, (tuple, list)) or len(size) != 2 or
            any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                for s in size)):
        raise ValueError(f"{what}: size must be (H, W), two positive ints; got {size!r}")
    b = boxes
    if not hasattr(b, "shape"):
        b = np.asarray(b, np.float32)
    if b.ndim != 2 or b.shape[1] != 4:
        hint = " — one box per image: boxes[None] for a single box" if b.ndim == 1 else ""
        raise ValueError(f"{what}: boxes must be (N, 4) [x0, y0, x1, y1); got shape "
                         f"{tuple(b.shape)}{hint}")
    if not isinstance(b, jax.core.Tracer):
        a = np.asarray(b, np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: boxes contain NaN/inf")
        h, w = size
        cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
        for i, (x0, y0, x1, y1) in enumerate(a):
            if not (((cx >= x0) & (cx < x1)).any() and ((cy >= y0) & (cy < y1)).any()):
                raise ValueError(f"{what}: box {i} [{x0:g}, {y0:g}, {x1:g}, {y1:g}) covers no "
                                 f"pixel of a {h}x{w} image (expected x0 < x1, y0 < y1 inside "
                                 f"the image, as [x0, y0, x1, y1) in pixels)")
        b = np.asarray(b, np.float32)
    return _boxes_to_masks(b, tuple(int(s) for s in size))


@functools.partial(jax.jit, static_argnums=(1,))
def _boxes_to_masks(b, size):
    b = b.astype(jnp.float32)
    cy = jnp.arange(size[0], dtype=jnp.float32) + 0.5
    cx = jnp.arange(size[1], dtype=jnp.float32) + 0.5
    x0, y0, x1, y1 = (b[:, i, None] for i in range(4))
    row = (cy[None] >= y0) & (cy[None] < y1)
    col = (cx[None] >= x0) & (cx[None] < x1)
    return row[:, :, None] & col[:, None, :]
