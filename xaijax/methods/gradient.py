"""Gradient-based methods (survey §4.2–4.5) and FullGrad (Srinivas & Fleuret 2019).

``gradient``, ``input_x_gradient``, ``integrated_gradients``, ``smoothgrad`` and ``vargrad`` need
only ``f(x) -> logits`` (any JAX callable); ``fullgrad`` needs a zoo-style model (it reads every
layer's bias) and ``linear_approx`` (activation × gradient at a layer, TorchRay's) named taps. Heatmap conventions (DESIGN.md): unsigned methods (``gradient``) show
``max_c |·|``; signed methods (``input_x_gradient``, ``integrated_gradients``) keep their sign,
summed over channels.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import (Explanation, draw_dtype, info, input_gradient, logits_fn,
                                 minmax, register, require_model, target_scores, upsample)
from xaijax.methods.excitation import read_at_tap, resolve_tap
from xaijax.models.base import Model
from xaijax.sharding import merge_inner, split_inner

Array = jax.Array


def heatmap_maxabs(a: Array) -> Array:
    """``max_c |a|``: the heatmap of unsigned methods (survey Eq. 6)."""
    return jnp.max(jnp.abs(a), axis=-1)


def heatmap_sum(a: Array) -> Array:
    """``Σ_c a``: the signed heatmap of ×Input, IG, LRP, DeepLIFT."""
    return jnp.sum(a, axis=-1)


@register("gradient",
          paper="Simonyan et al. 2014, §3.1 (|dS_c/dx|, max over channels)",
          peer="Captum Saliency")
def gradient(model: Any, x: Array, target: Array) -> Explanation:
    """Gradient saliency (Simonyan et al. 2014): max over channels of ``|∂S_c/∂x|``.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.

    Returns:
      heatmap ``max_c |∂S/∂x|`` ``(N, H, W)``; attribution the raw gradient ``(N, H, W, C)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.gradient(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Ayyar et al. 2021 (survey), §4.2, Eq. 6; Simonyan, Vedaldi & Zisserman 2014.
    """
    g = input_gradient(logits_fn(model), x, target)
    return Explanation(heatmap=heatmap_maxabs(g), attribution=g, target=target,
                       method="gradient")


@register("input_x_gradient",
          paper="Shrikumar et al. 2016; survey Eq. 3-4 (x * dS_c/dx)",
          peer="Captum InputXGradient",
          signed=True)
def input_x_gradient(model: Any, x: Array, target: Array) -> Explanation:
    """Gradient × Input: ``x ⊙ ∂S_c/∂x``, the first-order Taylor term of survey Eq. 3–4.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.

    Returns:
      attribution ``x ⊙ ∂S/∂x`` ``(N, H, W, C)``; heatmap its signed sum over channels.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.input_x_gradient(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Survey §4 (Eq. 3–4, linearisation ``w^T x``); Shrikumar et al. 2016 ("gradient * input").
    """
    g = input_gradient(logits_fn(model), x, target)
    a = g * x
    return Explanation(heatmap=heatmap_sum(a), attribution=a, target=target,
                       method="input_x_gradient")


# ------------------------------------------------------------------------------------------------
# Integrated Gradients


IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
              "gausslegendre")
IG_BASELINES = ("zeros", "black", "blur", "uniform")


def path_points(steps: int, method: str) -> Tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes ``α_k`` and weights ``w_k`` on [0, 1] with Captum's conventions.

    * ``riemann_left``: ``α = linspace(0, 1 - 1/n, n)``, ``w = 1/n``;
    * ``riemann_right``: ``α = linspace(1/n, 1, n)``, ``w = 1/n``;
    * ``riemann_middle``: ``α = linspace(1/(2n), 1 - 1/(2n), n)``, ``w = 1/n``;
    * ``riemann_trapezoid``: ``α = linspace(0, 1, n)``, ``w = 1/n`` with the first and last
      halved (so the weights sum to ``1 - 1/n``, exactly as Captum);
    * ``gausslegendre``: Gauss–Legendre nodes and weights mapped to [0, 1].

    Returns:
      ``(alphas, weights)``, float32 numpy arrays of length ``steps``.
    """
    n = int(steps)
    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {IG_METHODS}; got {method!r}")
    if n < 2 and method.startswith("riemann"):
        raise ValueError(f"steps must be >= 2 for Riemann sums; got {steps}")
    if n < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return (0.5 * (1.0 + nodes)).astype(np.float32), (0.5 * w).astype(np.float32)
    w = np.full((n,), 1.0 / n)
    if method == "riemann_trapezoid":
        a = np.linspace(0.0, 1.0, n, dtype=np.float32)
        w[0] /= 2.0
        w[-1] /= 2.0
    elif method == "riemann_left":
        a = np.linspace(0.0, 1.0 - 1.0 / n, n, dtype=np.float32)
    elif method == "riemann_middle":
        a = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n, dtype=np.float32)
    else:
        a = np.linspace(1.0 / n, 1.0, n, dtype=np.float32)
    return a.astype(np.float32), w.astype(np.float32)


def gaussian_blur(x: Array, sigma: float, truncate: float = 4.0) -> Array:
    """Separable Gaussian blur of NHWC images per channel (``scipy.ndimage.gaussian_filter``
    with ``mode="reflect"``, ``truncate=4``, applied over H and W only). ``sigma`` is static."""
    sigma = float(sigma)
    if sigma <= 0:
        return x
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), x.dtype)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        xp = jnp.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(k[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * r + 1))
    return x


