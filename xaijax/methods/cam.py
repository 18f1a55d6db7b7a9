"""Activation-based (CAM family) methods: CAM, Grad-CAM, Guided Grad-CAM, Grad-CAM++, Score-CAM,
Ablation-CAM and FEM (survey §4.6, §5.3); HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM and
pytorch-grad-cam's EigenGrad-CAM and element-wise Grad-CAM.

Every method here combines the feature maps ``A^k`` (``(N, h, w, K)``) of one tap with one weight
per channel and image, ``L = sum_k w_k A^k`` (HiResCAM, LayerCAM, element-wise Grad-CAM: one
weight per channel and position, ``L = sum_k w^k_ij A^k_ij``, the last summing only the
positive terms; EigenGrad-CAM combines the channels of ``dy/dA ⊙ A``), then

* ReLUs the low-resolution map (all methods but FEM, as their papers do),
* upsamples it bilinearly to the input size (:func:`xaijax.methods.base.upsample`, torch's
  ``align_corners=False`` convention), and
* min-max normalises it to [0, 1] per image only when ``normalize=True`` (FEM's default; the
  others default to ``False``: DESIGN.md, "CAM-family maps are bilinearly upsampled and ReLU'd,
  not normalised unless asked").

``extras`` holds ``"low_res"`` (the ReLU'd map at the tap's resolution, ``(N, h, w)``; FEM: the
un-normalised map) and ``"weights"`` (the channel weights, ``(N, K)``; the position-wise
methods: ``(N, h, w, K)``; Eigen-CAM / EigenGrad-CAM: the first right singular vector, with the
signed map before the ReLU in ``"projection"``).

The layer is chosen with the static ``tap`` option (any tap with a spatial ``(N, h, w, C)``
activation, including block outputs of lower layers, or one of the model's aliases; default
``model.spec.cam_tap``, the last convolutional features). Activations and gradients with respect
to a tap come from ``model.forward(x, capture=[tap], edits={tap: lambda a: a + delta})``,
differentiated with respect to ``delta`` at zero. The class score is the target's logit (the
pre-softmax score ``y^c`` of the Grad-CAM paper).

Score-CAM and Ablation-CAM run one extra forward pass per channel; they are batched in chunks of
``batch_size`` channels with :func:`jax.lax.map` over the chunks, each chunk one model batch of
its channels for every image (:func:`xaijax.sharding.merge_inner`), so there is no Python loop
over channels and the whole computation is one jitted program.

Comparison with the peer libraries (tested in ``tests/methods/test_cam_parity.py``):

* pytorch-grad-cam min-max normalises every map (``eps = 1e-7``) and resizes it with
  ``cv2.resize`` (bilinear, half-pixel centres, the same as ours); the tests compare our raw
  low-resolution maps with its ``get_cam_image`` / ``get_cam_weights`` and our
  ``normalize=True`` heatmaps with its ``__call__`` output.
* Captum's ``LayerGradCam`` does not ReLU unless ``relu_attributions=True`` and
  ``LayerAttribution.interpolate`` / ``GuidedGradCam`` default to nearest-neighbour upsampling;
  the tests pass ``relu_attributions=True`` and ``interpolate_mode="bilinear"``.
* pytorch-grad-cam's ``ScoreCAM`` upsamples the masks with ``align_corners=True``
  (``UpsamplingBilinear2d``) and soft-maxes the target logits over the channels; ours defaults
  to the Score-CAM paper and its official code (``align_corners=False``, the target's softmax
  probability) and offers both of its conventions as options.
* pytorch-grad-cam's ``FEM`` weights each channel by the fraction of its pixels above the
  threshold and multiplies the activations (``k = 2``); ours is the survey's Eq. 26 (binary maps
  weighted by the channel means, ``K = 1``), so it is tested on its own properties.

The variants are compared with pytorch-grad-cam in ``tests/methods/test_cam_variants.py``:

* ``HiResCAM``, ``LayerCAM`` and ``GradCAMElementWise`` are the papers' (or, for the last, its
  own) definitions; they match ours directly. pytorch-grad-cam's ``LayerCAM`` given several
  layers averages their min-max normalised maps; the LayerCAM paper fuses layers by the
  element-wise maximum after a ``tanh`` rescaling of shallow layers, which ``layercam`` offers
  per layer (``gamma=``) and leaves the fusion to the caller.
* ``XGradCAM`` adds ``1e-7`` to the denominator ``sum A^k``; ours divides exactly (the paper)
  and takes ``eps=`` for the peer's convention (the difference is below the tolerance).
* ``EigenCAM`` / ``EigenGradCAM`` centre the channels before the SVD and keep LAPACK's arbitrary
  sign of the singular vector; ``eigencam`` follows the paper (no centring; ``center=True`` for
  the peer's PCA), ``eigengradcam`` the peer (``center=True`` by default), and both fix the sign
  so the map correlates positively with the channel sum (:func:`eigen_projection`). The tests
  compare the signed projections up to that sign.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from xaijax.methods.backprop import guided_backprop
from xaijax.methods.base import interp_matrix  # noqa: F401  (part of this module's API)
from xaijax.methods.base import (Explanation, check_positive_int, minmax, register,
                                 require_model, target_scores, upsample)
from xaijax.methods.gradient import heatmap_maxabs
from xaijax.models.base import Model
from xaijax.sharding import inner_mode, merge_inner, shard_inner, split_inner

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# shared pieces


def _resolve_tap(model: Model, tap: Optional[str], method: str) -> str:
    """Canonical tap name (default ``model.spec.cam_tap``); trace-time checks."""
    require_model(model, method, "taps")
    name = model.spec.cam_tap if tap is None else tap
    if not name:
        raise ValueError(f"method {method!r}: model {model.spec.name!r} names no default CAM "
                         f"layer (spec.cam_tap); pass tap=... (see model.block_taps)")
    return model.resolve(name)


def _check_spatial(shape: Tuple[int, ...], tap: str, method: str) -> None:
    if len(shape) != 4:
        raise ValueError(
            f"method {method!r} needs a spatial feature map (N, h, w, C) at its tap; tap {tap!r} "
            f"has shape {tuple(shape)} — choose a convolutional tap, e.g. model.spec.cam_tap or "
            f"one of model.block_taps")


def _activations(model: Model, x: Array, tap: str, method: str) -> Tuple[Array, Array]:
    """``(logits, A)`` with ``A`` the tap's activation ``(N, h, w, K)``."""
    logits, acts = model.forward(x, capture=[tap])
    _check_spatial(acts[tap].shape, tap, method)
    return logits, acts[tap]


