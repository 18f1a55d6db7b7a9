"""Model-based (faithfulness) metrics: how the model's score changes when the pixels a heatmap
ranks highest are removed, inserted or kept.

* :func:`deletion`, :func:`insertion` — the causal curves and their AUC (Petsiuk et al. 2018;
  the deletion metric of Wagner et al. 2019, §5.1, Table 2).
* :func:`drop_increase` — Drop % and Increase % of the image times the top-15 % binary mask
  (Sattarzadeh et al. 2021, "Quantitative Results").
* :func:`average_drop` — Average Drop % and Increase in Confidence of the image times the map
  as a soft mask (Chattopadhay et al. 2018).

Every function takes a model (an xaijax Model, or any JAX callable ``f(x) -> logits``), the
images ``x`` ``(N, H, W, C)`` float32 in the model's normalised space, heatmaps ``(N, H, W)``
and targets (an int, ints ``(N,)``, ``"top1"`` or a class name), runs as one compiled program
per shape (new values never recompile; a plain function is a static argument, so pass the same
function object each time), and returns per-image values: the caller averages.

"Removed" means replaced by the substrate; ``"zeros"`` is 0 in the model's normalised space,
i.e. the data-set mean colour (what multiplying a normalised image by a mask produces, as the
papers' code does). Rankings are by decreasing heatmap value; equal values keep their
row-major order (a stable sort), so the pixel sets are binary and reproducible.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import (Target, check_choice, check_positive_int, class_scores,
                                 logits_fn, target_array)
from xaijax.methods.masks import gaussian_blur
from xaijax.metrics.localisation import check_top, check_values, top_count
from xaijax.models.base import Model, check_input

Array = jax.Array

SUBSTRATES = ("zeros", "blur")
SCORES = ("logit", "softmax", "sigmoid")
CONFIDENCES = ("softmax", "sigmoid")


class CausalCurve(NamedTuple):
    """The result of :func:`deletion` / :func:`insertion`.

    Attributes:
      auc: ``(N,)`` area under each curve (trapezoid over the fraction of pixels changed).
      curve: ``(N, steps + 1)`` the target's score after each step; column 0 is the start
        (the image for deletion, the substrate for insertion), the last column the end.
      fraction: ``(steps + 1,)`` the fraction of pixels changed at each column, 0 to 1.
    """

    auc: Array
    curve: Array
    fraction: Array


class DropIncrease(NamedTuple):
    """The result of :func:`drop_increase` / :func:`average_drop`, per image, in %.

    Attributes:
      drop: ``(N,)`` ``100 · max(0, Y − O) / Y``.
      increase: ``(N,)`` 100 where ``O > Y``, else 0.
      score: ``(N,)`` ``Y``, the target's confidence on the image.
      masked_score: ``(N,)`` ``O``, its confidence on the masked image.
    """

    drop: Array
    increase: Array
    score: Array
    masked_score: Array


# ------------------------------------------------------------------------------------------------
# checks and the two compiled entry points (a zoo Model is a pytree argument, a plain function a
# static one)


def _check_common(model: Any, x: Any, heatmap: Any, what: str) -> None:
    logits_fn(model)
    check_input(model if isinstance(model, Model) else None, x)
    shape = getattr(heatmap, "shape", None)
    if shape is None:
        raise TypeError(f"{what}: heatmap must be an array of shape (N, H, W); got "
                        f"{type(heatmap).__name__}")
    want = tuple(x.shape[:3])
    if tuple(shape) != want:
        hint = ""
        if tuple(shape) == tuple(x.shape):
            hint = " — a per-channel map? pass Explanation.heatmap, or a.sum(-1)"
        elif len(shape) == 3 and shape[0] == want[0]:
            hint = (f" — resize it to the input first: xaijax.methods.base.upsample(heatmap, "
                    f"{want[1:]})")
        elif len(shape) == 2:
            hint = " — add a batch axis with heatmap[None]"
        raise ValueError(f"{what}: heatmap must be (N, H, W) = {want} to match x of shape "
                         f"{tuple(x.shape)}; got {tuple(shape)}{hint}")
    check_values(x, f"{what}: x")
    check_values(heatmap, f"{what}: heatmap")


def _targets(model: Any, x: Any, target: Target):
    t = target_array(model, x, target)
    if t is None:
        return np.zeros((x.shape[0],), np.int32), True
    return t, False


def _compiled(body, static: tuple):
    """``call(model, *args, **static)`` running ``body(f, *args, **static)`` under ``jit``: a
    Model is traced (its variables are leaves), a plain callable is a static argument."""
    on_tree = jax.jit(lambda model, *a, **k: body(logits_fn(model), *a, **k),
                      static_argnames=static)
    on_fn = jax.jit(lambda f, *a, **k: body(f, *a, **k), static_argnums=(0,),
                    static_argnames=static)

    def call(model, *args, **kwargs):
        return (on_tree if isinstance(model, Model) else on_fn)(model, *args, **kwargs)

    return call


def _resolve(f, x, t, top1):
    return jnp.argmax(f(x), axis=-1).astype(jnp.int32) if top1 else t


def _rank(h: Array) -> Array:
    """``(N, H·W)`` int32 position of each pixel in the decreasing order of ``h`` ``(N, H, W)``,
    ties in row-major order (stable sort; −0 and +0 are equal)."""
    n = h.shape[0]
    v = h.reshape(n, -1).astype(jnp.float32)
    v = jnp.where(v == 0, 0.0, v)  # the sort's total order puts -0 before +0
    order = jnp.argsort(-v, axis=1, stable=True)
    p = v.shape[1]
    pos = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (n, p))
    return jnp.zeros((n, p), jnp.int32).at[jnp.arange(n)[:, None], order].set(pos)


# ------------------------------------------------------------------------------------------------
# deletion and insertion


def _causal_body(f, x, heatmap, target, sub, *, top1, mode, substrate, step, batch_size, score,
                 blur_sigma):
    x = x.astype(jnp.float32)
    n, h, w, c = x.shape
    p = h * w
    steps = -(-p // step)
    if substrate == "blur":
        base = gaussian_blur(x, blur_sigma, "constant")
    elif substrate == "zeros":
        base = jnp.zeros_like(x)
    else:
        base = jnp.broadcast_to(sub.astype(jnp.float32), x.shape)
    start, finish = (x, base) if mode == "deletion" else (base, x)
    t = _resolve(f, x, target, top1)
    rank = _rank(heatmap)
    counts = jnp.minimum(jnp.arange(steps + 1, dtype=jnp.int32) * step, p)

    total = n * (steps + 1)
    bs = min(batch_size, total)
    chunks = -(-total // bs)

    def chunk(ci):
        j = ci * bs + jnp.arange(bs, dtype=jnp.int32)
        img = jnp.minimum(j // (steps + 1), n - 1)  # the padding repeats the last image
        changed = rank[img] < counts[j % (steps + 1)][:, None]
        xs = jnp.where(changed.reshape(bs, h, w, 1), finish[img], start[img])
        return class_scores(f(xs), t[img], score)

    scores = jax.lax.map(chunk, jnp.arange(chunks, dtype=jnp.int32))
    curve = scores.reshape(-1)[:total].reshape(n, steps + 1)
    frac = counts.astype(jnp.float32) / p
    dx = jnp.diff(frac)
    auc = jnp.sum(0.5 * (curve[:, 1:] + curve[:, :-1]) * dx, axis=1)
    return CausalCurve(auc, curve, frac)


_causal = _compiled(_causal_body, ("top1", "mode", "substrate", "step", "batch_size", "score",
                                   "blur_sigma"))


def _causal_metric(mode, model, x, heatmap, target, step, substrate, score, batch_size,
                   blur_sigma):
    _check_common(model, x, heatmap, mode)
    step = x.shape[2] if step is None else check_positive_int(step, "step", mode,
                                                              "pixels changed per step")
    batch_size = check_positive_int(batch_size, "batch_size", mode,
                                    "perturbed images per model call")
    check_choice(score, SCORES, "score", mode)
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or \
            not blur_sigma > 0:
        raise ValueError(f"{mode}: blur_sigma must be a positive number of pixels; got "
                         f"{blur_sigma!r}")
    sub = None
    if isinstance(substrate, str):
        check_choice(substrate, SUBSTRATES, "substrate", mode)
        kind = substrate
    else:
        if not hasattr(substrate, "shape"):
            raise TypeError(f"{mode}: substrate must be 'zeros', 'blur' or an array "
                            f"broadcastable to x {tuple(x.shape)}; got {type(substrate).__name__}")
        try:
            np.broadcast_shapes(tuple(substrate.shape), tuple(x.shape))
        except ValueError:
            raise ValueError(f"{mode}: a substrate array must broadcast to x {tuple(x.shape)}; "
                             f"got shape {tuple(substrate.shape)}") from None
        check_values(substrate, f"{mode}: substrate")
        kind, sub = "array", substrate
    t, top1 = _targets(model, x, target)
    return _causal(model, x, heatmap, t, sub, top1=top1, mode=mode, substrate=kind, step=step,
                   batch_size=batch_size, score=score, blur_sigma=float(blur_sigma))


def deletion(model: Any, x: Array, heatmap: Array, target: Target = "top1", *,
             step: Optional[int] = None, substrate: Union[str, Array] = "zeros",
             score: str = "softmax", batch_size: int = 64,
             blur_sigma: float = 5.0) -> CausalCurve:
    """Deletion metric: the target's score as the most relevant pixels are removed (lower AUC
    is better).

    The pixels are taken in decreasing heatmap order (ties in row-major order), ``step`` per
    step, and replaced by the substrate in every channel; the curve holds the score of the
    original image and after each of the ``steps = ceil(H·W / step)`` steps, the last one with
    every pixel removed. The AUC is the trapezoid rule over the fraction removed, 0 to 1.
    RISE's ``auc`` spaces the points evenly, which is the same whenever ``step`` divides
    ``H·W`` (the default ``step = W`` does); otherwise the last, partial step counts for its
    true width here.

    The ``N · (steps + 1)`` perturbed images are built on the fly, ``batch_size`` per model
    call, in a ``lax.map`` over chunks, so memory holds ``batch_size`` images whatever the
    number of steps.

    Args:
      model: an xaijax Model, or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` float32 images in the model's normalised space.
      heatmap: ``(N, H, W)`` maps at the input resolution (higher = more relevant).
      target: the class per image: an int, ints ``(N,)``, ``"top1"`` (the model's prediction on
        ``x``, the ``c_ml`` of FGVis) or a class name.
      step: pixels removed per step (static); default the image width ``W`` (RISE: 224 on
        224×224 images).
      substrate: what replaces a removed pixel: ``"zeros"`` (0 in normalised space, the
        data-set mean; RISE's deletion substrate), ``"blur"`` (the image blurred with a Gaussian
        of ``blur_sigma`` pixels), or an array broadcastable to ``x``.
      score: ``"softmax"`` (the probability, as RISE and FGVis report), ``"logit"`` or
        ``"sigmoid"``.
      batch_size: perturbed images per model call (static).
      blur_sigma: σ of the ``"blur"`` substrate in pixels (static: it decides the kernel).

    Returns:
      a :class:`CausalCurve` ``(auc (N,), curve (N, steps + 1), fraction (steps + 1,))``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((2, 32, 32, 3))
      >>> r = xj.metrics.deletion(m, x, x[..., 0], "top1", batch_size=33)
      >>> r.auc.shape, r.curve.shape
      ((2,), (2, 33))

    References:
      Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box
      Models", the causal metrics (its ``evaluation.CausalMetric``: deletion substrate zeros,
      ``step`` 224, softmax scores); Wagner et al. 2019 (FGVis), §5.1, Table 2.
    """
    return _causal_metric("deletion", model, x, heatmap, target, step, substrate, score,
                          batch_size, blur_sigma)


def insertion(model: Any, x: Array, heatmap: Array, target: Target = "top1", *,
              step: Optional[int] = None, substrate: Union[str, Array] = "blur",
              score: str = "softmax", batch_size: int = 64,
              blur_sigma: float = 5.0) -> CausalCurve:
    """Insertion metric: the target's score as the most relevant pixels are put back into a
    substrate image (higher AUC is better).

    The mirror of :func:`deletion`: the curve starts at the substrate (column 0) and adds the
    image's pixels in decreasing heatmap order, ``step`` per step, until it is the image.

    The ``"blur"`` substrate is :func:`xaijax.methods.masks.gaussian_blur` with zero padding:
    RISE blurs by a zero-padded ``conv2d`` with σ = 5 in an 11×11 window (its ``gkern``); the
    Gaussian here reaches ``ceil(4σ)`` pixels (41 taps for σ = 5, normalised to sum 1), so the
    substrate is a little smoother than RISE's and darkens the border the same way.

    Args:
      model: an xaijax Model, or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` float32 images in the model's normalised space.
      heatmap: ``(N, H, W)`` maps at the input resolution.
      target: an int, ints ``(N,)``, ``"top1"`` (the prediction on ``x``) or a class name.
      step: pixels inserted per step (static); default the image width.
      substrate: ``"blur"`` (default, as RISE), ``"zeros"`` or an array broadcastable to ``x``.
      score: ``"softmax"``, ``"logit"`` or ``"sigmoid"``.
      batch_size: perturbed images per model call (static).
      blur_sigma: σ of the ``"blur"`` substrate in pixels (static).

    Returns:
      a :class:`CausalCurve`; ``fraction`` is the share of pixels inserted.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> xj.metrics.insertion(m, x, x[..., 0], 3, step=256).curve.shape
      (1, 5)

    References:
      Petsiuk et al. 2018, "RISE", the causal metrics (insertion into a blurred image; its
      ``evaluation.CausalMetric`` with ``gkern(11, 5)``).
    """
    return _causal_metric("insertion", model, x, heatmap, target, step, substrate, score,
                          batch_size, blur_sigma)


# ------------------------------------------------------------------------------------------------
# Drop % / Increase %


def _drop_body(f, x, heatmap, target, k, *, top1, score, soft):
    x = x.astype(jnp.float32)
    t = _resolve(f, x, target, top1)
    if soft:
        s = jnp.maximum(heatmap.astype(jnp.float32), 0.0)
        mx = jnp.max(s, axis=(1, 2), keepdims=True)
        mask = jnp.where(mx > 0, s / jnp.where(mx > 0, mx, 1.0), 0.0)
    else:
        mask = (_rank(heatmap) < k).reshape(heatmap.shape).astype(jnp.float32)
    y = class_scores(f(x), t, score)
    o = class_scores(f(x * mask[..., None]), t, score)
    drop = 100.0 * jnp.maximum(y - o, 0.0) / y
    inc = 100.0 * (o > y).astype(jnp.float32)
    return DropIncrease(drop, inc, y, o)


_drop = _compiled(_drop_body, ("top1", "score", "soft"))


def drop_increase(model: Any, x: Array, heatmap: Array, target: Target = "top1", *,
                  top: float = 0.15, score: str = "softmax") -> DropIncrease:
    """SISE's Drop % and Increase %: the image times the binary mask of its top-15 % pixels.

    ``T`` keeps the ``k = round(top·H·W)`` highest pixels of the heatmap (ties in row-major
    order) and zeroes the others (0 in the normalised space: the mean colour); with ``Y`` the
    target's confidence on the image and ``O`` on ``x ⊙ T``, per image ``drop = 100·max(0, Y −
    O)/Y`` and ``increase = 100·[O > Y]``. Their means over images are the papers' Drop %
    (lower is better) and Increase % (higher is better). SISE's printed equation lost its
    fraction bar and writes ``sign(O − Y)`` for the increase; its Table 1 values (20–40 %, never
    negative) and the definitions it cites (Chattopadhay et al. 2018; Fu et al. 2020) are the
    relative drop and the indicator used here.

    Args:
      model: an xaijax Model, or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` float32 images in the model's normalised space.
      heatmap: ``(N, H, W)`` maps at the input resolution.
      target: an int, ints ``(N,)``, ``"top1"`` or a class name.
      top: the fraction of pixels kept, in (0, 1]; 0.15 as in SISE.
      score: the confidence: ``"softmax"`` (default) or ``"sigmoid"`` (multi-label models; a
        relative drop needs a positive score, so no logits).

    Returns:
      a :class:`DropIncrease` of ``(N,)`` arrays: ``drop``, ``increase`` (in %), ``score``,
      ``masked_score``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((2, 32, 32, 3))
      >>> r = xj.metrics.drop_increase(m, x, jnp.ones((2, 32, 32)), 1, top=1.0)
      >>> r.drop.tolist(), r.increase.tolist()       # everything kept: no change
      ([0.0, 0.0], [0.0, 0.0])

    References:
      Sattarzadeh et al. 2021 (SISE), "Quantitative Results" (Table 1, Drop % / Increase %,
      top 15 %); Chattopadhay et al. 2018 (Grad-CAM++), objective evaluation (Average Drop %,
      Increase in Confidence).
    """
    what = "drop_increase"
    _check_common(model, x, heatmap, what)
    top = check_top(top, what)
    check_choice(score, CONFIDENCES, "score", what)
    k = top_count(top, x.shape[1] * x.shape[2])
    t, top1 = _targets(model, x, target)
    return _drop(model, x, heatmap, t, np.int32(k), top1=top1, score=score, soft=False)


def average_drop(model: Any, x: Array, heatmap: Array, target: Target = "top1", *,
                 score: str = "softmax") -> DropIncrease:
    """Grad-CAM++'s Average Drop % and Increase in Confidence: the map as a soft mask.

    The explanation image is ``E = x ⊙ L`` with ``L`` the heatmap's non-negative part scaled to
    a maximum of 1 (the papers' CAM maps are ReLU'd and normalised to [0, 1]; an all-zero map
    gives ``E = 0``). With ``Y`` the target's confidence on ``x`` and ``O`` on ``E``, per image
    ``drop = 100·max(0, Y − O)/Y`` and ``increase = 100·[O > Y]``; the papers print their
    means.

    Args:
      model: an xaijax Model, or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` float32 images in the model's normalised space.
      heatmap: ``(N, H, W)`` maps at the input resolution.
      target: an int, ints ``(N,)``, ``"top1"`` or a class name.
      score: ``"softmax"`` (default) or ``"sigmoid"``.

    Returns:
      a :class:`DropIncrease` of ``(N,)`` arrays (``drop`` and ``increase`` in %).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> xj.metrics.average_drop(m, x, jnp.full((1, 32, 32), 7.0), 0).drop.tolist()
      [0.0]

    References:
      Chattopadhay et al. 2018, "Grad-CAM++: Generalized Gradient-based Visual Explanations
      for Deep Convolutional Networks", objective evaluation for object recognition (Average
      Drop %, % Increase in Confidence).
    """
    what = "average_drop"
    _check_common(model, x, heatmap, what)
    check_choice(score, CONFIDENCES, "score", what)
    t, top1 = _targets(model, x, target)
    return _drop(model, x, heatmap, t, np.int32(0), top1=top1, score=score, soft=True)