def make_baseline(model: Any, x: Array, baseline: str, *, blur_sigma: float = 5.0,
                  key: Optional[Array] = None) -> Array:
    """The IG reference image for each image of ``x`` (``(N, H, W, C)``).

    Args:
      model: the model (``"black"`` and, for the exact pixel range, ``"uniform"`` read its
        normalisation from ``model.spec``).
      x: the normalised batch.
      baseline: ``"zeros"`` (zeros in normalised space, i.e. the mean image), ``"black"`` (pixel 0
        mapped through the model's normalisation: ``-mean/std``), ``"blur"`` (the input blurred
        with a Gaussian of ``blur_sigma`` pixels), ``"uniform"`` (uniform noise over the valid
        pixel range ``[(0-mean)/std, (1-mean)/std]`` per channel for a zoo model, or over
        ``[min x_i, max x_i]`` of each image for a plain function; needs ``key``, split per image).
      blur_sigma: Gaussian σ in pixels (static).
      key: PRNG key for ``"uniform"``.

    Returns:
      ``(N, H, W, C)`` baselines.
    """
    if baseline == "zeros":
        return jnp.zeros_like(x)
    if baseline == "black":
        if not isinstance(model, Model):
            raise ValueError("baseline='black' needs the model's normalisation; pass an xaijax "
                             "Model or give the black image yourself as baseline_array")
        m = jnp.asarray(model.spec.mean, x.dtype)
        s = jnp.asarray(model.spec.std, x.dtype)
        return jnp.broadcast_to(-m / s, x.shape)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    if baseline == "uniform":
        if key is None:
            key = jax.random.PRNGKey(0)
        keys = jax.random.split(key, x.shape[0])
        u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], draw_dtype(x)))(keys)
        if isinstance(model, Model):
            m = jnp.asarray(model.spec.mean, x.dtype)
            s = jnp.asarray(model.spec.std, x.dtype)
            lo, hi = -m / s, (1.0 - m) / s
        else:
            lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
            hi = jnp.max(x, axis=(1, 2, 3), keepdims=True)
        return lo + u * (hi - lo)
    raise ValueError(f"baseline must be one of {IG_BASELINES} (or give baseline_array); got "
                     f"{baseline!r}")


# a default chunk (path points, noisy copies) keeps one model call at this many images at most:
# 8 noisy copies of 32 images at once (256 EfficientNet-Lite0 backward passes at 224 px)
# exhausted 24 GB
NOISE_CALL_IMAGES = 64