def _activations_and_gradients(model: Model, x: Array, target: Array, tap: str,
                               method: str) -> Tuple[Array, Array, Array]:
    """``(logits, A, dy/dA)``: the tap's activation and the gradient of each image's target
    logit with respect to it (edit ``a + delta``, differentiated at ``delta = 0``)."""
    shape = jax.eval_shape(lambda z: model.forward(z, capture=[tap])[1][tap], x)
    _check_spatial(shape.shape, tap, method)

    def score(delta):
        logits, acts = model.forward(x, capture=[tap], edits={tap: lambda a: a + delta})
        # images are independent (inference mode), so the batch sum gives per-image gradients
        return jnp.sum(target_scores(logits, target)), (logits, acts[tap])

    grads, (logits, acts) = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    return logits, acts, grads


def _combine(acts: Array, weights: Array) -> Array:
    """``sum_k w_k A^k``: ``(N, h, w, K) x (N, K) -> (N, h, w)``."""
    return jnp.einsum("nhwk,nk->nhw", acts, weights, precision=lax.Precision.HIGHEST)


def _finish(low: Array, weights: Array, x: Array, target: Array, method: str, *, relu: bool,
            normalize: bool, **extras) -> Explanation:
    """ReLU (optional), upsample to the input size, normalise (optional), pack."""
    if relu:
        low = jax.nn.relu(low)
    heat = upsample(low, x.shape[1:3])
    if normalize:
        heat = minmax(heat)
    return Explanation(heatmap=heat, attribution=None,
                       extras={"low_res": low, "weights": weights, **extras}, target=target,
                       method=method)


def _check_batch_size(batch_size: Any, method: str) -> int:
    return check_positive_int(batch_size, "batch_size", method,
                              "channels per chunk of extra forward passes")


def _channel_chunks(k: int, batch_size: int) -> Tuple[int, int, int]:
    """``(chunks, size, padded)``: the fewest chunks of at most ``batch_size`` channels covering
    ``k``, all of one size, as even as possible (``k = 32`` at ``batch_size = 64``: one chunk of
    32, not 64 with 32 wasted passes; ``k = 100``: two of 50, not 64 + 36 padding)."""
    chunks = -(-k // batch_size)
    size = -(-k // chunks)
    return chunks, size, chunks * size


# ------------------------------------------------------------------------------------------------
# CAM


def _dense_kernel(model: Model, dense_tap: str) -> Array:
    path, kind = model.layers()[dense_tap]
    if kind != "Dense":
        raise ValueError(f"model {model.spec.name!r}: spec.gap_dense names {dense_tap!r}, a "
                         f"{kind} layer, not Dense")
    p = model.variables["params"]
    for name in path:
        p = p[name]
    return p["kernel"]


@register("cam",
          paper="Zhou et al. 2016, Eq. 2 (M_c = sum_k w_k^c f_k)",
          peer="dense weights x feature maps by hand (torch hooks)",
          static=("tap", "normalize"), needs="taps")
def cam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
        normalize: bool = False) -> Explanation:
    """Class Activation Mapping: the last features weighted by the dense layer's class weights.

    Applies to models that end in global average pooling and one dense layer
    (``model.spec.gap_dense = (features_tap, dense_tap)``): then ``y^c = sum_k w^c_k mean(A^k) +
    b^c`` and the map is ``M^c = ReLU(sum_k w^c_k A^k)``, upsampled bilinearly.

    Args:
      model: a zoo Model whose spec has ``gap_dense`` (e.g. ``small_cnn``, ResNets).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: must be the GAP's input (default); CAM is defined only there.
      normalize: min-max normalise each heatmap to [0, 1].

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)`` and ``weights`` ``(N, K)`` (the
      dense layer's columns for the targets).

    Raises:
      ValueError: the model does not end in GAP + dense (use ``gradcam``, which generalises
        CAM: for such models Grad-CAM's weights are the dense weights divided by ``h * w``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.cam(m, jnp.ones((2, 32, 32, 3)), jnp.array([0, 1])).heatmap.shape
      (2, 32, 32)

    References:
      Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", §2, Eq. 1–2;
      Ayyar et al. 2021 (survey) §4.6 (CAM as Grad-CAM's special case).
    """
    require_model(model, "cam", "taps")
    if model.spec.gap_dense is None:
        raise ValueError(
            f"method 'cam' needs a model that ends in global average pooling + one dense layer "
            f"(model.spec.gap_dense); model {model.spec.name!r} does not — use "
            f"method='gradcam', which generalises CAM to any architecture")
    feat_tap, dense_tap = model.spec.gap_dense
    chosen = _resolve_tap(model, tap if tap is not None else feat_tap, "cam")
    if chosen != feat_tap:
        raise ValueError(f"method 'cam' is defined only at the input of the global average "
                         f"pooling ({feat_tap!r}); got tap={tap!r} — use method='gradcam' for "
                         f"other layers")
    _, acts = _activations(model, x, feat_tap, "cam")
    kernel = _dense_kernel(model, dense_tap)  # (K, classes)
    if kernel.shape[0] != acts.shape[-1]:
        raise ValueError(f"model {model.spec.name!r}: dense layer {dense_tap!r} takes "
                         f"{kernel.shape[0]} features but {feat_tap!r} has {acts.shape[-1]} "
                         f"channels; spec.gap_dense is wrong")
    weights = jnp.take(kernel, target, axis=1).T  # (N, K)
    return _finish(_combine(acts, weights), weights, x, target, "cam", relu=True,
                   normalize=normalize)


# ------------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++


@register("gradcam",
          paper="Selvaraju et al. 2017, Eq. 1-2",
          peer="pytorch-grad-cam GradCAM, Captum LayerGradCam",
          static=("tap", "normalize"), needs="taps")
def gradcam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
            normalize: bool = False) -> Explanation:
    """Grad-CAM: feature maps weighted by their spatially averaged gradients, then ReLU.

    ``alpha_k = (1 / hw) sum_ij dy^c / dA^k_ij`` (survey Eq. 9), ``L = ReLU(sum_k alpha_k A^k)``
    (Eq. 10), upsampled bilinearly to the input size.

    Args:
      model: a zoo Model (any architecture).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``, the last convolutional features;
        any spatial tap or alias, e.g. a block output of a lower layer).
      normalize: min-max normalise each heatmap to [0, 1] (the survey's visualisation step).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` ``(N, K)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.gradcam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3]), tap="relu4")
      >>> ex.heatmap.shape, ex.extras["low_res"].shape
      ((1, 32, 32), (1, 16, 16))

    References:
      Ayyar et al. 2021 (survey) §4.6, Eq. 9–10; Selvaraju et al. 2017, §3, Eq. 1–2.
    """
    t = _resolve_tap(model, tap, "gradcam")
    _, acts, grads = _activations_and_gradients(model, x, target, t, "gradcam")
    weights = jnp.mean(grads, axis=(1, 2))
    return _finish(_combine(acts, weights), weights, x, target, "gradcam", relu=True,
                   normalize=normalize)


