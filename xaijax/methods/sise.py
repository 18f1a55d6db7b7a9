"""SISE, Semantic Input Sampling for Explanation (Sattarzadeh et al. 2021).

Four phases, each a small pure function here, composed by :func:`sise`:

1. **layer selection**: the output of the last layer of every convolutional block
   (``model.block_taps``, shallow to deep), or the taps named by ``layers=``;
2. **feature-map selection** (:func:`average_gradients`, :func:`select_maps`, Eq. 6–8): one
   backward pass gives ``α_k = Σ_λ ∂Ψ/∂A_k(λ)``; the maps with ``α_k > μ·β``, ``β = max_k α_k``,
   are kept;
3. **attribution-based input sampling** (:func:`attribution_masks` = Ω,
   :func:`layer_visualization`, Eq. 10–12): each kept map, upsampled bilinearly to the input size
   and min-max normalised to [0, 1], masks the image; the masked image's score, weighted by the
   size-normalised mask ``m / Σ m``, is averaged over the kept masks of the block;
4. **fusion** (:func:`otsu_threshold`, :func:`fuse`): the cascade of Fig. 5, low to high level:
   ``e ← (e + V_b) ⊙ [V_b ≥ Otsu(V_b)]``.

**Batching of the data-dependent selection.** How many maps pass Eq. 7 depends on the image, so
the number of masked images cannot decide a shape. Per image and layer the selected maps are
moved to the front and scored in a :func:`jax.lax.while_loop` that stops after the last
selected map (the last chunk is completed with maps of weight 0), accumulating the map, so at
most ``batch_size`` masks of an image are in memory and the compute follows the number of maps
that pass: a larger ``mu`` is faster, as in the paper. One loop per layer serves the whole
batch: each model call scores ``batch_size`` masks of every image (chunk-major, so that a
sharded call with fewer images than devices splits them: :func:`xaijax.sharding.merge_inner`),
and the loop runs as long as the image that needs most chunks; the others' extra masks have
weight 0 and add nothing. ``max_masks=k`` (static) bounds the work: only the ``k`` channels
with the largest ``α`` are candidates (those of them that pass Eq. 7 are used; passing maps
beyond the cap are dropped, counted in ``extras``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from xaijax.methods.base import (SCORES, Explanation, check_choice, check_positive_int,
                                 class_scores, minmax, register, require_model, upsample)
from xaijax.models.base import Model
from xaijax.progress import tick
from xaijax.sharding import merge_inner, split_inner

Array = jax.Array
_HI = lax.Precision.HIGHEST


@struct.dataclass
class Layers:
    """Tap names, shallow to deep, as a leaf-less pytree (static aux data), so that they can
    travel in ``Explanation.extras`` out of ``jit`` and ``vmap``.

    Attributes:
      names: the canonical tap names.
    """

    names: Tuple[str, ...] = struct.field(pytree_node=False, default=())


# ------------------------------------------------------------------------------------------------
# phases


def average_gradients(grads: Array) -> Array:
    """Eq. 6: ``α_k = Σ_λ ∂Ψ/∂A_k(λ)`` of gradients ``(..., h, w, K)`` -> ``(..., K)``.

    The paper sums over the locations; the authors' code takes the mean. Eq. 7 compares ``α``
    with a fraction of its own maximum, so both select the same maps.
    """
    return jnp.sum(grads, axis=(-3, -2))


def select_maps(alpha: Array, mu: Any) -> Array:
    """Eq. 7–8: ``α_k > μ·β`` with ``β = max_k α_k`` (over the last axis). Returns a bool mask
    shaped like ``alpha``.

    Examples:
      >>> import jax.numpy as jnp
      >>> select_maps(jnp.array([-1.0, 0.5, 2.0]), 0.5).tolist()
      [False, False, True]
    """
    beta = jnp.max(alpha, axis=-1, keepdims=True)
    return alpha > jnp.asarray(mu, alpha.dtype) * beta


def attribution_masks(acts: Array, size: Tuple[int, int]) -> Array:
    """Ω: bilinear upsampling of feature maps ``(B, h, w, K)`` to ``size`` (half-pixel centres,
    as ``tf.image.resize``) and min-max normalisation of each map to [0, 1] -> ``(B, H, W, K)``.
    A constant map becomes all zeros."""
    return minmax(upsample(acts, size), axes=(1, 2))


def masks_scored(num_selected: Array, num_maps: int, batch_size: int) -> Array:
    """Masked images :func:`layer_visualization` scores for ``num_selected`` selected maps out
    of ``num_maps``: whole chunks of ``min(batch_size, num_maps)``, at most ``num_maps``."""
    b = min(int(batch_size), int(num_maps))
    chunks = (jnp.asarray(num_selected, jnp.int32) + b - 1) // b
    return jnp.minimum(chunks * b, num_maps).astype(jnp.int32)


def layer_visualization(score_fn: Callable[[Array], Array], x: Array, acts: Array,
                        weights: Array, batch_size: int, *, progress: bool = False,
                        desc: str = "sise") -> Array:
    """Eq. 10–12 for one image and one layer: ``V(λ) = 1/|M| Σ_k w_k Ψ(x ⊙ m_k) m_k(λ) /
    Σ_λ' m_k(λ')`` with ``m_k = Ω(A_k)`` and ``|M| = Σ_k w_k``.

    Only the selected maps are scored: they are moved to the front (a stable sort on
    ``w_k = 0``) and a :func:`jax.lax.while_loop` builds, applies and scores ``batch_size`` of
    them at a time until none is left (the last chunk is completed with maps of weight 0), so
    the cost follows the number of maps that pass Eq. 7 (:func:`masks_scored`). Under
    :func:`jax.vmap` the loop runs as long as the image needing most chunks.

    Args:
      score_fn: ``(B, H, W, C) -> (B,)`` the confidence score Ψ of masked images.
      x: ``(H, W, C)`` image.
      acts: ``(h, w, K)`` feature maps of the layer.
      weights: ``(K,)`` 1 for the maps selected by Eq. 7, 0 otherwise.
      batch_size: masked images per call of ``score_fn`` (static).
      progress, desc: report each chunk to the progress bar ``desc`` (static;
        :func:`xaijax.progress.tick`).

    Returns:
      ``(H, W)``; zeros when no map is selected.
    """
    def score(z):  # (B, 1, H, W, C) -> (B, 1)
        return score_fn(z[:, 0])[:, None]

    return _visualize(score, x[None], acts[None], jnp.asarray(weights)[None], batch_size,
                      progress=progress, desc=desc)[0]


def _visualize(score_fn: Callable[[Array], Array], x: Array, acts: Array, weights: Array,
               batch_size: int, *, progress: bool, desc: str) -> Array:
    """:func:`layer_visualization` of a batch: ``x`` ``(N, H, W, C)``, ``acts`` ``(N, h, w,
    K)``, ``weights`` ``(N, K)`` -> ``(N, H, W)``. ``score_fn`` scores a chunk's masked images
    ``(B, N, H, W, C)`` -> ``(B, N)`` (chunk-major, so that the chunk can be split over devices:
    :func:`xaijax.sharding.merge_inner`). The loop runs as many chunks as the image needing most;
    the others' extra masks have weight 0 and add nothing."""
    n, h_in, w_in = x.shape[:3]
    k = acts.shape[-1]
    b = min(int(batch_size), k)
    chunks = math.ceil(k / b)
    pad = chunks * b - k
    w = jnp.asarray(weights, jnp.float32)
    order = jnp.argsort(w == 0, axis=-1, stable=True)  # selected maps first, in channel order
    acts_p = jnp.pad(jnp.take_along_axis(acts, order[:, None, None, :], axis=-1),
                     ((0, 0), (0, 0), (0, 0), (0, pad)))
    w_p = jnp.pad(jnp.take_along_axis(w, order, axis=-1), ((0, 0), (0, pad)))
    needed = jnp.max((jnp.sum(w != 0, axis=-1) + b - 1) // b)

    def chunk(state):
        c, total = state
        tick(c, needed, desc, progress)
        a = lax.dynamic_slice_in_dim(acts_p, c * b, b, axis=3)             # (N, h, w, b)
        wc = lax.dynamic_slice_in_dim(w_p, c * b, b, axis=1).T            # (b, N)
        m = jnp.moveaxis(attribution_masks(a, (h_in, w_in)), -1, 0)       # (b, N, H, W)
        s = score_fn(x[None] * m[..., None])
        size = jnp.sum(m, axis=(2, 3))
        # Eq. 11 (an all-zero mask adds 0; so does a mask of weight 0, whatever its score)
        coef = jnp.where(wc != 0, wc * s / jnp.where(size > 0, size, 1.0), 0.0)
        return c + 1, total + jnp.einsum("kn,knhw->nhw", coef, m, precision=_HI)

    _, total = lax.while_loop(lambda st: st[0] < needed, chunk,
                              (jnp.int32(0), jnp.zeros((n, h_in, w_in), jnp.float32)))
    return total / jnp.maximum(jnp.sum(w_p, axis=-1), 1.0)[:, None, None]


def otsu_threshold(v: Array, bins: int = 256) -> Array:
    """Otsu's threshold of a map ``v`` with values in [0, 1], from a ``bins``-bin histogram.

    Pixel ``λ`` falls in bin ``min(⌊v(λ)·bins⌋, bins − 1)``; the threshold is the bin edge
    ``t = k/bins`` (``k = 1..bins−1``) that maximises the between-class variance
    ``w₀ w₁ (μ₀ − μ₁)²`` of the bins below and above it (bin centres as values); the
    foreground is ``v ≥ t``. Ties go to the lowest edge; a map in one bin gives ``1/bins``.

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(otsu_threshold(jnp.array([[0.1, 0.15], [0.8, 0.9]]), bins=10)), 6)
      0.2
    """
    bins = int(bins)
    idx = jnp.clip(jnp.floor(v * bins).astype(jnp.int32), 0, bins - 1).ravel()
    hist = jnp.zeros((bins,), jnp.float32).at[idx].add(1.0)
    centres = (jnp.arange(bins, dtype=jnp.float32) + 0.5) / bins
    w0 = jnp.cumsum(hist)[:-1]
    s0 = jnp.cumsum(hist * centres)[:-1]
    w1 = jnp.sum(hist) - w0
    s1 = jnp.sum(hist * centres) - s0
    mu0 = s0 / jnp.where(w0 > 0, w0, 1.0)
    mu1 = s1 / jnp.where(w1 > 0, w1, 1.0)
    var = w0 * w1 * (mu0 - mu1) ** 2
    return (jnp.argmax(var) + 1).astype(jnp.float32) / bins


def fuse(maps: Array, bins: int = 256) -> Array:
    """The fusion module (Fig. 5) on one image's visualization maps ``(B, H, W)``, shallow to
    deep: each map is min-max normalised to [0, 1]; then ``e = V₁`` and for ``b = 2..B``
    ``e ← (e + V_b) ⊙ [V_b ≥ otsu_threshold(V_b)]``; the result is min-max normalised to
    [0, 1]. Returns ``(H, W)``."""
    v = minmax(maps, axes=(1, 2))
    e = v[0]
    for b in range(1, v.shape[0]):
        e = (e + v[b]) * (v[b] >= otsu_threshold(v[b], bins)).astype(e.dtype)
    return minmax(e[None])[0]


# ------------------------------------------------------------------------------------------------
# the method


def _resolve_layers(model: Any, layers: Optional[Sequence[str]]) -> Tuple[str, ...]:
    require_model(model, "sise", "taps")
    if layers is None:
        names = tuple(model.block_taps)
        if not names:
            raise ValueError(
                f"method 'sise' visualises the last layer of each convolutional block, but model "
                f"{model.spec.name!r} names no block taps (spec.block_taps); pass layers=(...) "
                f"with spatial taps from model.taps, shallow to deep")
    else:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError(f"method 'sise': layers must be a tuple of tap names, shallow to "
                            f"deep; got {layers!r}")
        names = tuple(model.resolve(n) for n in layers)
        if not names:
            raise ValueError("method 'sise': layers must name at least one tap")
    if len(set(names)) != len(names):
        raise ValueError(f"method 'sise': layers name a tap twice: {names}")
    return names


def _check_static(batch_size: Any, score: str, bins: Any, max_masks: Any) -> None:
    check_choice(score, SCORES, "score", "sise")
    check_positive_int(batch_size, "batch_size", "sise", "masked images per model call")
    if check_positive_int(bins, "bins", "sise", "Otsu histogram bins") < 2:
        raise ValueError(f"method 'sise': bins must be >= 2; got {bins}")
    if max_masks is not None:
        check_positive_int(max_masks, "max_masks", "sise", "masks scored per layer")


def _validate(model: Any, x: Any, opts: Mapping[str, Any]) -> None:
    _resolve_layers(model, opts.get("layers"))
    _check_static(opts.get("batch_size", 64), opts.get("score", "softmax"), opts.get("bins", 256),
                  opts.get("max_masks"))
    if "mu" in opts:
        mu = np.asarray(opts["mu"], np.float64)
        if mu.ndim != 0 or not np.isfinite(mu) or mu < 0:
            raise ValueError(f"method 'sise': mu must be a finite scalar >= 0 (Eq. 7, μ ∈ R≥0; "
                             f"0 keeps every positive-gradient map); got {opts['mu']!r}")


@register("sise",
          paper="Sattarzadeh et al. 2021, Eq. 6-12 and the fusion module (Fig. 5)",
          peer="",
          static=("layers", "batch_size", "score", "bins", "max_masks", "progress"), needs="taps",
          validate=_validate)
def sise(model: Model, x: Array, target: Array, *, layers: Optional[Tuple[str, ...]] = None,
         mu: Any = 0.0, batch_size: int = 64, score: str = "softmax", bins: int = 256,
         max_masks: Optional[int] = None, progress: bool = False) -> Explanation:
    """SISE: block-wise attribution masks from feature maps, scored by input sampling, fused.

    For every selected layer, the feature maps with a large enough average gradient (Eq. 6–8)
    become smooth masks (Ω); the score of each masked image, spread over its size-normalised
    mask, is averaged into the layer's visualization map (Eq. 10–12); the maps are fused from
    low to high level with additions gated by Otsu's threshold of the higher-level map (Fig. 5).
    The batching of the data-dependent selection: only the maps that pass Eq. 7 are scored, in
    chunks of ``batch_size`` (with ``max_masks``, only among the top-``α`` channels); see the
    module docstring.

    Args:
      model: a zoo Model (or a wrapped linen model) that names its taps.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      layers: tap names to visualise, shallow to deep (static); default ``model.block_taps``,
        the last layer of each convolutional block. Each must be spatial ``(N, h, w, C)``.
      mu: μ ≥ 0 of Eq. 7 (traced); ``0`` (the paper's default) keeps the positive-gradient maps.
      batch_size: masked images per model call and image (static); bounds the memory.
      score: Ψ, the confidence score, for both the gradients and the masked images:
        ``"softmax"`` (default; the authors' Keras models end in a softmax), ``"logit"`` or
        ``"sigmoid"`` (static).
      bins: histogram bins of Otsu's method (static).
      max_masks: if set, only this many channels per layer, those with the largest ``α``, are
        candidates (static); ``None``: every channel is.
      progress: show a bar per layer of the chunks of masked images on stderr (static;
        :mod:`xaijax.progress`).

    Returns:
      heatmap ``(N, H, W)`` in [0, 1] (the fused explanation map); attribution ``None``;
      extras: ``visualization_maps`` ``(N, B, H, W)`` (Eq. 12 per layer, before the fusion's
      normalisation), ``layers`` (:class:`Layers`, ``.names``), ``num_scored`` ``(N, B)`` masked
      images scored per image and layer (:func:`masks_scored`), ``num_passing`` ``(N, B)``
      maps that pass Eq. 7, ``num_selected`` ``(N, B)`` masks used in Eq. 12 (``num_passing``
      unless ``max_masks`` cut them), ``mu``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.sise(m, jnp.ones((2, 32, 32, 3)), jnp.array([0, 1]), max_masks=8)
      >>> ex.heatmap.shape, ex.extras["visualization_maps"].shape
      ((2, 32, 32), (2, 3, 32, 32))

    References:
      Sattarzadeh et al., "Explaining Convolutional Neural Networks through Attribution-Based
      Input Sampling and Block-Wise Feature Aggregation", AAAI 2021, Methodology: block-wise
      feature explanation; feature map selection, Eq. 6–8; attribution-based input sampling,
      Eq. 9–12; fusion module (Fig. 5). Where the paper leaves details open we follow the
      authors' Keras code: Ω resizes with bilinear half-pixel interpolation, each visualization
      map is min-max normalised before the fusion, Otsu's histogram has 256 bins on [0, 1].
      Where that code departs from the paper we follow the paper: (1) the gate is the binary
      Otsu mask, not the code's sigmoid ``1/(1 + exp(−100 (V − t)))`` with its ``τ = 1.5``
      threshold boost; (2) ``α`` is the sum of Eq. 6, not the mean (the selection is the same);
      (3) Eq. 12's expectation divides by the number of masks, which the code omits (it
      cancels in the normalisation). Ours adds a final min-max normalisation of the fused
      map (the code returns it unnormalised) and divides by ``Σ m`` exactly (the code adds
      1e-6), treating a constant feature map as an all-zero mask.
    """
    taps = layer_names = _resolve_layers(model, layers)
    _check_static(batch_size, score, bins, max_masks)
    n, h_in, w_in, _ = x.shape
    shapes = jax.eval_shape(lambda z: model.forward(z, capture=list(taps))[1], x)
    for t in taps:
        if len(shapes[t].shape) != 4:
            raise ValueError(f"method 'sise' needs spatial feature maps (N, h, w, C); tap {t!r} "
                             f"has shape {tuple(shapes[t].shape)} — choose convolutional taps, "
                             f"e.g. model.block_taps")

    def total(deltas):
        edits = {t: (lambda a, d=deltas[t]: a + d) for t in taps}
        logits, acts = model.forward(x, capture=list(taps), edits=edits)
        # images are independent (inference mode), so the batch sum gives per-image gradients
        return jnp.sum(class_scores(logits, target, score)), acts

    zeros = {t: jnp.zeros(shapes[t].shape, shapes[t].dtype) for t in taps}
    grads, acts = jax.grad(total, has_aux=True)(zeros)
    alphas = [average_gradients(grads[t]) for t in taps]  # (N, K) each
    acts = [acts[t] for t in taps]
    mu = jnp.asarray(mu, jnp.float32)
    f = model.apply_fn
    counts = [a.shape[-1] if max_masks is None else min(int(max_masks), a.shape[-1])
              for a in acts]

    def score_fn(z):  # (B, N, H, W, C) masked images -> (B, N), split over devices in inner mode
        t = merge_inner(jnp.broadcast_to(target, z.shape[:2]))
        return split_inner(class_scores(f(merge_inner(z)), t, score), z.shape[0])

    vis, passing, used, scored = [], [], [], []
    for name, a, al, cnt in zip(layer_names, acts, alphas, counts):
        keep = select_maps(al, mu)                                         # (N, K)
        passing.append(jnp.sum(keep, axis=-1))
        if cnt < a.shape[-1]:
            idx = lax.top_k(al, cnt)[1]
            a = jnp.take_along_axis(a, idx[:, None, None, :], axis=-1)
            keep = jnp.take_along_axis(keep, idx, axis=-1)
        used.append(jnp.sum(keep, axis=-1))
        scored.append(masks_scored(used[-1], cnt, batch_size))
        vis.append(_visualize(score_fn, x, a, keep.astype(jnp.float32), batch_size,
                              progress=progress, desc=f"sise {name}"))
    vis = jnp.stack(vis, axis=1)                                           # (N, L, H, W)
    heat = jax.vmap(lambda v: fuse(v, bins))(vis)
    passing, used = (jnp.stack(v, axis=1).astype(jnp.int32) for v in (passing, used))
    scored = jnp.stack(scored, axis=1)
    return Explanation(
        heatmap=heat, attribution=None,
        extras={"visualization_maps": vis, "layers": Layers(taps),
                "num_scored": scored, "num_passing": passing,
                "num_selected": used, "mu": mu},
        target=target, method="sise")