def call_chunk(internal_batch_size: Optional[int], items: int, n_images: int) -> int:
    """Items per model call: ``internal_batch_size`` when given, else as many of the ``items``
    as keep a call at ``NOISE_CALL_IMAGES`` images (``64 // n_images``, at least 1)."""
    if internal_batch_size is not None:
        return int(internal_batch_size)
    return max(1, min(items, NOISE_CALL_IMAGES // max(1, n_images)))


def chunked_sum(fn: Callable[[Array], Any], xs: Array, chunk: int) -> Any:
    """``Σ_k fn(c)[k]`` over all items of ``xs``, evaluated ``chunk`` items at a time (a
    ``lax.scan`` over full chunks, plus one call on the remainder). Memory is that of one chunk.

    ``fn`` takes a chunk ``c`` of ``K`` items and returns (a tree of) ``(K, N, ...)`` arrays, one
    row per item and image. It must run the model on one merged batch built with
    :func:`xaijax.sharding.merge_inner` (and read the rows back with
    :func:`~xaijax.sharding.split_inner`), not with a ``vmap`` over the items: ``vmap`` of a
    convolution puts the item axis outermost, and a batch sharded over its images then has to be
    gathered on every device (measured: IG at 16 images on 8 forced devices computed every
    image's path on every device, 0.14× one device). ``merge_inner`` keeps each image's items on
    its device in batch mode and splits the items over the devices in inner mode.
    """
    n = xs.shape[0]
    chunk = max(1, min(int(chunk), n))
    full, rest = divmod(n, chunk)

    def chunk_sum(c):
        return jax.tree_util.tree_map(lambda v: jnp.sum(v, axis=0), fn(c))

    total = None
    if full:
        head = xs[: full * chunk].reshape((full, chunk) + xs.shape[1:])
        first = chunk_sum(head[0])

        def body(acc, c):
            return jax.tree_util.tree_map(jnp.add, acc, chunk_sum(c)), None

        total, _ = jax.lax.scan(body, first, head[1:])
    if rest:
        tail = chunk_sum(xs[full * chunk:])
        total = tail if total is None else jax.tree_util.tree_map(jnp.add, total, tail)
    return total


def per_item(fn: Callable[..., Any], points: Array, *per_image: Array) -> Any:
    """``fn`` (a row-wise function of a model batch and its per-image arguments, e.g.
    ``input_gradient(f, ·, target)``) on ``K`` points of each of ``N`` images, ``points`` of
    shape ``(K, N, ...)``, as one merged model batch (:func:`xaijax.sharding.merge_inner`); each
    ``per_image`` array ``(N, ...)`` is repeated for every item. Returns ``(K, N, ...)``."""
    k, n = points.shape[:2]
    reps = [merge_inner(jnp.broadcast_to(a, (k,) + a.shape)) for a in per_image]
    out = fn(merge_inner(points), *reps)
    return jax.tree_util.tree_map(lambda v: split_inner(v, k), out)


@register("integrated_gradients",
          paper="Sundararajan et al. 2017, Eq. 1 and its Riemann sum (§5)",
          peer="Captum IntegratedGradients",
          static=("steps", "method", "baseline", "internal_batch_size",
                                          "blur_sigma"), signed=True)
def integrated_gradients(model: Any, x: Array, target: Array, *, baseline: str = "zeros",
                         baseline_array: Optional[Array] = None, steps: int = 50,
                         method: str = "riemann_trapezoid",
                         internal_batch_size: Optional[int] = None,
                         blur_sigma: float = 5.0, key: Optional[Array] = None) -> Explanation:
    """Integrated Gradients: ``(x - x') ⊙ ∫_0^1 ∂S_c(x' + α(x - x'))/∂x dα`` (survey Eq. 7).

    The integral is a quadrature ``Σ_k w_k ∇S_c(x' + α_k (x - x'))`` with Captum's nodes and
    weights (:func:`path_points`). The path is evaluated ``internal_batch_size`` α-values at a
    time (a ``lax.scan`` over chunks), so memory is bounded for any ``steps``.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      baseline: ``"zeros"``, ``"black"``, ``"blur"`` or ``"uniform"`` (see
        :func:`make_baseline`); static.
      baseline_array: your own baseline, ``(H, W, C)`` or ``(N, H, W, C)``; overrides
        ``baseline`` (traced, so a new baseline never recompiles).
      steps: number of path points (static).
      method: ``riemann_left``, ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid`` or
        ``gausslegendre`` (static).
      internal_batch_size: α-values per forward/backward pass (static; each pass sees
        ``N · internal_batch_size`` images). Default: as many as keep a pass at 64 images
        (:func:`call_chunk`: all 50 steps of one image, 2 per pass for 32 images). It was 16
        per image, 512 images per pass at batch 32, the size that exhausted 24 GB for
        SmoothGrad.
      blur_sigma: σ in pixels of the ``"blur"`` baseline (static: it fixes the kernel size).
      key: PRNG key of the ``"uniform"`` baseline (split per image).

    Returns:
      attribution ``(N, H, W, C)``; heatmap its signed channel sum; ``extras["delta"]`` the
      completeness error ``Σ_i R_i - (S_c(x) - S_c(x'))`` per image ``(N,)``, and
      ``extras["baseline"]`` the baselines used.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.integrated_gradients(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]),
      ...                                      steps=8)
      >>> ex.heatmap.shape, ex.extras["delta"].shape
      ((1, 32, 32), (1,))

    References:
      Survey §4.4, Eq. 7; Sundararajan, Taly & Yan 2017. Quadrature conventions follow
      ``captum.attr.IntegratedGradients`` (its default is ``gausslegendre``; ours is the
      trapezoid rule, as Riemann sums are what the survey describes).
    """
    f = logits_fn(model)
    alphas, weights = path_points(steps, method)
    if baseline_array is not None:
        b = jnp.broadcast_to(jnp.asarray(baseline_array, x.dtype), x.shape)
    else:
        b = make_baseline(model, x, baseline, blur_sigma=blur_sigma, key=key)
    diff = x - b

    def points(aw):  # (K, 2) nodes and weights -> (K, N, H, W, C) weighted gradients
        a, w = aw[:, 0, None, None, None, None], aw[:, 1, None, None, None, None]
        return w * per_item(lambda z, t: input_gradient(f, z, t), b + a * diff, target)

    avg_grad = chunked_sum(points, jnp.stack([jnp.asarray(alphas), jnp.asarray(weights)], 1),
                           call_chunk(internal_batch_size, len(alphas), x.shape[0]))
    attr = diff * avg_grad
    s_x = target_scores(f(x), target)
    s_b = target_scores(f(b), target)
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (s_x - s_b)
    return Explanation(heatmap=heatmap_sum(attr), attribution=attr,
                       extras={"delta": delta, "baseline": b}, target=target,
                       method="integrated_gradients")


# ------------------------------------------------------------------------------------------------
# SmoothGrad / VarGrad


def _options(base_options: Union[Tuple[Tuple[str, Any], ...], Dict[str, Any], None]) -> dict:
    if base_options is None:
        return {}
    if isinstance(base_options, dict):
        return dict(base_options)
    try:
        return dict(base_options)
    except (TypeError, ValueError):
        raise TypeError("base_options must be a tuple of (name, value) pairs (hashable, so it "
                        "can be a static jit argument), e.g. (('steps', 16),); got "
                        f"{base_options!r}") from None


def noise_tunnel(model: Any, x: Array, target: Array, noise: Array, *, base: str = "gradient",
                 kind: str = "smoothgrad", internal_batch_size: Optional[int] = None,
                 base_options: Any = ()) -> Explanation:
    """Average (``smoothgrad``) or variance (``vargrad``) of a method over given noisy copies.

    This is the deterministic core of :func:`smoothgrad` / :func:`vargrad`: the noise is an
    argument (already scaled, in the units of ``x``), which is how the tests feed xaijax and
    Captum's ``NoiseTunnel`` identical samples.

    Args:
      model: the model.
      x: ``(N, H, W, C)`` batch.
      target: ``(N,)`` classes.
      noise: ``(N, n, H, W, C)`` additive noise: sample ``j`` of image ``i`` is
        ``x[i] + noise[i, j]``.
      base: a registered method name (``gradient``, ``input_x_gradient``,
        ``integrated_gradients``, ``guided_backprop``, ``deconvnet``, ``fullgrad``, ``lrp``...).
      kind: ``"smoothgrad"`` (mean, Eq. 8) or ``"vargrad"`` (population variance
        ``E[a²] - E[a]²``, as Captum).
      internal_batch_size: noisy samples per call of the base method (each call sees
        ``N · internal_batch_size`` images); default all ``n`` at once while ``N · n`` is at
        most ``NOISE_CALL_IMAGES`` (64), else ``64 // N`` per call (at least 1,
        :func:`call_chunk`).
      base_options: options of the base method, a tuple of ``(name, value)`` pairs (or a dict
        when called outside ``jit``).

    Returns:
      attribution: the aggregate of the base method's attributions (``None`` when the base has
      none); heatmap: the base method's heatmap rule applied to the aggregated attribution
      (``max_c |·|`` for unsigned bases, signed channel sum for signed ones), or the aggregate of
      the base heatmaps for methods without attribution.
    """
    if kind not in ("smoothgrad", "vargrad"):
        raise ValueError(f"kind must be 'smoothgrad' or 'vargrad'; got {kind!r}")
    if base in ("smoothgrad", "vargrad"):
        raise ValueError(f"base must be a gradient-type method, not {base!r}")
    inf = info(base)
    if inf.needs != "function":
        require_model(model, base, "rule-aware layers" if inf.needs == "rules" else "taps")
    opts = _options(base_options)
    s = noise.shape[1]
    if noise.shape[0] != x.shape[0] or noise.shape[2:] != x.shape[1:]:
        raise ValueError(f"noise must have shape (N, n_samples, H, W, C) = ({x.shape[0]}, n, "
                         f"{', '.join(map(str, x.shape[1:]))}); got {tuple(noise.shape)}")
    chunk = call_chunk(internal_batch_size, s, x.shape[0])

    def base_map(z, t):
        ex = inf.fn(model, z, t, **opts)
        return ex.attribution if ex.attribution is not None else ex.heatmap

    def one(eps):  # eps: (K, N, H, W, C) -> per-sample maps and their squares
        a = per_item(base_map, x + eps, target)
        return a, a * a

    total, total_sq = chunked_sum(one, jnp.swapaxes(noise, 0, 1), chunk)
    mean = total / s
    agg = mean if kind == "smoothgrad" else total_sq / s - mean * mean
    probe = jax.eval_shape(lambda: inf.fn(model, x, target, **opts))
    if probe.attribution is not None:
        heat = heatmap_sum(agg) if inf.signed else heatmap_maxabs(agg)
        attr = agg
    else:
        heat, attr = agg, None
    return Explanation(heatmap=heat, attribution=attr, target=target, method=kind)


def sample_noise(key: Optional[Array], x: Array, n_samples: int, sigma: Any) -> Array:
    """Gaussian noise ``(N, n, H, W, C)`` with σ_i = ``sigma · (max x_i - min x_i)`` per image.

    The key is split once per image and each image's key once per sample, so images never share
    noise (and the noise of image ``i`` does not depend on the batch it is in beyond its index).
    """
    if key is None:
        key = jax.random.PRNGKey(0)
    rng = jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3))
    sd = jnp.asarray(sigma, x.dtype) * rng

    def per_image(k):
        ks = jax.random.split(k, n_samples)
        # drawn in float32 at least: a bfloat16 draw would be other samples, not rounded ones
        return jax.vmap(lambda kk: jax.random.normal(kk, x.shape[1:], draw_dtype(x)))(ks)

    eps = jax.vmap(per_image)(jax.random.split(key, x.shape[0]))
    return eps * sd[:, None, None, None, None]