@register("gradcam_pp",
          paper="Chattopadhay et al. 2018, Eq. 19 (closed-form alphas)",
          peer="pytorch-grad-cam GradCAMPlusPlus",
          static=("tap", "normalize"), needs="taps")
def gradcam_pp(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
               normalize: bool = False, eps: float = 1e-6) -> Explanation:
    """Grad-CAM++: pixel-wise weighted positive gradients (second and third order terms).

    With the exponential class score ``S = exp(y^c)``, the higher derivatives are powers of the
    first one (``d^n S / dA^n = exp(y^c) g^n``, ``g = dy^c / dA``), which gives the closed form
    of Grad-CAM++ Eq. 19:

    ``a^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)``, ``w_k = sum_ij a^k_ij ReLU(g_ij)``,
    ``L = ReLU(sum_k w_k A^k)``.

    Deviations (shared with pytorch-grad-cam, so the parity is exact): the positive factor
    ``exp(y^c)`` that multiplies every weight of an image is dropped (it rescales the map, it
    does not change its shape); ``eps`` is added to the denominator and ``a = 0`` where ``g = 0``
    (the paper divides exactly; ``eps=0.0`` gives that, with ``a = 0`` where the denominator
    vanishes).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      eps: added to the denominator of ``a`` (traced).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` ``(N, K)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.gradcam_pp(m, jnp.ones((1, 32, 32, 3)), jnp.array([3])).heatmap.shape
      (1, 32, 32)

    References:
      Chattopadhay et al. 2018, "Grad-CAM++", §3.1–3.2, Eq. 10, 17–19; SISE (Sattarzadeh et al.
      2021), related work.
    """
    t = _resolve_tap(model, tap, "gradcam_pp")
    _, acts, g = _activations_and_gradients(model, x, target, t, "gradcam_pp")
    g2 = g * g
    g3 = g2 * g
    total = jnp.sum(acts, axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + total * g3 + eps
    alpha = jnp.where((g != 0) & (denom != 0), g2 / jnp.where(denom != 0, denom, 1.0), 0.0)
    weights = jnp.sum(alpha * jax.nn.relu(g), axis=(1, 2))
    return _finish(_combine(acts, weights), weights, x, target, "gradcam_pp", relu=True,
                   normalize=normalize)


@register("guided_gradcam",
          paper="Selvaraju et al. 2017, §3.1 (Grad-CAM x guided backprop)",
          peer="Captum GuidedGradCam",
          static=("tap", "normalize"), needs="rules")
def guided_gradcam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
                   normalize: bool = False) -> Explanation:
    """Guided Grad-CAM: guided backpropagation multiplied by the upsampled Grad-CAM map.

    ``attribution = GB(x) * up(ReLU(sum_k alpha_k A^k))`` per colour channel (survey §4.6.1),
    with :func:`xaijax.methods.backprop.guided_backprop` for ``GB`` and :func:`gradcam` for the
    map; ``heatmap = max_c |attribution|`` (the reduction the guided-backprop heatmap uses).

    Args:
      model: a zoo Model (guided backprop needs its ReLU layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: Grad-CAM's layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1] (the attribution is left as is).

    Returns:
      attribution ``(N, H, W, C)``; heatmap ``(N, H, W)``; extras ``low_res``, ``weights`` (of
      Grad-CAM), ``gradcam`` (the upsampled Grad-CAM map ``(N, H, W)``) and
      ``guided_backprop`` (``(N, H, W, C)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.guided_gradcam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3])).attribution.shape
      (1, 32, 32, 3)

    References:
      Ayyar et al. 2021 (survey) §4.6.1; Selvaraju et al. 2017, §3.1 ("Guided Grad-CAM").
    """
    gc = gradcam(model, x, target, tap=tap)
    gb = guided_backprop(model, x, target).attribution
    attr = gb * gc.heatmap[..., None]
    heat = heatmap_maxabs(attr)
    if normalize:
        heat = minmax(heat)
    return Explanation(heatmap=heat, attribution=attr,
                       extras={**gc.extras, "gradcam": gc.heatmap, "guided_backprop": gb},
                       target=target, method="guided_gradcam")


