"""Perturbation methods: Occlusion, RISE and LIME (survey §2.1).

They need only ``f(x) -> logits`` and evaluate the model on many perturbed copies of each image;
every batch of perturbations is built inside a chunked ``lax.map`` or ``lax.scan`` (static
``batch_size``), so peak memory is one chunk of images whatever the number of windows, masks or
samples. A chunk is one model batch: its ``batch_size`` perturbations of every image of the
batch (:func:`xaijax.sharding.merge_inner`, which splits them over the devices when a sharded
call has fewer images than devices).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import (SCORES, Explanation, check_choice, check_positive_int,
                                 class_scores, logits_fn, register, upsample)
from xaijax.methods.masks import split_key
from xaijax.progress import tick
from xaijax.sharding import merge_inner, split_inner

Array = jax.Array


def _check_score_and_batch(score: str, batch_size: Any, method: str) -> None:
    check_choice(score, SCORES, "score", method)
    check_positive_int(batch_size, "batch_size", method, "perturbed images per model call")


def _chunked(fn: Callable[[Array], Any], n: int, batch_size: int, progress: bool = False,
             desc: str = "") -> Any:
    """Apply ``fn`` to index chunks ``(B,)`` covering ``0..n−1`` with ``lax.map`` and concatenate
    the results along axis 0, trimmed to ``n`` (the last chunk is padded with index ``n−1``);
    with ``progress`` (static) each chunk ticks the bar ``desc`` (:func:`tick`). The chunks are
    the fewest of at most ``batch_size`` items, all of one size, as even as possible (100 items
    at ``batch_size`` 64: two chunks of 50, not 64 + 36 padded passes)."""
    chunks = math.ceil(n / min(int(batch_size), n))
    b = math.ceil(n / chunks)
    idx = jnp.minimum(jnp.arange(chunks * b), n - 1).reshape(chunks, b)

    def chunk(i):
        tick(i[0] // b, chunks, desc, progress)
        return fn(i)

    out = jax.lax.map(chunk, idx)
    return jax.tree_util.tree_map(lambda a: a.reshape((chunks * b,) + a.shape[2:])[:n], out)


# ------------------------------------------------------------------------------------------------
# Occlusion


def _as_triple(v: Union[int, Sequence[int]], name: str, channels: int, default_c: int
               ) -> Tuple[int, int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(i) for i in v)
    if len(v) == 2:
        v = v + (default_c,)
    if len(v) != 3:
        raise ValueError(f"{name} must be an int, (h, w) or (h, w, c); got {v}")
    return v


def _window_masks(size: int, window: int, stride: int) -> np.ndarray:
    """``(count, size)`` 0/1 rows: window ``k`` covers ``[k·s, min(k·s + w, size))``; ``count =
    ceil((size − w)/s) + 1`` (Captum: the last window may be cut off at the border)."""
    count = int(np.ceil((size - window) / stride)) + 1
    i = np.arange(size)
    starts = np.arange(count)[:, None] * stride
    return ((i >= starts) & (i < starts + window)).astype(np.float32)


@register("occlusion",
          paper="Zeiler & Fergus 2014, §4.2 (occlusion sensitivity)",
          peer="Captum Occlusion",
          static=("window", "strides", "batch_size", "score", "progress"), signed=True)
def occlusion(model: Any, x: Array, target: Array, *, window: Any = (16, 16),
              strides: Any = (8, 8), baseline: Any = 0.0, batch_size: int = 64,
              score: str = "logit", progress: bool = False) -> Explanation:
    """Occlusion: the score drop when a sliding window is replaced by a baseline.

    Every window position ``k`` gives ``d_k = S(x) − S(x ⊙ (1 − M_k) + b ⊙ M_k)``; a pixel's
    attribution is the mean of ``d_k`` over the windows that cover it (Captum ``Occlusion``).
    Windows start at multiples of the stride from the top-left corner, ``ceil((D − w)/s) + 1``
    per axis, so the last one may be cut off at the border. All windows are one batched
    computation, evaluated ``batch_size`` at a time.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      window: ``(h, w)`` (all channels occluded together), ``(h, w, c)`` or an int (static);
        Captum's ``sliding_window_shapes`` in channels-last order.
      strides: ``(sh, sw)``, ``(sh, sw, sc)`` or an int (static); each must be ``<=`` the window
        along axes where the window is smaller than the image.
      baseline: value of occluded pixels: a scalar or an array broadcastable to ``x``.
      batch_size: windows evaluated per model call (static).
      score: ``"logit"`` (the model's output, as Captum), ``"softmax"`` or ``"sigmoid"``.
      progress: show a bar of the chunks of windows on stderr (static; :mod:`xaijax.progress`).

    Returns:
      attribution ``(N, H, W, C)`` (signed); heatmap its sum over channels. ``extras``:
      ``score_drop`` ``(N, nh, nw, nc)`` (``d_k`` per window position).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.occlusion(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), window=8,
      ...                           strides=4)
      >>> ex.heatmap.shape, ex.extras["score_drop"].shape
      ((1, 32, 32), (1, 7, 7, 1))

    References:
      Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, §4.2;
      survey (Ayyar et al. 2021) §2.1; conventions of Captum ``Occlusion``.
    """
    _check_score_and_batch(score, batch_size, "occlusion")
    n, h, w, c = x.shape
    win = _as_triple(window, "window", c, c)
    st = _as_triple(strides, "strides", c, win[2])
    for name, dim, wd, sd in zip("HWC", (h, w, c), win, st):
        if wd < 1 or sd < 1:
            raise ValueError(f"window and strides must be positive; got window={win}, "
                             f"strides={st}")
        if wd > dim:
            raise ValueError(f"occlusion window {win} is larger than the image (H, W, C) = "
                             f"{(h, w, c)} along {name}; use a window of at most the image size")
        if wd < dim and sd > wd:
            raise ValueError(f"stride {sd} along {name} is larger than the window {wd}: some "
                             f"pixels would never be occluded; use strides <= window")
    rows, cols, chans = (_window_masks(d, wd, sd) for d, wd, sd in zip((h, w, c), win, st))
    nh, nw, nc = rows.shape[0], cols.shape[0], chans.shape[0]
    total = nh * nw * nc
    counts = (rows.sum(0)[:, None, None] * cols.sum(0)[None, :, None]
              * chans.sum(0)[None, None, :])
    rows_j, cols_j, chans_j = jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(chans)
    f = logits_fn(model)
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

    s0 = class_scores(f(x), target, score)

    def chunk(idx):  # (B,) window indices -> (B, N) score drops
        a, r = jnp.divmod(idx, nw * nc)
        b, cc = jnp.divmod(r, nc)
        m = (rows_j[a][:, :, None, None] * cols_j[b][:, None, :, None]
             * chans_j[cc][:, None, None, :])[:, None]
        # the occluded images as one model batch; split over the devices in inner mode
        xa = merge_inner(x[None] * (1 - m) + base[None] * m)
        t = merge_inner(jnp.broadcast_to(target, (idx.shape[0], n)))
        return s0 - split_inner(class_scores(f(xa), t, score), idx.shape[0])

    d = _chunked(chunk, total, batch_size, progress, "occlusion windows")
    d = jnp.moveaxis(d, 1, 0).reshape(n, nh, nw, nc)
    attr = jnp.einsum("nabc,ah,bw,cz->nhwz", d, rows_j, cols_j, chans_j,
                      precision=jax.lax.Precision.HIGHEST) / jnp.asarray(counts)

    return Explanation(heatmap=jnp.sum(attr, axis=-1), attribution=attr,
                       extras={"score_drop": d}, target=target, method="occlusion")


# ------------------------------------------------------------------------------------------------
# RISE


def rise_masks(key: Array, num_masks: int, size: Tuple[int, int], grid_size: int = 7,
               p1: float = 0.5) -> Array:
    """RISE masks ``(num_masks, H, W)``: binary ``s×s`` grids (1 with probability ``p₁``),
    bilinearly upsampled to ``(s + 1)·⌈H/s⌉ × (s + 1)·⌈W/s⌉`` and cropped at a random shift in
    ``[0, ⌈H/s⌉) × [0, ⌈W/s⌉)``.

    Examples:
      >>> import jax
      >>> rise_masks(jax.random.PRNGKey(0), 4, (32, 32)).shape
      (4, 32, 32)

    References:
      Petsiuk, Das & Saenko 2018, §3.2 ("mask generation", steps 1–4).
    """
    h, w = size
    ch, cw = math.ceil(h / grid_size), math.ceil(w / grid_size)
    kg, ks = jax.random.split(key)
    grid = (jax.random.uniform(kg, (num_masks, grid_size, grid_size)) < p1).astype(jnp.float32)
    up = upsample(grid, ((grid_size + 1) * ch, (grid_size + 1) * cw))
    shifts = jax.random.randint(ks, (num_masks, 2), 0, jnp.array([ch, cw]))
    return jax.vmap(lambda m, s: jax.lax.dynamic_slice(m, (s[0], s[1]), (h, w)))(up, shifts)


@register("rise",
          paper="Petsiuk et al. 2018, Eq. 6-7 (Monte-Carlo estimate over random masks)",
          peer="TorchRay rise",
          static=("num_masks", "grid_size", "p1", "batch_size", "score", "progress"))
def rise(model: Any, x: Array, target: Array, *, num_masks: int = 4000, grid_size: int = 7,
         p1: float = 0.5, batch_size: int = 100, key: Optional[Array] = None,
         masks: Optional[Array] = None, score: str = "softmax", progress: bool = False
         ) -> Explanation:
    """RISE: the saliency of a pixel is the expected class score over random masks keeping it.

    ``S(λ) = 1/(N·p₁) Σ_i f_c(x ⊙ M_i)·M_i(λ)`` (Eq. 6 with the Monte-Carlo estimate of Eq. 7,
    normalised by ``E[M] = p₁`` as in the authors' code), with ``f_c`` the softmax
    probability of the target. Masks are generated and evaluated ``batch_size`` at a time inside
    ``lax.map``, so they are never all in memory.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      num_masks: N (static; paper 4000 for ResNet-50). Ignored when ``masks`` is given.
      grid_size: cells per side ``s`` of the low-resolution grid (static; paper 7).
      p1: keep probability of a cell, in (0, 1] (static; paper 0.5).
      batch_size: masks per model call (static); bounds peak memory.
      key: PRNG key (split per image; ``None`` means ``PRNGKey(0)``).
      masks: optional explicit ``(M, H, W)`` masks shared by all images (then normalised by
        ``M·p₁``).
      score: ``"softmax"`` (RISE), ``"sigmoid"`` (TorchRay's ``rise``) or ``"logit"``.
      progress: show a bar of the mask chunks on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap ``(N, H, W)``; attribution ``None``; ``extras``: ``num_masks``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.rise(m, jnp.ones((2, 32, 32, 3)), jnp.array([0, 1]), num_masks=8,
      ...                 batch_size=4).heatmap.shape
      (2, 32, 32)

    References:
      Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
      Models", BMVC 2018, §3.1 Eq. 1–7, §3.2. Deviation: the upsampling is bilinear with edge
      clamping (torch ``align_corners=False``) where the authors' code uses skimage's reflect
      mode, which differs only within half a cell of the border of the enlarged mask.
    """
    _check_score_and_batch(score, batch_size, "rise")
    if not 0 < p1 <= 1:
        raise ValueError(f"p1 (keep probability) must be in (0, 1]; got {p1}")
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1; got {grid_size}")
    n, h, w, _ = x.shape
    if masks is not None:
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks must have shape (M, {h}, {w}) to match the images; got "
                             f"{masks.shape}")
        num_masks = masks.shape[0]
        masks = jnp.asarray(masks, jnp.float32)
    if num_masks < 1:
        raise ValueError(f"num_masks must be >= 1; got {num_masks}")
    f = logits_fn(model)
    keys = split_key(key, n)
    b = min(batch_size, num_masks)
    chunks = math.ceil(num_masks / b)

    def chunk(carry, c):
        tick(c, chunks, "rise masks", progress)
        if masks is None:  # (b, N, h, w): image i's masks drawn from its own key
            m = jax.vmap(lambda ki: rise_masks(jax.random.fold_in(ki, c), b, (h, w),
                                               grid_size, p1), out_axes=1)(keys)
        else:
            m = jax.lax.dynamic_slice_in_dim(
                jnp.pad(masks, ((0, chunks * b - num_masks), (0, 0), (0, 0))), c * b, b)
            m = jnp.broadcast_to(m[:, None], (b, n, h, w))
        valid = (c * b + jnp.arange(b)) < num_masks
        # the masked images as one model batch; split over the devices in inner mode
        xm = merge_inner(x[None] * m[..., None])
        t = merge_inner(jnp.broadcast_to(target, (b, n)))
        s = split_inner(class_scores(f(xm), t, score), b) * valid[:, None]
        return carry + jnp.einsum("kn,knhw->nhw", s, m,
                                  precision=jax.lax.Precision.HIGHEST), None

    sal, _ = jax.lax.scan(chunk, jnp.zeros((n, h, w), jnp.float32), jnp.arange(chunks))
    sal = sal / (num_masks * p1)
    return Explanation(heatmap=sal, attribution=None, extras={"num_masks": num_masks},
                       target=target, method="rise")


# ------------------------------------------------------------------------------------------------
# LIME


def _grid_shape(num_segments: int, h: int, w: int) -> Tuple[int, int]:
    gy = max(1, int(round(math.sqrt(num_segments * h / w))))
    gx = max(1, int(round(num_segments / gy)))
    return min(gy, h), min(gx, w)


def grid_segments(size: Tuple[int, int], num_segments: int) -> Array:
    """``(H, W)`` int32 labels of a ``gy × gx`` grid of rectangles with ``gy·gx ≈ num_segments``
    (row-major labels ``0..gy·gx−1``)."""
    h, w = size
    gy, gx = _grid_shape(num_segments, h, w)
    ry = (np.arange(h) * gy) // h
    rx = (np.arange(w) * gx) // w
    return jnp.asarray(ry[:, None] * gx + rx[None, :], jnp.int32)


def slic_segments(image: Array, num_segments: int = 50, compactness: float = 1.0,
                  iterations: int = 10) -> Array:
    """SLIC-like superpixels of one ``(H, W, C)`` image: k-means on (colour, position).

    Centres start on the :func:`grid_segments` grid; each iteration assigns every pixel to the
    centre minimising ``‖c − c_k‖² + compactness²·‖(p − p_k)/S‖²`` (``S = √(HW/K)``, colours as
    given, e.g. normalised) and moves each centre to the mean of its pixels (an empty cluster
    keeps its centre). Unlike SLIC, every centre is a candidate (no 2S window) and connectivity
    is not enforced; labels are ``0..K−1`` with ``K = gy·gx``.

    Args:
      image: ``(H, W, C)``.
      num_segments: about how many superpixels (static).
      compactness: weight of position against colour.
      iterations: k-means iterations (static).

    Returns:
      ``(H, W)`` int32 labels.

    References:
      Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods",
      TPAMI 2012, §3 (distance measure Eq. 3, Algorithm 1).
    """
    h, w, c = image.shape
    gy, gx = _grid_shape(num_segments, h, w)
    k = gy * gx
    s = math.sqrt(h * w / k)
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    pos = jnp.stack([yy, xx], -1).reshape(-1, 2) * (compactness / s)
    feats = jnp.concatenate([image.reshape(-1, c), pos], axis=1)
    init = grid_segments((h, w), k).reshape(-1)
    counts0 = jax.ops.segment_sum(jnp.ones(h * w), init, k)
    centres0 = jax.ops.segment_sum(feats, init, k) / jnp.maximum(counts0, 1)[:, None]

    def assign(centres):
        d = (jnp.sum(feats ** 2, 1)[:, None] - 2 * feats @ centres.T
             + jnp.sum(centres ** 2, 1)[None, :])
        return jnp.argmin(d, axis=1)

    def step(centres, _):
        lab = assign(centres)
        cnt = jax.ops.segment_sum(jnp.ones(h * w), lab, k)
        mean = jax.ops.segment_sum(feats, lab, k) / jnp.maximum(cnt, 1)[:, None]
        return jnp.where(cnt[:, None] > 0, mean, centres), None

    centres, _ = jax.lax.scan(step, centres0, None, length=iterations)
    return assign(centres).reshape(h, w).astype(jnp.int32)


def resolve_segments(x: Array, segments: Optional[Array], num_segments: int,
                     segmentation: str = "slic", compactness: Any = 1.0,
                     slic_iterations: int = 10) -> Tuple[Array, int]:
    """The feature groups of each image: ``(N, H, W)`` int32 labels and their count ``K``.

    Given ``segments`` (``(H, W)`` or ``(N, H, W)`` integer labels in ``[0, num_segments)``,
    Captum's ``feature_mask``) they are used as they are, with ``K = num_segments``; otherwise
    ``segmentation`` (``"slic"``: :func:`slic_segments` per image, ``"grid"``:
    :func:`grid_segments`) makes ``K = gy·gx ≈ num_segments`` groups. Shared by LIME and the
    Shapley / ablation methods (:mod:`xaijax.methods.shapley`).
    """
    if segmentation not in _SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {_SEGMENTATIONS}; got {segmentation!r}")
    n, h, w, _ = x.shape
    if segments is not None:
        segments = jnp.asarray(segments)
        if segments.shape not in ((h, w), (n, h, w)):
            raise ValueError(f"segments must have shape ({h}, {w}) or ({n}, {h}, {w}); got "
                             f"{segments.shape}")
        if segments.dtype.kind not in "iu":
            raise TypeError(f"segments must hold integer labels; got dtype {segments.dtype}")
        return jnp.broadcast_to(segments.astype(jnp.int32), (n, h, w)), int(num_segments)
    gy, gx = _grid_shape(num_segments, h, w)
    k = gy * gx
    if segmentation == "grid":
        return jnp.broadcast_to(grid_segments((h, w), k), (n, h, w)), k
    return jax.vmap(lambda im: slic_segments(im, k, compactness, slic_iterations))(x), k


def coalition_images(xi: Array, bi: Array, onehot: Array, z: Array) -> Array:
    """``(B, H, W, C)``: image ``xi`` ``(H, W, C)`` with the groups where ``z`` ``(B, K)`` is 1
    kept and the others replaced by ``bi`` (``onehot`` ``(H, W, K)``: the groups' indicators),
    i.e. ``x ⊙ m + b ⊙ (1 − m)``, the interpretable-to-input map of LIME and Kernel SHAP."""
    m = jnp.einsum("hwk,bk->bhw", onehot, z)[..., None]
    return xi * m + bi * (1 - m)


def weighted_ridge(z: Array, y: Array, weights: Array, alpha) -> Tuple[Array, Array]:
    """Closed-form weighted ridge regression with an unpenalised intercept.

    Minimises ``Σ_i w_i (y_i − z_i·β − b)² + α‖β‖²`` (sklearn ``Ridge(alpha)`` with
    ``sample_weight``): centre ``z`` and ``y`` by their weighted means, solve
    ``(Z_cᵀ W Z_c + αI) β = Z_cᵀ W y_c``, ``b = ȳ − z̄·β``.

    Returns:
      ``(β (K,), b ())``.
    """
    sw = jnp.sum(weights)
    zm = weights @ z / sw
    ym = weights @ y / sw
    zc = z - zm
    yc = y - ym
    hi = jax.lax.Precision.HIGHEST
    a = jnp.matmul(zc.T * weights, zc, precision=hi) + alpha * jnp.eye(z.shape[1], dtype=z.dtype)
    beta = jnp.linalg.solve(a, jnp.matmul(zc.T * weights, yc, precision=hi))
    return beta, ym - zm @ beta


_SEGMENTATIONS = ("slic", "grid")
_KERNEL_SPACES = ("input", "interpretable")


def _validate_lime(model, x, opts) -> None:
    """kernel_width > 0, alpha >= 0, segment labels in [0, num_segments)."""
    if "kernel_width" in opts and not float(np.asarray(opts["kernel_width"])) > 0:
        raise ValueError(f"kernel_width must be > 0; got {float(np.asarray(opts['kernel_width']))}")
    if "alpha" in opts and not float(np.asarray(opts["alpha"])) >= 0:
        raise ValueError(f"alpha (ridge penalty) must be >= 0; got "
                         f"{float(np.asarray(opts['alpha']))}")
    check_segment_labels(opts)


def check_segment_labels(opts) -> None:
    """Given (concrete) ``segments``, their labels lie in ``[0, num_segments)``; a ValueError
    naming the ``num_segments`` to pass otherwise (shared by every method with feature
    groups)."""
    segs, k = opts.get("segments"), opts.get("num_segments")
    if segs is not None and k is not None and np.asarray(segs).dtype.kind in "iu":
        lo, hi = int(np.min(segs)), int(np.max(segs))
        if lo < 0 or hi >= k:
            raise ValueError(f"segment labels must lie in [0, num_segments={k}); got labels "
                             f"{lo}..{hi}; pass num_segments={hi + 1}")


@register("lime",
          paper="Ribeiro et al. 2016, Eq. 1-2 (local weighted linear surrogate)",
          peer="Captum Lime",
          static=("num_samples", "num_segments", "segmentation", "batch_size", "score",
                          "kernel_space", "slic_iterations", "progress"), signed=True,
          validate=_validate_lime)
def lime(model: Any, x: Array, target: Array, *, num_samples: int = 1000,
         num_segments: int = 50, segmentation: str = "slic", segments: Optional[Array] = None,
         samples: Optional[Array] = None, baseline: Any = 0.0, kernel_width=1.0, alpha=1.0,
         compactness=1.0, slic_iterations: int = 10, kernel_space: str = "input",
         batch_size: int = 64, key: Optional[Array] = None, score: str = "logit",
         progress: bool = False) -> Explanation:
    """LIME: a weighted linear model of the class score on superpixels switched on and off.

    Each sample ``z ∈ {0, 1}^K`` (Bernoulli ½ per superpixel) keeps the superpixels with
    ``z_k = 1`` and sets the others to ``baseline``; the model's score of the perturbed image is
    regressed on ``z`` with weights ``π(z) = exp(−D²/(2·width²))``, ``D`` the cosine distance
    between the original and the perturbed input (Captum's ``exp_kernel_similarity`` default;
    ``kernel_space="interpretable"`` uses the cosine distance between ``z`` and all-ones, as the
    LIME paper), by closed-form weighted ridge regression (sklearn ``Ridge``, the LIME paper's
    and Captum's ``SkLearnRidge`` model). The coefficient of a superpixel is its heatmap value.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      num_samples: perturbation samples per image (static).
      num_segments: number of superpixels (static); with ``segments`` given, labels must be
        in ``[0, num_segments)``; for ``slic``/``grid`` the nearest ``gy × gx`` grid is used.
      segmentation: ``"slic"`` (:func:`slic_segments`) or ``"grid"`` (static).
      segments: optional ``(N, H, W)`` or ``(H, W)`` int labels (Captum's ``feature_mask``).
      samples: optional ``(S, K)`` or ``(N, S, K)`` 0/1 samples (overrides the random ones).
      baseline: value of switched-off superpixels (scalar or broadcastable to ``x``).
      kernel_width: width of the exponential kernel (Captum default 1.0).
      alpha: ridge penalty (sklearn default 1.0).
      compactness, slic_iterations: passed to :func:`slic_segments`.
      kernel_space: ``"input"`` (Captum) or ``"interpretable"`` (static).
      batch_size: samples per model call (static).
      key: PRNG key for the samples (split per image; ``None`` means ``PRNGKey(0)``).
      score: ``"logit"`` (the model's output, as Captum), ``"softmax"`` or ``"sigmoid"``.
      progress: show a bar of the sample chunks on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap ``(N, H, W)``: each pixel gets its superpixel's coefficient (signed).
      ``extras``: ``segments`` ``(N, H, W)``, ``coefficients`` ``(N, K)``, ``intercept``,
      ``samples`` ``(N, S, K)``, ``scores`` and ``weights`` ``(N, S)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.lime(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), num_samples=16,
      ...                      num_segments=16, segmentation="grid")
      >>> ex.extras["coefficients"].shape
      (1, 16)

    References:
      Ribeiro, Singh & Guestrin, "Why Should I Trust You?", KDD 2016, §3.3–3.4 (Eq. 1–2,
      sparse linear explanations; K-Lasso is replaced by ridge on all superpixels, as in the
      authors' ``lime_image`` and Captum).
    """
    _check_score_and_batch(score, batch_size, "lime")
    if kernel_space not in _KERNEL_SPACES:
        raise ValueError(f"kernel_space must be one of {_KERNEL_SPACES}; got {kernel_space!r}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2; got {num_samples}")
    n, h, w, c = x.shape
    f = logits_fn(model)
    segs, k = resolve_segments(x, segments, num_segments, segmentation, compactness,
                               slic_iterations)
    keys = split_key(key, n)
    if samples is not None:
        samples = jnp.asarray(samples, jnp.float32)
        if samples.shape[-1] != k or samples.ndim not in (2, 3):
            raise ValueError(f"samples must have shape (S, {k}) or ({n}, S, {k}); got "
                             f"{samples.shape}")
        zs = jnp.broadcast_to(samples, (n,) + samples.shape[-2:])
    else:
        zs = jax.vmap(lambda kk: jax.random.bernoulli(kk, 0.5, (num_samples, k)))(keys)
        zs = zs.astype(jnp.float32)
    s_count = zs.shape[1]
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)

    onehot = jax.nn.one_hot(segs, k, dtype=jnp.float32)              # (N, H, W, K)

    def chunk(idx):  # (B,) sample indices -> (B, N) scores, <x', x>, |x'|
        xp = jax.vmap(coalition_images, out_axes=1)(x, base, onehot, zs[:, idx])
        dot = jnp.sum(xp * x[None], axis=(2, 3, 4))
        pn = jnp.sqrt(jnp.sum(xp * xp, axis=(2, 3, 4)))
        # the perturbed images as one model batch; split over the devices in inner mode
        t = merge_inner(jnp.broadcast_to(target, (idx.shape[0], n)))
        return split_inner(class_scores(f(merge_inner(xp)), t, score), idx.shape[0]), dot, pn

    ys, dots, pns = (jnp.moveaxis(a, 1, 0) for a in _chunked(chunk, s_count, batch_size,
                                                                  progress, "lime samples"))

    def one(xi, seg, z, y, dot, pn):
        xnorm = jnp.sqrt(jnp.sum(xi * xi))
        eps = 1e-8
        if kernel_space == "input":
            cos = dot / (jnp.maximum(xnorm, eps) * jnp.maximum(pn, eps))
        else:
            cos = jnp.sum(z, 1) / (jnp.maximum(jnp.sqrt(jnp.sum(z, 1)), eps) * math.sqrt(k))
        wts = jnp.exp(-((1 - cos) ** 2) / (2 * kernel_width ** 2))
        coef, b0 = weighted_ridge(z, y, wts, alpha)
        return coef[seg], coef, b0, y, wts

    heat, coef, b0, y, wts = jax.vmap(one)(x, segs, zs, ys, dots, pns)
    return Explanation(heatmap=heat, attribution=None,
                       extras={"segments": segs, "coefficients": coef, "intercept": b0,
                               "samples": zs, "scores": y, "weights": wts},
                       target=target, method="lime")