_NT_STATIC = ("base", "n_samples", "internal_batch_size", "base_options")


def _noisy(kind, model, x, target, base, sigma, n_samples, key, noise, internal_batch_size,
           base_options) -> Explanation:
    if noise is None:
        noise = sample_noise(key, x, int(n_samples), sigma)
    else:
        noise = jnp.asarray(noise, x.dtype)
        if noise.shape[1] != int(n_samples):
            raise ValueError(f"noise has {noise.shape[1]} samples per image but n_samples="
                             f"{n_samples}")
        rng = jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3))
        noise = noise * (jnp.asarray(sigma, x.dtype) * rng)[:, None, None, None, None]
    return noise_tunnel(model, x, target, noise, base=base, kind=kind,
                        internal_batch_size=internal_batch_size, base_options=base_options)


@register("smoothgrad",
          paper="Smilkov et al. 2017, Eq. 4",
          peer="Captum NoiseTunnel(smoothgrad)",
          static=_NT_STATIC)
def smoothgrad(model: Any, x: Array, target: Array, *, base: str = "gradient",
               sigma: float = 0.15, n_samples: int = 50, key: Optional[Array] = None,
               noise: Optional[Array] = None, internal_batch_size: Optional[int] = None,
               base_options: Any = ()) -> Explanation:
    """SmoothGrad: the mean of a method's attributions over noisy copies of the input.

    Adds ``n_samples`` Gaussian draws ``N(0, σ_i²)`` to each image, with the noise level given
    as a fraction of the image's range, ``σ_i = sigma · (max x_i − min x_i)`` (survey §4.5:
    ``σ/(x_max − x_min)`` in [0.1, 0.2] works best), runs the ``base`` method on every noisy copy
    and averages its attributions (Eq. 8). Any registered gradient-type method can be the base
    (``gradient``, ``input_x_gradient``, ``integrated_gradients``, ``guided_backprop``,
    ``deconvnet``, ``fullgrad``, ``lrp``, ``deeplift``...).

    Heatmap: the base method's heatmap rule applied to the averaged attribution — ``max_c |·|``
    for unsigned bases (gradient, guided backprop, deconvnet), the signed channel sum for signed
    bases (×Input, IG, LRP, DeepLIFT). For a base without a per-channel attribution
    (``fullgrad``) the base heatmaps are averaged instead. (Smilkov et al. average the raw
    gradient and take the absolute value for display, which is what ``base="gradient"`` does.)

    Args:
      model: a zoo Model, or any JAX callable when the base needs only the function.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` classes.
      base: registered name of the wrapped method (static).
      sigma: noise level as a fraction of each image's value range (traced).
      n_samples: noisy copies per image (static).
      key: PRNG key, split per image and per sample (:func:`sample_noise`); default
        ``PRNGKey(0)``.
      noise: optional standard-normal draws ``(N, n_samples, H, W, C)`` used instead of ``key``
        (multiplied by ``σ_i``); this is how identical noise is fed to a peer library.
      internal_batch_size: noisy copies per call of the base (static); default all at once
        up to 64 images per call (:func:`noise_tunnel`).
      base_options: the base method's options as a tuple of ``(name, value)`` pairs (static),
        e.g. ``(("steps", 16), ("method", "riemann_middle"))``.

    Returns:
      attribution: the mean of the base attributions ``(N, H, W, C)`` (``None`` for bases
      without attribution); heatmap as above.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.smoothgrad(m, jnp.ones((2, 32, 32, 3)), jnp.array([0, 1]),
      ...                            n_samples=4, key=jax.random.PRNGKey(1))
      >>> ex.heatmap.shape
      (2, 32, 32)

    References:
      Survey §4.5, Eq. 8; Smilkov et al. 2017. The aggregation matches
      ``captum.attr.NoiseTunnel(nt_type="smoothgrad")``; Captum's ``stdevs`` is absolute, ours
      is relative to the image range.
    """
    return _noisy("smoothgrad", model, x, target, base, sigma, n_samples, key, noise,
                  internal_batch_size, base_options)