# ------------------------------------------------------------------------------------------------
# Score-CAM


@register("scorecam",
          paper="Wang et al. 2020, Eq. 6-8 (channel-wise increase of confidence)",
          peer="pytorch-grad-cam ScoreCAM",
          static=("tap", "normalize", "batch_size", "softmax", "align_corners"),
          needs="taps")
def scorecam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
             normalize: bool = False, batch_size: int = 32, softmax: str = "classes",
             align_corners: bool = False) -> Explanation:
    """Score-CAM: each channel is weighted by the model's score on the input masked by it.

    Each feature map ``A^k`` is upsampled to the input size and min-max normalised to a mask
    ``H^k = (up(A^k) - min) / (max - min + 1e-8)``; the channel's weight is the target score of
    ``x * H^k`` (Score-CAM Eq. 5–8); ``L = ReLU(sum_k w_k A^k)``.

    ``softmax="classes"`` (default, the paper and its official code): ``w_k`` is the target's
    softmax probability ``softmax(f(x * H^k))_c``; channels whose map is constant get
    ``w_k = 0`` (the official code skips them). ``softmax="channels"`` (pytorch-grad-cam): the
    target logits of all masked inputs are soft-maxed over the channels.

    Deviations: the baseline term ``f(X_b)`` of the "increase of confidence" (Eq. 5) is not
    subtracted, as in the official code (the weights would all shift by the same constant); the
    ReLU is applied before upsampling (the official code applies it after; with
    ``align_corners=False`` bilinear weights are non-negative, so both give the same map
    wherever the low-resolution map does not change sign between neighbouring cells).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      batch_size: channels per chunk of masked forward passes (static; memory vs speed).
      softmax: ``"classes"`` or ``"channels"`` (static; see above).
      align_corners: bilinear convention of the mask upsampling (static); pytorch-grad-cam uses
        ``True``, the official code ``False``.

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` ``(N, K)``,
      ``scores`` ``(N, K)`` (the target logit of each masked input).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.scorecam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3]), batch_size=16)
      >>> ex.extras["weights"].shape
      (1, 64)

    References:
      Wang et al. 2020, "Score-CAM", §3, Eq. 5–8 and Algorithm 1; SISE (Sattarzadeh et al.
      2021), related work.
    """
    if softmax not in ("classes", "channels"):
        raise ValueError(f"scorecam: softmax must be 'classes' or 'channels'; got {softmax!r}")
    bs = _check_batch_size(batch_size, "scorecam")
    t = _resolve_tap(model, tap, "scorecam")
    _, acts = _activations(model, x, t, "scorecam")
    n, h, w, k = acts.shape
    big_h, big_w = x.shape[1:3]
    chunks, bs, padded = _channel_chunks(k, bs)
    apply = model.apply_fn

    maps = jnp.moveaxis(acts, -1, 0)  # (K, N, h, w)
    maps = jnp.pad(maps, ((0, padded - k), (0, 0), (0, 0), (0, 0))).reshape(chunks, bs, n, h, w)
    t = merge_inner(jnp.broadcast_to(target, (bs, n)))

    def chunk(m):  # (bs, N, h, w) -> (bs, N) target logits, (bs, N) target probabilities
        # merged as the model batch is (merge_inner), so a batch split over devices upsamples
        # each image's maps on its own device
        up = upsample(merge_inner(m), (big_h, big_w), align_corners)
        lo = jnp.min(up, axis=(1, 2), keepdims=True)
        hi = jnp.max(up, axis=(1, 2), keepdims=True)
        mask = split_inner((up - lo) / (hi - lo + 1e-8), bs)
        # the masked images as one model batch; split over the devices in inner mode
        logits = apply(merge_inner(x[None] * mask[..., None]))
        logit = jnp.take_along_axis(logits, t[:, None], axis=1)[:, 0]
        prob = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), t[:, None], axis=1)[:, 0]
        return split_inner(logit, bs), split_inner(prob, bs)

    logit, prob = (a.reshape(padded, n)[:k].T for a in lax.map(chunk, maps))
    if softmax == "channels":
        weights = jax.nn.softmax(logit, axis=-1)
    else:
        constant = jnp.max(acts, axis=(1, 2)) == jnp.min(acts, axis=(1, 2))
        weights = jnp.where(constant, 0.0, prob)
    return _finish(_combine(acts, weights), weights, x, target, "scorecam", relu=True,
                   normalize=normalize, scores=logit)