@register("vargrad",
          paper="Adebayo et al. 2018, VarGrad (variance of noisy gradients)",
          peer="Captum NoiseTunnel(vargrad)",
          static=_NT_STATIC)
def vargrad(model: Any, x: Array, target: Array, *, base: str = "gradient",
            sigma: float = 0.15, n_samples: int = 50, key: Optional[Array] = None,
            noise: Optional[Array] = None, internal_batch_size: Optional[int] = None,
            base_options: Any = ()) -> Explanation:
    """VarGrad: the variance of a method's attributions over noisy copies of the input.

    Same sampling and options as :func:`smoothgrad`; the aggregate is the per-element population
    variance ``E[a²] − E[a]²`` (Captum's ``nt_type="vargrad"``). The heatmap applies the base
    method's rule to the variance map (``max_c`` for unsigned bases, channel sum for signed
    ones; the variance is non-negative either way).

    Args:
      model: a zoo Model, or any JAX callable when the base needs only the function.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` classes.
      base: registered name of the wrapped method (static).
      sigma: noise level as a fraction of each image's value range (traced).
      n_samples: noisy copies per image (static).
      key: PRNG key, split per image and per sample; default ``PRNGKey(0)``.
      noise: optional standard-normal draws ``(N, n_samples, H, W, C)`` used instead of ``key``.
      internal_batch_size: noisy copies per call of the base (static); default all at once
        up to 64 images per call (:func:`noise_tunnel`).
      base_options: the base method's options as ``(name, value)`` pairs (static).

    Returns:
      attribution: the variance of the base attributions ``(N, H, W, C)``; heatmap as above.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.vargrad(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), n_samples=4)
      >>> bool((ex.attribution >= 0).all())
      True

    References:
      Survey §4.5; Adebayo et al. 2018 ("Local explanation methods for deep neural networks lack
      sensitivity to parameter values"); ``captum.attr.NoiseTunnel``.
    """
    return _noisy("vargrad", model, x, target, base, sigma, n_samples, key, noise,
                  internal_batch_size, base_options)