# ------------------------------------------------------------------------------------------------
# Ablation-CAM


@register("ablationcam",
          paper="Desai & Ramaswamy 2020, Eq. 2-3 (slope of the score on ablating a channel)",
          peer="pytorch-grad-cam AblationCAM",
          static=("tap", "normalize", "batch_size"), needs="taps")
def ablationcam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
                normalize: bool = False, batch_size: int = 32) -> Explanation:
    """Ablation-CAM: each channel is weighted by the relative drop of the class score when the
    channel is set to zero.

    ``w_k = (y^c - y^c_k) / y^c`` with ``y^c_k`` the target logit when ``A^k = 0`` (Ablation-CAM
    Eq. 3), ``L = ReLU(sum_k w_k A^k)``.

    Only the network after the tap is re-run: the tap's activation is replaced through an edit
    that ignores what the head computed, the ablation masks are ``vmap``-ed with the image
    fixed, so XLA computes the unbatched head once per image (and drops it where nothing after
    the tap reads it; ``tests/methods/test_cam.py`` checks the compiled program).

    Note: pytorch-grad-cam zeroes the channel too when the layer's minimum activation is 0 (a
    ReLU output) but, for taps with negative values, sets it to ``min - 1e7``; ours always
    follows the paper (zero).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      batch_size: ablated channels per chunk of tail forward passes (static).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` ``(N, K)``,
      ``scores`` ``(N, K)`` (the target logit with each channel ablated).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.ablationcam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3])).heatmap.shape
      (1, 32, 32)

    References:
      Ramaswamy (Desai) et al. 2020, "Ablation-CAM", §3, Eq. 3–4; SISE (Sattarzadeh et al.
      2021), related work.
    """
    bs = _check_batch_size(batch_size, "ablationcam")
    t = _resolve_tap(model, tap, "ablationcam")
    logits, acts = _activations(model, x, t, "ablationcam")
    k = acts.shape[-1]
    chunks, bs, padded = _channel_chunks(k, bs)
    # padded indices >= k ablate nothing; their scores are dropped
    order = jnp.arange(padded, dtype=jnp.int32).reshape(chunks, bs)

    def ablated_score(x1, a1, t1):  # one image with one channel of its activation ablated
        out, _ = model.forward(x1[None], edits={t: lambda _a: a1[None]})
        return out[0, t1]

    # a vmap over the ablated channels around one over the images puts the channels outermost
    # in the tail's batch, which inner mode splits over the devices (xaijax.sharding); the
    # other nesting keeps a batch sharded over its images split
    per_image = jax.vmap(ablated_score)
    if inner_mode():
        tail = jax.vmap(per_image, in_axes=(None, 0, None))
    else:
        tail = jax.vmap(jax.vmap(ablated_score, in_axes=(None, 0, None)), in_axes=(0, 1, 0),
                        out_axes=1)

    def chunk(idx):  # (bs,) channel indices -> (bs, N) target logits
        keep = (jnp.arange(k) != idx[:, None]).astype(acts.dtype)  # (bs, K)
        ablated = shard_inner(acts[None] * keep[:, None, None, None, :])
        return shard_inner(tail(x, ablated, target))

    scores = lax.map(chunk, order).reshape(padded, -1)[:k].T
    y = target_scores(logits, target)[:, None]
    weights = (y - scores) / y
    return _finish(_combine(acts, weights), weights, x, target, "ablationcam", relu=True,
                   normalize=normalize, scores=scores)


# ------------------------------------------------------------------------------------------------
# FEM


def fem_map(acts: Array, k_sigma: Array | float = 1.0) -> Tuple[Array, Array]:
    """FEM's importance map at the tap's resolution (survey Eq. 26).

    Args:
      acts: ``(N, h, w, K)`` feature maps.
      k_sigma: the ``K`` of the K-sigma rule.

    Returns:
      ``(R, mu)``: ``R = sum_k mu_k B_k`` ``(N, h, w)`` with ``B_k = [a >= mu_k + K sigma_k]``
      and the channel means ``mu`` ``(N, K)`` (population standard deviation, ``ddof = 0``).
    """
    mu = jnp.mean(acts, axis=(1, 2))
    sd = jnp.std(acts, axis=(1, 2))
    binary = (acts >= (mu + k_sigma * sd)[:, None, None, :]).astype(acts.dtype)
    return _combine(binary, mu), mu


@register("fem",
          paper="Fuad et al. 2020; survey §4.6, Eq. 26 (K-sigma binary maps weighted by "
                "channel means)",
          peer="",
          static=("tap", "normalize"), needs="taps")
def fem(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
        normalize: bool = True, k: float = 1.0) -> Explanation:
    """Feature-based Explanation Method: the rare, strong features of the last conv layer.

    Each feature map is thresholded with the K-sigma rule, ``B_k = [A^k >= mu_k + K sigma_k]``
    (survey Eq. 26), weighted by its mean ``w_k = mu_k``; ``R = sum_k mu_k B_k`` is upsampled and
    normalised to [0, 1]. FEM looks at the features only: the target class does not enter (it is
    accepted and returned for a uniform API).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image (unused by the method).
      tap: the layer (static; default ``model.spec.cam_tap``; the paper uses a post-ReLU layer).
      normalize: min-max normalise each heatmap to [0, 1] (default ``True``: part of FEM).
      k: the ``K`` of the K-sigma rule (traced; the paper uses 1).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` (``R`` before normalisation, ``(N, h, w)``) and
      ``weights`` (the channel means, ``(N, K)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> h = xj.methods.fem(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap
      >>> bool(h.min() >= 0.0) and bool(h.max() <= 1.0)
      True

    References:
      Ayyar et al. 2021 (survey) §5.3, Eq. 26; Fuad et al. 2020, "Features understanding in 3D
      CNNs for actions recognition in video" (IPTA).
    """
    t = _resolve_tap(model, tap, "fem")
    _, acts = _activations(model, x, t, "fem")
    low, mu = fem_map(acts, k)
    return _finish(low, mu, x, target, "fem", relu=False, normalize=normalize)