# ------------------------------------------------------------------------------------------------
# FullGrad


def _has_bias(layer, params) -> bool:
    from xaijax.nn import layers as L

    return isinstance(layer, L.BatchNorm) or (isinstance(layer, L.Conv) and "bias" in params)


def _bias_layers(model: Model, x: Array) -> Dict[str, Tuple[int, ...]]:
    """``{tap: output shape}`` of every Conv with a bias and every BatchNorm (trace time)."""
    found: Dict[str, Tuple[int, ...]] = {}

    def observe(layer, params, inputs, y):
        if _has_bias(layer, params):
            found[layer.tap] = tuple(y.shape)

    jax.eval_shape(lambda z: model.forward(z, observe=observe)[0], x)
    if not found:
        raise ValueError(f"fullgrad: model {model.spec.name!r} has no xaijax Conv with a bias "
                         f"and no BatchNorm, so there is no bias gradient to add (the heatmap "
                         f"would be the input-gradient term alone); build its layers from "
                         f"xaijax.nn.layers.Conv / BatchNorm, or use input_x_gradient")
    return found


@register("fullgrad",
          paper="Srinivas & Fleuret 2019, Eq. 6-7 (full-gradient aggregate)",
          peer="pytorch-grad-cam FullGrad",
          needs="rules")
def fullgrad(model: Model, x: Array, target: Array) -> Explanation:
    """FullGrad: input-gradient × input plus bias-gradient × bias of every layer.

    .. math::

        S(x) = ψ(|∇_x S_c ⊙ x|) + Σ_{l} Σ_{c ∈ l} ψ(|∇_{b} S_c ⊙ b|_c)

    where the bias gradients are taken at every Conv with a bias and every BatchNorm (its
    effective bias ``β − μ·γ/√(σ²+ε)``, computed as the layer's response to a zero input), i.e.
    the per-location ``b_c · ∂S_c/∂y_c`` of the layer output ``y``; Dense biases have no spatial
    map and are left out (as in the paper's code).

    Post-processing matches ``pytorch_grad_cam.FullGrad`` (1.5.7), which differs from a plain
    "abs, upsample, sum" in normalising every map: each channel map (each input channel of
    ``|∇_x S ⊙ x|``, each channel of each bias map) is min-max normalised,
    ``(m − min)/(1e-7 + max(m − min))``, then bilinearly resized to the input size (half-pixel
    centres, no antialiasing: ``cv2.resize``), bias channels are summed per layer, everything is
    summed, and the total is min-max normalised per image. So the heatmap lies in [0, 1].

    Args:
      model: a zoo Model (the method reads each layer's bias).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` classes.

    Returns:
      heatmap ``(N, H, W)`` in [0, 1]; attribution ``None``; ``extras["input_part"]`` the
      normalised input-gradient term summed over channels.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.fullgrad(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Srinivas & Fleuret 2019, "Full-Gradient Representation for Neural Network Visualization",
      Eq. 3 (full-gradients) and §4 (FullGrad saliency with ψ = abs then bilinear upsampling);
      post-processing as ``pytorch_grad_cam.FullGrad``.
    """
    model = require_model(model, "fullgrad", "rule-aware layers")
    shapes = _bias_layers(model, x)
    taps = tuple(shapes)
    size = x.shape[1:3]

    def score(z, deltas):
        biases = {}

        def observe(layer, params, inputs, y):
            if layer.tap in deltas:  # the layer's response to a zero input: its bias map
                zero = jnp.zeros((1,) + inputs[0].shape[1:], inputs[0].dtype)
                biases[layer.tap] = layer.forward(params, zero)[0, 0, 0]

        edits = {t: (lambda a, t=t: a + deltas[t]) for t in taps}
        logits, _ = model.forward(z, edits=edits, observe=observe)
        return jnp.sum(target_scores(logits, target)), biases

    deltas = {t: jnp.zeros(shapes[t], x.dtype) for t in taps}
    (gx, gd), biases = jax.grad(score, argnums=(0, 1), has_aux=True)(x, deltas)
    inp = minmax(jnp.abs(gx * x), (1, 2), eps=1e-7)  # (N, H, W, C), each channel normalised
    total = jnp.sum(inp, axis=-1)
    # the resize is linear, so the normalised channel maps are summed first (over channels and
    # over layers of the same resolution) and each resolution is resized once: the same sum as
    # resizing every channel (pytorch-grad-cam's order) without its (N, H, W, C) intermediates
    # (EfficientNet-Lite0 at 224 px: 14 s -> 0.1 s per image on 2 CPU cores)
    by_size: Dict[Tuple[int, int], Array] = {}
    for t in taps:
        m = jnp.sum(minmax(jnp.abs(biases[t] * gd[t]), (1, 2), eps=1e-7), axis=-1)
        by_size[m.shape[1:3]] = by_size.get(m.shape[1:3], 0.0) + m
    for m in by_size.values():
        total = total + upsample(m, size)
    heat = minmax(total, (1, 2), eps=1e-7)
    return Explanation(heatmap=heat, attribution=None,
                       extras={"input_part": jnp.sum(inp, axis=-1)}, target=target,
                       method="fullgrad")