# ------------------------------------------------------------------------------------------------
# option checks of the variants below (validate=: run by xj.explain / bind on concrete values)


def _check_real(value: Any, name: str, method: str, *, positive: bool) -> float:
    """``value`` as a finite float (> 0 or >= 0), or a ValueError naming method and option."""
    what = "a finite float > 0" if positive else "a finite float >= 0"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"method {method!r}: {name} must be {what}; got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"method {method!r}: {name} must be {what}; got {value!r}")
    return v


def _check_bool(value: Any, name: str, method: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"method {method!r}: {name} must be True or False; got {value!r}")
    return value


def _validate_xgradcam(model, x, opts) -> None:
    if "eps" in opts:
        _check_real(opts["eps"], "eps", "xgradcam", positive=False)


def _validate_layercam(model, x, opts) -> None:
    if opts.get("gamma") is not None:
        _check_real(opts["gamma"], "gamma", "layercam", positive=True)


def _validate_center(method: str):
    def validate(model, x, opts) -> None:
        if "center" in opts:
            _check_bool(opts["center"], "center", method)

    return validate


# ------------------------------------------------------------------------------------------------
# HiResCAM, Grad-CAM element-wise, LayerCAM: one weight per channel *and position*


def _combine_pixelwise(acts: Array, weights: Array) -> Array:
    """``sum_k w^k_ij A^k_ij``: ``(N, h, w, K) x (N, h, w, K) -> (N, h, w)``."""
    return jnp.sum(weights * acts, axis=-1)


@register("hirescam", static=("tap", "normalize"), needs="taps",
          paper="Draelos & Carin 2020, HiResCAM map sum_k dy^c/dA^k * A^k (element-wise)",
          peer="pytorch-grad-cam HiResCAM")
def hirescam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
             normalize: bool = False) -> Explanation:
    """HiResCAM: each feature map multiplied element-wise by its gradient, summed over channels.

    ``L = ReLU(sum_k g^k ⊙ A^k)`` with ``g^k = dy^c / dA^k`` (the HiResCAM definition). Grad-CAM
    averages ``g^k`` over the positions first; HiResCAM keeps it per position, so it shows only
    the locations the score actually depends on. When the gradient is spatially constant (a
    global-average-pooling + dense head, the CAM architecture) the two coincide, and both are
    CAM divided by ``h * w`` (the paper's "HiResCAM generalises CAM"). Before the ReLU the map
    sums to ``sum g ⊙ A`` (gradient x activation at the tap).

    The ReLU is this module's convention, shared with pytorch-grad-cam (``get_cam_image`` is the
    signed sum; its base class ReLUs it).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)`` and ``weights`` (the per-position
      weights ``g``, ``(N, h, w, K)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.hirescam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3]), tap="relu4")
      >>> ex.heatmap.shape, ex.extras["weights"].shape
      ((1, 32, 32), (1, 16, 16, 32))

    References:
      Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of
      convolutional neural networks" (arXiv:2011.08891), the HiResCAM definition and its
      CAM-equivalence proof.
    """
    t = _resolve_tap(model, tap, "hirescam")
    _, acts, g = _activations_and_gradients(model, x, target, t, "hirescam")
    return _finish(_combine_pixelwise(acts, g), g, x, target, "hirescam", relu=True,
                   normalize=normalize)


@register("gradcam_elementwise", static=("tap", "normalize"), needs="taps",
          paper="none: pytorch-grad-cam's variant of Grad-CAM (Selvaraju et al. 2017), "
                "sum_k ReLU(dy^c/dA^k * A^k)",
          peer="pytorch-grad-cam GradCAMElementWise")
def gradcam_elementwise(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
                        normalize: bool = False) -> Explanation:
    """Grad-CAM element-wise: the positive parts of the gradient x activation terms, summed.

    ``L = sum_k ReLU(g^k ⊙ A^k)`` with ``g^k = dy^c / dA^k``: HiResCAM with the ReLU moved
    inside the channel sum, so channels that speak against the class at a position no longer
    cancel those that speak for it (pointwise ``L >= HiResCAM``). This is pytorch-grad-cam's
    ``GradCAMElementWise``; no paper defines it, the peer is the reference.

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` (the gradients ``g``,
      ``(N, h, w, K)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> h = xj.methods.gradcam_elementwise(m, jnp.ones((1, 32, 32, 3)), jnp.array([3])).heatmap
      >>> h.shape, bool(h.min() >= 0)
      ((1, 32, 32), True)

    References:
      pytorch-grad-cam (Gildenblat et al.), ``GradCAMElementWise``; Selvaraju et al. 2017,
      "Grad-CAM", §3, Eq. 1–2 (the averaged form).
    """
    t = _resolve_tap(model, tap, "gradcam_elementwise")
    _, acts, g = _activations_and_gradients(model, x, target, t, "gradcam_elementwise")
    low = jnp.sum(jax.nn.relu(g * acts), axis=-1)
    return _finish(low, g, x, target, "gradcam_elementwise", relu=True, normalize=normalize)


@register("layercam", static=("tap", "normalize"), needs="taps", validate=_validate_layercam,
          paper="Jiang et al. 2021, LayerCAM: ReLU(sum_k ReLU(dy^c/dA^k) * A^k); "
                "tanh(gamma M / max M) for shallow layers",
          peer="pytorch-grad-cam LayerCAM")
def layercam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
             normalize: bool = False, gamma: Optional[float] = None) -> Explanation:
    """LayerCAM: feature maps weighted per position by their positive gradients.

    ``w^k_ij = ReLU(g^k_ij)`` with ``g^k = dy^c / dA^k``, ``L = ReLU(sum_k w^k_ij A^k_ij)``
    (LayerCAM's position-wise weights and map). Unlike Grad-CAM it gives reliable maps at
    shallow layers too: pass any block output as ``tap``.

    For shallow layers the paper rescales the map before fusing it with deeper ones,
    ``M <- tanh(gamma M / max M)`` (``gamma = 2``); ``gamma=`` applies that scaling to
    ``low_res`` (``None``, the default: no scaling, as pytorch-grad-cam). Fusing several layers
    is left to the caller (the paper takes the element-wise maximum of the layers' upsampled
    maps; pytorch-grad-cam, given several layers, min-max normalises and averages them).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      gamma: the shallow-layer scale factor (traced float > 0), or ``None``.

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)`` (after the tanh scaling when
      ``gamma`` is given), ``weights`` (``ReLU(g)``, ``(N, h, w, K)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.layercam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3]), tap="relu2",
      ...                          gamma=2.0)
      >>> ex.extras["low_res"].shape, bool(ex.extras["low_res"].max() <= 1.0)
      ((1, 32, 32), True)

    References:
      Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
      Localization" (IEEE TIP 30), §III: position-wise weights ``ReLU(g)``, the map, and the
      ``tanh`` scaling of shallow layers' maps.
    """
    t = _resolve_tap(model, tap, "layercam")
    _, acts, g = _activations_and_gradients(model, x, target, t, "layercam")
    w = jax.nn.relu(g)
    low = jax.nn.relu(_combine_pixelwise(acts, w))
    if gamma is not None:
        top = jnp.max(low, axis=(1, 2), keepdims=True)
        low = jnp.tanh(gamma * low / jnp.where(top > 0, top, 1.0))
    return _finish(low, w, x, target, "layercam", relu=True, normalize=normalize)


# ------------------------------------------------------------------------------------------------
# XGrad-CAM


@register("xgradcam", static=("tap", "normalize"), needs="taps", validate=_validate_xgradcam,
          paper="Fu et al. 2020, XGrad-CAM weights "
                "alpha_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy^c/dA^k_ij",
          peer="pytorch-grad-cam XGradCAM")
def xgradcam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
             normalize: bool = False, eps: float = 0.0) -> Explanation:
    """XGrad-CAM: gradients averaged with the feature map's own values as weights.

    ``alpha_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij`` with ``g^k = dy^c / dA^k`` (the weights
    that best satisfy the paper's Sensitivity and Conservation axioms),
    ``L = ReLU(sum_k alpha_k A^k)``. Before the ReLU the map sums to ``sum g ⊙ A``, which is
    ``y^c`` minus the head's bias for a head that is linear in the tap (Conservation). With a
    spatially constant gradient (GAP + dense head) XGrad-CAM equals Grad-CAM.

    The paper divides exactly (its features are post-ReLU, so ``sum_ab A^k_ab = 0`` only for a
    channel that is zero everywhere; such channels get ``alpha_k = 0``). pytorch-grad-cam adds
    ``1e-7`` to the denominator: ``eps=1e-7`` reproduces it. On taps with negative values the
    denominator can approach zero; prefer post-ReLU taps.

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      eps: added to ``sum_ab A^k_ab`` (traced float >= 0; default 0, the paper).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` ``(N, K)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.xgradcam(m, jnp.ones((2, 32, 32, 3)), jnp.array([0, 1]))
      >>> ex.extras["weights"].shape
      (2, 64)

    References:
      Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of
      CNNs" (BMVC), §3: the Sensitivity and Conservation axioms and the closed-form weights.
    """
    t = _resolve_tap(model, tap, "xgradcam")
    _, acts, g = _activations_and_gradients(model, x, target, t, "xgradcam")
    denom = jnp.sum(acts, axis=(1, 2)) + eps
    num = jnp.sum(g * acts, axis=(1, 2))
    weights = jnp.where(denom != 0, num / jnp.where(denom != 0, denom, 1.0), 0.0)
    return _finish(_combine(acts, weights), weights, x, target, "xgradcam", relu=True,
                   normalize=normalize)


# ------------------------------------------------------------------------------------------------
# Eigen-CAM, EigenGrad-CAM