# ------------------------------------------------------------------------------------------------
# linear approximation at a layer


def _cam_tap(model: Model) -> str:
    if not model.spec.cam_tap:
        raise ValueError(f"linear_approx: model {model.spec.name!r} names no last convolutional "
                         f"layer (spec.cam_tap); pass tap=... (see model.block_taps) or 'input'")
    return model.spec.cam_tap


def _validate_linear_approx(model, x, opts) -> None:
    """``tap`` names a layer of the model (or ``"input"``)."""
    if isinstance(model, Model):
        resolve_tap(model, opts.get("tap"), "linear_approx", _cam_tap)


@register("linear_approx",
          paper="survey Eq. 3-4 (first-order Taylor term) at a layer: sum_c A * dS_c/dA",
          peer="TorchRay linear_approx",
          static=("tap",), needs="taps", signed=True, validate=_validate_linear_approx)
def linear_approx(model: Model, x: Array, target: Array, *, tap: Optional[str] = None
                  ) -> Explanation:
    """Linear approximation: activation × gradient at a layer, summed over channels.

    The class score linearised at the layer's activation ``A`` (survey Eq. 3–4, with the layer
    in place of the input), ``S_c ≈ Σ_k Σ_ij (∂S_c/∂A^k_ij) A^k_ij + b``, credits each location
    with its term ``Σ_k A^k_ij ∂S_c/∂A^k_ij``; the map keeps its sign and is upsampled
    bilinearly to the input size (TorchRay ``resize=True``). At ``tap="input"`` it is the
    channel sum of :func:`input_x_gradient`.

    Args:
      model: a zoo Model (any architecture).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer (static); default ``model.spec.cam_tap``, the last convolutional features
        (``features.29`` of VGG16, the layer of TorchRay's ``linear_approx`` example); ``"input"``
        reads the image itself (TorchRay's function default).

    Returns:
      heatmap ``(N, H, W)`` (signed); attribution ``A ⊙ ∂S/∂A`` per channel when
      ``tap="input"``, else ``None``; extras ``low_res`` the map at the tap's resolution.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.linear_approx(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Ayyar et al. 2021 (survey), §4, Eq. 3–4 (linear approximation by the first-order Taylor
      expansion); TorchRay ``attribution.linear_approx`` (``gradient_to_linear_approx_saliency``).
    """
    name = resolve_tap(model, tap, "linear_approx", _cam_tap)
    g, a = read_at_tap(model, x, target, name, method="linear_approx")
    contrib = g * a
    low = jnp.sum(contrib, axis=-1)
    return Explanation(heatmap=upsample(low, x.shape[1:3]),
                       attribution=contrib if name is None else None, extras={"low_res": low},
                       target=target, method="linear_approx")