def eigen_projection(maps: Array, center: bool = False) -> Tuple[Array, Array]:
    """Each position's channel vector projected on the first right singular vector.

    With ``O`` the ``(h w, K)`` matrix of an image's maps (one row per position), ``O = U S V^T``,
    the projection is ``O V_1 = s_1 U_1`` (Eigen-CAM's map). The sign of a singular vector is
    arbitrary; it is fixed here so that ``sum_k V_1k >= 0``, i.e. so that the projection is
    positively correlated with the channel sum ``sum_k O_:k`` (``p^T O 1 = s_1^2 V_1^T 1``).
    For non-negative maps without centring that makes the projection non-negative.

    Args:
      maps: ``(N, h, w, K)``.
      center: subtract each channel's spatial mean first (principal component analysis, as
        pytorch-grad-cam does); static.

    Returns:
      ``(P, v)``: the projection ``(N, h, w)`` and ``V_1`` ``(N, K)`` (unit norm).
    """
    n, h, w, k = maps.shape
    flat = maps.reshape(n, h * w, k)
    flat = flat.astype(jnp.promote_types(flat.dtype, jnp.float32))  # the SVD in float32 at least
    if center:
        flat = flat - jnp.mean(flat, axis=1, keepdims=True)
    # one LAPACK call per image: a batched gesdd hands its batch to the CPU client's thread
    # pool and waits, and with the batch sharded over forced host devices every pool thread can
    # be such a waiter (eigengradcam, 16 images on 8 devices, hung in 7 of 10 runs)
    v = jax.lax.map(lambda a: jnp.linalg.svd(a, full_matrices=False)[2][0], flat)
    v = jnp.where(jnp.sum(v, axis=-1, keepdims=True) < 0, -v, v)
    proj = jnp.einsum("npk,nk->np", flat, v, precision=lax.Precision.HIGHEST)
    return proj.reshape(n, h, w), v


@register("eigencam", static=("tap", "normalize", "center"), needs="taps",
          validate=_validate_center("eigencam"),
          paper="Muhammad & Yeasin 2020, Eigen-CAM map O V_1 (first right singular vector)",
          peer="pytorch-grad-cam EigenCAM")
def eigencam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
             normalize: bool = False, center: bool = False) -> Explanation:
    """Eigen-CAM: the feature maps projected on their first principal direction.

    With ``O`` the ``(h w, K)`` matrix of the tap's activations and ``O = U S V^T`` its SVD, the
    map is ``L = ReLU(O V_1)`` (Eigen-CAM's projection on the first right singular vector), a
    CAM whose channel weights are ``V_1``. No gradient and no class score enter: the map is the
    same for every target (accepted and returned for a uniform API).

    Conventions (see :func:`eigen_projection`): the SVD's sign is fixed so that the map
    correlates positively with the sum of the feature maps (the paper leaves it open;
    pytorch-grad-cam keeps whatever sign LAPACK returns, so its map can come out inverted and
    then ReLU'd away). ``center=False`` (default) is the paper's ``O V_1``;
    ``center=True`` subtracts each channel's spatial mean first, as pytorch-grad-cam does (PCA
    proper; the map then has zero mean, so about half of it is cut by the ReLU).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image (unused by the method).
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      center: centre the channels before the SVD (static; see above).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` (``V_1``, ``(N, K)``)
      and ``projection`` (the signed map before the ReLU, ``(N, h, w)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.linspace(-1, 1, 2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
      >>> a = xj.methods.eigencam(m, x, jnp.array([0, 1])).heatmap
      >>> b = xj.methods.eigencam(m, x, jnp.array([5, 9])).heatmap
      >>> bool(jnp.all(a == b))
      True

    References:
      Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components"
      (IJCNN; arXiv:2008.00299), §III: the SVD of the feature matrix and the projection on its
      first eigenvector.
    """
    _check_bool(center, "center", "eigencam")
    t = _resolve_tap(model, tap, "eigencam")
    _, acts = _activations(model, x, t, "eigencam")
    proj, v = eigen_projection(acts, center)
    return _finish(proj, v, x, target, "eigencam", relu=True, normalize=normalize,
                   projection=proj)


@register("eigengradcam", static=("tap", "normalize", "center"), needs="taps",
          validate=_validate_center("eigengradcam"),
          paper="none: pytorch-grad-cam's variant of Eigen-CAM (Muhammad & Yeasin 2020) on "
                "dy^c/dA * A",
          peer="pytorch-grad-cam EigenGradCAM")
def eigengradcam(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
                 normalize: bool = False, center: bool = True) -> Explanation:
    """EigenGrad-CAM: the first principal component of the gradient x activation maps.

    Eigen-CAM's projection (:func:`eigen_projection`) applied to ``g ⊙ A`` instead of ``A``
    (``g = dy^c / dA``), which makes it class specific: ``L = ReLU((g ⊙ A) V_1)``. This is
    pytorch-grad-cam's ``EigenGradCAM``; no paper defines it, so the default follows the peer
    (``center=True``: channels centred before the SVD). The sign convention is ours (the map
    correlates positively with ``sum_k g^k ⊙ A^k``, HiResCAM's signed map); the peer keeps
    LAPACK's arbitrary sign.

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static; default ``model.spec.cam_tap``).
      normalize: min-max normalise each heatmap to [0, 1].
      center: centre the channels of ``g ⊙ A`` before the SVD (static; default ``True``, the
        peer's definition).

    Returns:
      heatmap ``(N, H, W)``; extras ``low_res`` ``(N, h, w)``, ``weights`` (``V_1``, the weights
      of the channels of ``g ⊙ A``, ``(N, K)``) and ``projection`` (the signed map).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.eigengradcam(m, jnp.ones((1, 32, 32, 3)), jnp.array([3])).heatmap.shape
      (1, 32, 32)

    References:
      pytorch-grad-cam (Gildenblat et al.), ``EigenGradCAM``; Muhammad & Yeasin 2020,
      "Eigen-CAM" (arXiv:2008.00299), §III.
    """
    _check_bool(center, "center", "eigengradcam")
    t = _resolve_tap(model, tap, "eigengradcam")
    _, acts, g = _activations_and_gradients(model, x, target, t, "eigengradcam")
    proj, v = eigen_projection(g * acts, center)
    return _finish(proj, v, x, target, "eigengradcam", relu=True, normalize=normalize,
                   projection=proj)
