"""Mask games: Meaningful Perturbation (Fong & Vedaldi 2017) and Extremal Perturbation (Fong,
Patrick & Vedaldi 2019), plus the small pieces every mask game shares.

Shared utilities (public, pure, jit-able; other mask games such as FGVis / DSSR may import them):

* :func:`split_key` — an explicit PRNG key split per image (``None`` means ``PRNGKey(0)``).
* :func:`blur_matrix`, :func:`gaussian_blur` — separable Gaussian blur with the kernel of
  TorchRay's ``imsmooth`` (support ``ceil(4σ)``, normalised to sum 1), as two small matrix
  products, with zero ("constant") or edge-replicating ("nearest") boundaries.
* :func:`blur_pyramid`, :func:`apply_pyramid` — the perturbation pyramid of increasingly blurred
  copies of an image and its per-pixel linear interpolation by a mask (Fong et al. 2019 §3.3).
* :func:`total_variation` — ``Σ|∂m|^β`` (Fong & Vedaldi 2017 Eq. 4's TV term).
* :func:`upsample_mask` — bilinear upsampling of a low-resolution mask to the input size.
* :class:`SmoothMaskGeometry`, :func:`smooth_mask_geometry`, :func:`smooth_mask` — the smooth-max
  mask parametrisation of Fong et al. 2019 §3.2 (TorchRay's ``MaskGenerator``).
* :func:`heavy_ball` — an optax transformation with PyTorch ``SGD(momentum, dampening)``
  semantics (the optimiser of the Extremal Perturbation reference code).
* :func:`random_translate` — random translation of an image by up to ``j`` pixels, edges replicated.
* :class:`MaskState` — the ``lax.scan`` carry of a mask optimisation.

Both games solve every problem of a batch (an image, or an (image, area) pair) as one row of a
single batched ``lax.scan``, as FGVis does: the model is per-sample, every loss term is taken
per row and the optimisers are elementwise, so the gradient of the summed loss with respect to
row ``i`` is row ``i``'s own gradient and each row follows the steps it would follow alone. (A
``vmap`` around a per-image scan makes the scan's batching rule trace the forward and backward
pass again per level.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xaijax.methods.base import Explanation, class_scores, logits_fn, register, upsample
from xaijax.progress import tick
from xaijax.sharding import shard_inner

Array = jax.Array

# ------------------------------------------------------------------------------------------------
# shared utilities


def split_key(key: Optional[Array], n: int) -> Array:
    """``n`` independent keys, one per image. ``key=None`` means ``jax.random.PRNGKey(0)``.

    Examples:
      >>> split_key(None, 3).shape[0]
      3
    """
    if key is None:
        key = jax.random.PRNGKey(0)
    return jax.random.split(key, n)


def _imsmooth_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel of TorchRay's ``imsmooth`` in float32: ``exp(-(i/(√2σ+ε))²)``, ``|i| ≤
    ceil(4σ)``, normalised to sum 1 (σ = 0 gives the identity)."""
    s = np.float32(sigma)
    width = int(math.ceil(np.float32(4) * s))
    den = np.float32(np.sqrt(2.0)) * s + np.float32(np.finfo(np.float32).eps)
    f = np.arange(-width, width + 1, dtype=np.float32) / den
    f = np.exp(-f * f).astype(np.float32)
    return (f / f.sum(dtype=np.float32)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def blur_matrix(n: int, sigma: float, padding: str = "constant") -> np.ndarray:
    """``(n, n)`` matrix ``B`` with ``B @ v`` = Gaussian blur of a length-``n`` signal.

    Args:
      n: signal length.
      sigma: standard deviation in pixels (static: it decides the kernel support ``ceil(4σ)``).
      padding: ``"constant"`` (zeros outside, TorchRay ``imsmooth``'s default) or ``"nearest"``
        (the edge value is repeated).

    Returns:
      a float32 numpy array.
    """
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0; got {sigma}")
    if padding not in ("constant", "nearest"):
        raise ValueError(f"padding must be 'constant' or 'nearest'; got {padding!r}")
    f = _imsmooth_kernel(sigma)
    w = (len(f) - 1) // 2
    m = np.zeros((n, n), np.float32)
    for i in range(n):
        j = np.arange(i - w, i + w + 1)
        if padding == "constant":
            ok = (j >= 0) & (j < n)
            m[i, j[ok]] += f[ok]
        else:
            np.add.at(m[i], np.clip(j, 0, n - 1), f)
    return m


def gaussian_blur(x: Array, sigma: float, padding: str = "constant") -> Array:
    """Separable Gaussian blur of ``(..., H, W, C)`` images (vertical pass, then horizontal).

    Args:
      x: images, channels last.
      sigma: standard deviation in pixels (a Python float: it decides the kernel support).
      padding: ``"constant"`` (zero) or ``"nearest"`` boundary, see :func:`blur_matrix`.

    Returns:
      the blurred images, same shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> gaussian_blur(jnp.ones((1, 8, 8, 3)), 1.0, "nearest").shape
      (1, 8, 8, 3)
    """
    h, w = x.shape[-3], x.shape[-2]
    bh = jnp.asarray(blur_matrix(h, float(sigma), padding))
    bw = jnp.asarray(blur_matrix(w, float(sigma), padding))
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ij,...jwc->...iwc", bh, x, precision=hi)
    return jnp.einsum("ij,...hjc->...hic", bw, y, precision=hi)


def blur_pyramid(x: Array, num_levels: int = 8, max_blur: float = 20.0) -> Array:
    """``(L, H, W, C)`` pyramid of one image ``x`` ``(H, W, C)``: level ``l`` is ``x`` blurred
    with ``σ_l = max_blur·(1 − l/(L−1))`` (zero padding), so level 0 is the most blurred and level
    ``L−1`` is ``x`` itself.

    References:
      Fong, Patrick & Vedaldi 2019, §3.3 ("perturbation operator", blur); TorchRay
      ``Perturbation`` (``num_levels=8``, ``max_blur=20``).
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2; got {num_levels}")
    if max_blur <= 0:
        raise ValueError(f"max_blur must be > 0; got {max_blur}")
    s = np.linspace(0.0, 1.0, num_levels).astype(np.float32)
    sigmas = ((np.float32(1) - s) * np.float32(max_blur)).astype(np.float32)
    return jnp.stack([gaussian_blur(x, float(sg), "constant") for sg in sigmas])


def apply_pyramid(pyramid: Array, mask: Array) -> Array:
    """Perturb with a mask: ``z(u) = interpolate_l pyramid[l](u)`` at ``l = m(u)·(L−1)``.

    Args:
      pyramid: ``(L, H, W, C)`` from :func:`blur_pyramid` (level ``L−1`` is the image), or
        ``(..., L, H, W, C)``, one pyramid per mask.
      mask: ``(..., H, W)`` in [0, 1]; 1 keeps the pixel, 0 takes the most perturbed level.

    Returns:
      ``(..., H, W, C)`` perturbed images (differentiable in ``mask``).
    """
    nl = pyramid.shape[-4]
    w = mask * (nl - 1)
    k = jnp.floor(w)
    frac = (w - k)[..., None]
    levels = jnp.arange(nl, dtype=k.dtype)
    k0 = (k[..., None, :, :] == levels[:, None, None])[..., None]       # (..., L, H, W, 1)
    k1 = (jnp.minimum(k + 1, nl - 1)[..., None, :, :] == levels[:, None, None])[..., None]
    y0 = jnp.sum(jnp.where(k0, pyramid, 0.0), axis=-4)
    y1 = jnp.sum(jnp.where(k1, pyramid, 0.0), axis=-4)
    return (1 - frac) * y0 + frac * y1


def clamp01(m: Array) -> Array:
    """Clip to [0, 1] with PyTorch ``clamp``'s gradient: 1 inside the closed interval, 0 outside
    (``jnp.clip`` halves the gradient at the bounds)."""
    return jnp.where((m >= 0) & (m <= 1), m, jnp.clip(m, 0.0, 1.0))


def total_variation(m: Array, beta: float = 3.0) -> Array:
    """``Σ_u |m(u+e_y) − m(u)|^β + |m(u+e_x) − m(u)|^β`` over the last two axes.

    References:
      Fong & Vedaldi 2017, §4 Eq. 4 (the TV term ``λ₂ Σ_u ‖∇m(u)‖_β^β``, β = 3).
    """
    dy = jnp.abs(m[..., 1:, :] - m[..., :-1, :])
    dx = jnp.abs(m[..., :, 1:] - m[..., :, :-1])
    return jnp.sum(dy ** beta, axis=(-2, -1)) + jnp.sum(dx ** beta, axis=(-2, -1))


def upsample_mask(m: Array, size: Tuple[int, int]) -> Array:
    """Bilinear (half-pixel, torch ``align_corners=False``) upsampling of ``(..., h, w)`` masks
    to ``size``."""
    lead = m.shape[:-2]
    flat = m.reshape((-1,) + m.shape[-2:])
    return upsample(flat, tuple(size)).reshape(lead + tuple(size))


def random_translate(x: Array, key: Array, max_shift: int) -> Array:
    """Translate ``(H, W, C)`` image ``x`` by a random ``(dy, dx) ∈ [−j, j]²`` (edges
    replicated); ``max_shift = 0`` returns ``x``."""
    if max_shift <= 0:
        return x
    j = int(max_shift)
    xp = jnp.pad(x, ((j, j), (j, j), (0, 0)), mode="edge")
    off = jax.random.randint(key, (2,), 0, 2 * j + 1)
    return jax.lax.dynamic_slice(xp, (off[0], off[1], 0), x.shape)


class MaskState(NamedTuple):
    """What travels through a mask game's optimisation loop: the mask (or its parameters),
    one row per problem, and the optimiser state."""

    mask: Array
    opt_state: Any


class HeavyBallState(NamedTuple):
    """State of :func:`heavy_ball`: the momentum buffer and the step count."""

    buffer: Any
    count: Array


def heavy_ball(learning_rate, momentum: float = 0.9, dampening: float = 0.9
               ) -> optax.GradientTransformation:
    """Gradient descent with PyTorch ``SGD(lr, momentum, dampening)`` semantics.

    ``b₁ = g₁``, ``b_t = μ·b_{t−1} + (1 − d)·g_t``, update ``−lr·b_t`` (optax's ``trace`` has no
    dampening and starts from zero, which changes the first steps).

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> opt = heavy_ball(0.1)
      >>> u, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
      >>> u.tolist()
      [-0.10000000149011612, -0.10000000149011612]
    """

    def init(params):
        return HeavyBallState(jax.tree_util.tree_map(jnp.zeros_like, params),
                              jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        first = state.count == 0
        buf = jax.tree_util.tree_map(
            lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g),
            state.buffer, grads)
        upd = jax.tree_util.tree_map(lambda b: -learning_rate * b, buf)
        return upd, HeavyBallState(buf, state.count + 1)

    return optax.GradientTransformation(init, update)


# ------------------------------------------------------------------------------------------------
# smooth masks (Fong et al. 2019 §3.2)


@dataclasses.dataclass(frozen=True, eq=False)
class SmoothMaskGeometry:
    """Static geometry of the smooth-max mask generator (TorchRay ``MaskGenerator``).

    Attributes:
      shape: output mask size ``(H, W)``.
      step: spacing of the parameter grid in pixels.
      sigma: radius of the smooth bump (pixels); also the margin around the image.
      padding, radius: of the ``(2·radius+1)²`` neighbourhood gathered around each output cell.
      shape_in: parameter grid ``ceil(H/step) × ceil(W/step)``.
      shape_mid, shape_out: neighbourhood grid and the full mask with margin.
      margin: pixels cropped on the top/left to get the ``(H, W)`` mask.
      weight: ``((2r+1)², Ho, Wo)`` bump ``k(‖u − u_i‖/σ)`` of each neighbour at each pixel.
      index_y, index_x: nearest-neighbour upsampling indices from ``shape_mid`` to the output.
      select_y, select_x: ``(2r+1, Ho, h_in)`` and ``(2r+1, Wo, w_in)`` 0/1 matrices: row
        ``(j, u)`` picks the parameter row (column) of neighbour ``j`` of output pixel ``u``
        (all zeros where that neighbour lies in the zero padding). They gather the
        neighbourhoods as two small matrix products, which differentiate as matrix products
        (an unfold-and-index gather differentiates into a scatter, ~20x slower on the CPU).
    """

    shape: Tuple[int, int]
    step: int
    sigma: float
    padding: int
    radius: int
    shape_in: Tuple[int, int]
    shape_mid: Tuple[int, int]
    shape_out: Tuple[int, int]
    margin: int
    weight: np.ndarray
    index_y: np.ndarray
    index_x: np.ndarray
    select_y: np.ndarray
    select_x: np.ndarray


@functools.lru_cache(maxsize=64)
def smooth_mask_geometry(shape: Tuple[int, int], step: int = 7, sigma: float = 21.0
                         ) -> SmoothMaskGeometry:
    """Precompute the smooth-mask generator for an ``(H, W)`` mask (numpy, float32, cached).

    The bump is ``k(z) = exp(−2·max(z − ½, 0)²)`` at ``z = ‖u − (σ + step·i)‖/σ`` for parameter
    cell ``i``; the grid extends ``σ`` pixels beyond the image (the margin), as in TorchRay.

    References:
      Fong, Patrick & Vedaldi 2019, §3.2 ("smooth masks", Eq. 6–7); TorchRay
      ``MaskGenerator(shape, step, sigma)``.
    """
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer; got {step}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    step = int(step)
    margin = sigma
    padding = 1 + math.ceil((margin + sigma) / step)
    radius = 1 + math.ceil(sigma / step)
    k = 2 * radius + 1
    shape_in = tuple(math.ceil(z / step) for z in shape)
    shape_mid = tuple(z + 2 * padding - k + 1 for z in shape_in)
    shape_up = tuple(step * z for z in shape_mid)
    shape_out = tuple(z - step + 1 for z in shape_up)
    # float32 arithmetic as in the reference so floor() lands on the same cells
    inv = [np.float32(zm) / np.float32(zo) for zm, zo in zip(shape_mid, shape_up)]
    uy, ux = np.meshgrid(np.arange(shape_out[0], dtype=np.float32),
                         np.arange(shape_out[1], dtype=np.float32), indexing="ij")
    fy = np.floor((inv[0] * uy).astype(np.float32))
    fx = np.floor((inv[1] * ux).astype(np.float32))
    weight = np.zeros((k * k,) + shape_out, np.float32)
    mg = np.float32(margin)
    for ky in range(k):
        for kx in range(k):
            iy = (fy + np.float32(ky - padding)).astype(np.float32)
            ix = (fx + np.float32(kx - padding)).astype(np.float32)
            dy = (uy - (mg + np.float32(step) * iy)).astype(np.float32)
            dx = (ux - (mg + np.float32(step) * ix)).astype(np.float32)
            delta = np.sqrt((dy * dy + dx * dx).astype(np.float32)).astype(np.float32)
            z = np.maximum(delta / np.float32(sigma) - np.float32(0.5), 0).astype(np.float32)
            weight[ky * k + kx] = np.exp(np.float32(-2) * z * z)
    # torch 'nearest' upsampling indices: min(floor(dst · in/out), in − 1) in float32
    idx = []
    for zm, zu, zo in zip(shape_mid, shape_up, shape_out):
        sc = np.float32(zm) / np.float32(zu)
        i = np.floor((np.arange(zo, dtype=np.float32) * sc).astype(np.float32)).astype(np.int64)
        idx.append(np.minimum(i, zm - 1))
    # neighbour j of output pixel u (in the unfolded grid) is parameter idx[u] + j - padding
    sel = [((i[None, :, None] + np.arange(k)[:, None, None] - padding) == np.arange(zi)
            ).astype(np.float32) for i, zi in zip(idx, shape_in)]
    return SmoothMaskGeometry(tuple(shape), step, float(sigma), padding, radius, shape_in,
                              shape_mid, shape_out, int(round(margin)), weight, idx[0], idx[1],
                              sel[0], sel[1])


_NEIGHBOURS = (-4, -2)  # the (ky, kx) axes of a (..., ky, Ho, kx, Wo) neighbourhood stack


@jax.custom_vjp
def _smooth_max(m: Array, coldness: Array) -> Array:
    """``Σ_j m_j·softmax(coldness·m)_j`` over the neighbour axes of ``(..., k, Ho, k, Wo)``."""
    return jnp.sum(m * jax.nn.softmax(coldness * m, axis=_NEIGHBOURS), axis=_NEIGHBOURS)


def _smooth_max_fwd(m, coldness):
    e = jnp.exp(coldness * (m - jnp.max(m, axis=_NEIGHBOURS, keepdims=True)))
    s = e / jnp.sum(e, axis=_NEIGHBOURS, keepdims=True)
    out = jnp.sum(m * s, axis=_NEIGHBOURS)
    return out, (m, s, out, coldness)


def _smooth_max_bwd(res, g):
    # ∂out/∂m_j = s_j·(1 + c·(m_j − out)), ∂out/∂c = Σ_j s_j·m_j·(m_j − out): one pass over the
    # (k², Ho, Wo) stack instead of the generic softmax backward's several
    m, s, out, c = res
    d = m - jnp.expand_dims(out, _NEIGHBOURS)
    gs = jnp.expand_dims(g, _NEIGHBOURS) * s
    return gs * (1 + c * d), jnp.sum(gs * m * d).astype(c.dtype)


_smooth_max.defvjp(_smooth_max_fwd, _smooth_max_bwd)


def smooth_mask(params: Array, geometry: SmoothMaskGeometry, coldness: float = 20.0,
                clamp: bool = True) -> Tuple[Array, Array]:
    """Generate smooth masks from parameters ``(..., h_in, w_in)`` in [0, 1].

    Each pixel takes the smooth max (softmax pooling with temperature ``1/coldness``) over its
    neighbouring parameter cells of ``m_i · k(‖u − u_i‖/σ)``. The neighbourhoods (TorchRay's
    zero-padded ``unfold`` followed by nearest upsampling) are gathered by the 0/1 matrices
    ``select_y``, ``select_x`` of the geometry, which pick exact copies.

    Returns:
      ``(cropped, full)``: the ``(..., H, W)`` mask and the ``(..., Ho, Wo)`` mask with margin
      (the one the area constraint ranks).
    """
    g = geometry
    if params.shape[-2:] != g.shape_in:
        raise ValueError(f"mask parameters must have spatial shape {g.shape_in}; got "
                         f"{params.shape[-2:]}")
    k = 2 * g.radius + 1
    hi = jax.lax.Precision.HIGHEST  # exact copies (no reduced-precision passes on accelerators)
    rows = jnp.einsum("ayr,...rc->...ayc", jnp.asarray(g.select_y), params, precision=hi)
    # up[..., ky, y, kx, x] = params[index_y[y] + ky - padding, index_x[x] + kx - padding]
    up = jnp.einsum("...ayc,bxc->...aybx", rows, jnp.asarray(g.select_x), precision=hi)
    weight = g.weight.reshape(k, k, *g.shape_out).transpose(0, 2, 1, 3)
    m = _smooth_max(jnp.asarray(weight) * up, jnp.asarray(coldness, up.dtype))
    if clamp:
        m = clamp01(m)
    c = g.margin
    return m[..., c:c + g.shape[0], c:c + g.shape[1]], m


# ------------------------------------------------------------------------------------------------
# Meaningful Perturbation (Fong & Vedaldi 2017)

_GAMES = ("deletion", "preservation")


@register("meaningful_perturbation",
          paper="Fong & Vedaldi 2017, Eq. 3-4 (deletion / preservation games)",
          peer="",
          static=("iterations", "mask_size", "blur_sigma", "jitter", "game", "progress"))
def meaningful_perturbation(model: Any, x: Array, target: Array, *, iterations: int = 300,
                            learning_rate=0.1, l1_coeff=1e-4, tv_coeff=1e-2, tv_beta=3.0,
                            mask_size: Any = 28, blur_sigma: float = 10.0, jitter: int = 4,
                            game: str = "deletion", key: Optional[Array] = None,
                            progress: bool = False) -> Explanation:
    """Meaningful Perturbation: the smallest blurred region that deletes (or preserves) a class.

    A low-resolution mask ``m`` (1 = keep) is upsampled bilinearly to the image and blends the
    image with its blurred copy, ``Φ(x₀; m) = m·x₀ + (1 − m)·blur(x₀, σ₀)``. The deletion game
    minimises ``λ₁‖1 − m‖₁ + λ₂ Σ_u|∇m(u)|^β + f_c(Φ(x₀; m))`` and the preservation game
    ``λ₁‖m‖₁ + λ₂ Σ_u|∇m(u)|^β − f_c(Φ(x₀; m))``, where ``f_c`` is the softmax probability of
    the target; each iteration evaluates a randomly translated (jittered) perturbed image. Adam,
    with the mask projected onto [0, 1] after every step, inside one ``lax.scan`` whose rows
    are the images.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits`` that treats the images of a
        batch independently (all masks are optimised as one batch).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      iterations: optimisation steps (static; paper 300).
      learning_rate: Adam step (paper 0.1).
      l1_coeff: λ₁ (paper 1e-4) on the L1 term, summed over the *upsampled* mask's pixels —
        with a mean, or a sum over the 28×28 grid, λ₁ = 1e-4 makes deleting everything free.
      tv_coeff: λ₂ (paper 1e-2), TV summed over the upsampled mask.
      tv_beta: β (paper 3).
      mask_size: learned mask resolution, int or ``(h, w)`` (static; paper 28×28).
      blur_sigma: σ₀ of the blur reference in pixels (static; paper 10), edge-replicated borders.
      jitter: maximum random translation in pixels per iteration (static; 0 disables).
      game: ``"deletion"`` (the paper's main game) or ``"preservation"`` (static).
      key: PRNG key for the jitter (split per image; ``None`` means ``PRNGKey(0)``).
      progress: show a bar of the optimisation steps on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap: the deleted region ``1 − m`` (deletion) or the kept region ``m`` (preservation)
      at input resolution. ``extras``: ``mask`` (upsampled, 1 = keep), ``mask_lowres``, ``loss``
      and ``score`` (target probability of the jittered perturbed image) per iteration
      ``(N, iterations)``, ``final_score`` (target probability of the unjittered final
      perturbation).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.meaningful_perturbation(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]),
      ...                                         iterations=3, mask_size=8)
      >>> ex.heatmap.shape, ex.extras["loss"].shape
      ((1, 32, 32), (1, 3))

    References:
      Fong & Vedaldi, "Interpretable Explanations of Black Boxes by Meaningful Perturbation",
      ICCV 2017: §3 Eq. 3 (deletion game), §4 Eq. 4 (L1 + TV + jitter), blur perturbation §3.
      Deviations: the blur is a constant σ₀ blend with the image (as in the authors' released
      code) rather than a per-pixel σ₀·(1 − m(u)); the mask is initialised to 1 (nothing
      deleted); jitter translates the perturbed image (edges replicated) rather than averaging
      several jitters per step.
    """
    if game not in _GAMES:
        raise ValueError(f"game must be one of {_GAMES}; got {game!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    mh, mw = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
    if mh < 1 or mw < 1:
        raise ValueError(f"mask_size must be positive; got {mask_size}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0 pixels; got {jitter}")
    f = logits_fn(model)
    n, h, w, _ = x.shape
    blurred = gaussian_blur(x, float(blur_sigma), "nearest")
    opt = optax.adam(learning_rate)
    # image i jitters with split(key_i, iterations), key_i = split_key(key, N)[i]
    step_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, iterations))(
        split_key(key, n)), 0, 1)                                   # (iterations, N, ...)
    translate = jax.vmap(functools.partial(random_translate, max_shift=jitter))

    def perturbed(m):
        up = upsample_mask(m, (h, w))
        return up, x * up[..., None] + blurred * (1 - up[..., None])

    def loss(m, ks):
        up, xp = perturbed(m)
        p = class_scores(f(translate(xp, ks)), target, "softmax")
        if game == "deletion":
            obj = l1_coeff * jnp.sum(1 - up, axis=(1, 2)) + p
        else:
            obj = l1_coeff * jnp.sum(up, axis=(1, 2)) - p
        obj = obj + tv_coeff * total_variation(up, tv_beta)
        return jnp.sum(obj), (obj, p)  # row i's gradient is that of its own objective

    def body(state: MaskState, xs):
        ks, i = xs
        tick(i, iterations, f"meaningful_perturbation {game}", progress)
        (_, (l, p)), g = jax.value_and_grad(loss, has_aux=True)(state.mask, ks)
        u, os = opt.update(g, state.opt_state, state.mask)
        m = optax.projections.projection_box(optax.apply_updates(state.mask, u), 0.0, 1.0)
        return MaskState(m, os), (l, p)

    m0 = jnp.ones((n, mh, mw), jnp.float32)
    state, (ls, ps) = jax.lax.scan(body, MaskState(m0, opt.init(m0)),
                                   (step_keys, jnp.arange(iterations) if progress else None))
    m = state.mask
    up, xp = perturbed(m)
    final = class_scores(f(xp), target, "softmax")
    ls, ps = ls.T, ps.T
    heat = 1 - up if game == "deletion" else up
    return Explanation(heatmap=heat, attribution=None,
                       extras={"mask": up, "mask_lowres": m, "loss": ls, "score": ps,
                               "final_score": final},
                       target=target, method="meaningful_perturbation")


# ------------------------------------------------------------------------------------------------
# Extremal Perturbation (Fong, Patrick & Vedaldi 2019)

_VARIANTS = ("preserve", "delete", "dual")
_REWARDS = ("simple", "contrastive")


def _class_reward(y: Array, t: Array, kind: str) -> Array:
    """Reward of row ``i`` of the logits ``y`` ``(B, classes)`` for its target ``t[i]``."""
    rows = jnp.arange(y.shape[0])
    if kind == "simple":
        return class_scores(y, t)
    others = y.at[rows, t].set(-100.0)  # TorchRay's contrastive_reward
    return class_scores(y, t) - jnp.max(others, axis=1)


def _area_counts(areas: Tuple[float, ...], size: int) -> Tuple[int, ...]:
    """How many of ``size`` ranked mask values the reference ``r_a`` sets to 1 (TorchRay:
    ``reference[:int(size·(1 − a))] = 0``, the rest 1)."""
    return tuple(size - int(size * (1 - a)) for a in areas)


def _ranked_reference(full: Array, counts: Array, max_count: int) -> Array:
    """The area reference of Eq. 8 put back in pixel order: ``r[pos(u)]`` for every pixel ``u``,
    where ``pos`` is the rank of ``full[u]`` in its row (ascending, ties in pixel order, i.e. a
    stable sort). Row ``i`` has ones on its ``counts[i]`` largest values and zeros elsewhere, so
    ``mean((sort(m) − r)²) = mean((m − r∘pos)²)`` and its gradient is the same, with a top-k
    (a partial sort, no gradient) instead of a full differentiable sort.

    Args:
      full: ``(B, P)`` mask values.
      counts: ``(B,)`` int, ones per row (at most ``max_count``).
      max_count: static bound on ``counts``.
    """
    b, size = full.shape
    # top_k takes the lower index among equal values; on the reversed row that is the larger
    # pixel index, the one a stable ascending sort ranks higher
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(full)[:, ::-1], max_count)
    ones = (jnp.arange(max_count) < counts[:, None]).astype(full.dtype)
    return jnp.zeros_like(full).at[jnp.arange(b)[:, None], size - 1 - idx].set(ones)


@register("extremal_perturbation",
          paper="Fong, Patrick & Vedaldi 2019, Eq. 5-8 (area constraint, smooth masks)",
          peer="TorchRay extremal_perturbation",
          static=("areas", "max_iter", "num_levels", "max_blur", "step", "sigma", "jitter",
                  "variant", "reward", "progress"))
def extremal_perturbation(model: Any, x: Array, target: Array, *,
                          areas: Sequence[float] = (0.1,), max_iter: int = 800,
                          num_levels: int = 8, max_blur: float = 20.0, step: int = 7,
                          sigma: float = 21.0, jitter: bool = True, variant: str = "preserve",
                          reward: str = "simple", learning_rate=0.01, momentum=0.9,
                          regul_weight=300.0, regul_growth=1.0035,
                          progress: bool = False) -> Explanation:
    """Extremal Perturbation: the smooth mask of a fixed area that best preserves a class.

    For each area ``a`` a smooth mask ``m_a = smax(params)`` (§3.2) selects, per pixel, a level
    of a blur pyramid (1 = the image, 0 = blurred with σ = ``max_blur``); the objective is the
    reward (the target logit, or for ``variant="delete"`` its negative, for ``"dual"`` the
    difference between the preserved and the deleted image) minus the area constraint
    ``λ_t·‖sort(vec m_a) − r_a‖²/|m_a|`` (Eq. 8; ``r_a`` has a fraction ``a`` of ones, the
    ranking loss), with ``λ_t = regul_weight·regul_growth^t``. The input is flipped horizontally
    at every even iteration (the reference code's jitter). SGD with momentum 0.9 and dampening
    0.9 (PyTorch semantics, :func:`heavy_ball`), parameters clamped to [0, 1], all inside one
    ``lax.scan`` whose rows are the (image, area) pairs. Defaults are those of the reference
    implementation (TorchRay).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits`` that treats the images of a
        batch independently (all masks are optimised as one batch).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      areas: target areas in (0, 1], a tuple (static); one mask per area.
      max_iter: iterations (static; 800).
      num_levels: blur pyramid levels (static; 8).
      max_blur: σ of the most blurred level in pixels (static; 20).
      step: parameter grid spacing in pixels (static; 7).
      sigma: smooth-mask bump radius in pixels (static; 21).
      jitter: flip the perturbed images at even iterations (static; True).
      variant: ``"preserve"``, ``"delete"`` or ``"dual"`` (static).
      reward: ``"simple"`` (target logit) or ``"contrastive"`` (target logit minus the largest
        other logit) (static).
      learning_rate, momentum: SGD (0.01, 0.9; dampening = momentum).
      regul_weight, regul_growth: area-constraint weight and its growth per iteration
        (300, 1.0035).
      progress: show a bar of the optimisation steps (all areas and images run together) on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap: the sum of the masks over ``areas`` ``(N, H, W)``. ``extras``: ``masks``
      ``(N, A, H, W)`` (the masks after the last update), ``areas``, ``reward`` and ``regul``
      ``(N, max_iter, A)`` per iteration (the energy curves), and ``loss`` ``(N, max_iter)``
      (the minimised ``−Σ_a(reward + regul)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.extremal_perturbation(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]),
      ...                                       max_iter=2, areas=(0.1, 0.2))
      >>> ex.extras["masks"].shape
      (1, 2, 32, 32)

    References:
      Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations and
      Smooth Masks", ICCV 2019: §3.1 Eq. 5 (area-constrained objective), §3.2 Eq. 6–7 (smooth
      max masks), §3.3 Eq. 8 (area loss via ranking), and TorchRay
      ``torchray.attribution.extremal_perturbation`` (defaults, optimiser, jitter).
      Deviations: the returned masks are those of the final parameters (TorchRay returns the
      mask evaluated in its last iteration, i.e. before the last update); ties in the area
      ranking are broken by pixel order (a stable sort), PyTorch's CPU sort is unstable.
      TorchRay 1.0.0.2 has no ``max_volume`` option; the pyramid's strongest blur is
      ``max_blur``.
    """
    if isinstance(areas, (int, float)):
        areas = (float(areas),)
    areas = tuple(float(a) for a in areas)
    if not areas or any(not 0 < a <= 1 for a in areas):
        raise ValueError(f"areas must be fractions in (0, 1]; got {areas}")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}; got {variant!r}")
    if reward not in _REWARDS:
        raise ValueError(f"reward must be one of {_REWARDS}; got {reward!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    f = logits_fn(model)
    n, h, w, _ = x.shape
    geom = smooth_mask_geometry((h, w), step, float(sigma))
    k = len(areas)
    counts = _area_counts(areas, int(np.prod(geom.shape_out)))

    # row i * k + j: image i, area j. A sharded call with fewer images than devices splits
    # the rows over the devices (xaijax.sharding.shard_inner); a larger one keeps each image's
    # rows on the image's device
    b = n * k
    t_rows = shard_inner(jnp.repeat(target, k))
    count_rows = shard_inner(jnp.tile(jnp.asarray(counts, jnp.int32), n))
    # one pyramid per image, shared by its areas (the same array for every row of the image)
    pyr = jax.vmap(lambda xi: blur_pyramid(xi, num_levels, float(max_blur)))(x)
    pyr = shard_inner(jnp.repeat(pyr, k, axis=0))                     # (B, L, H, W, C)
    opt = heavy_ball(learning_rate, momentum, momentum)

    def energy(p, t):
        mask_, full = smooth_mask(p, geom)
        if variant == "preserve":
            xs = apply_pyramid(pyr, mask_)
        elif variant == "delete":
            xs = apply_pyramid(pyr, 1 - mask_)
        else:  # each row's preserved and deleted image side by side (rows stay on their device)
            xs = jnp.stack([apply_pyramid(pyr, mask_), apply_pyramid(pyr, 1 - mask_)], 1)
            xs = xs.reshape((2 * b,) + xs.shape[2:])
        if jitter:
            xs = jnp.where(t % 2 == 0, xs[:, :, ::-1, :], xs)
        y = f(xs)
        if variant == "preserve":
            r = _class_reward(y, t_rows, reward)
        elif variant == "delete":
            r = -_class_reward(y, t_rows, reward)
        else:
            y = y.reshape((b, 2) + y.shape[1:])
            r = _class_reward(y[:, 0], t_rows, reward) - _class_reward(y[:, 1], t_rows, reward)
        lam = regul_weight * jnp.power(regul_growth, t.astype(jnp.float32))
        full = full.reshape(b, -1)
        ref = _ranked_reference(full, count_rows, max(counts))
        regul = -jnp.mean((full - ref) ** 2, axis=1) * lam
        return -jnp.sum(r + regul), (r, regul)  # row i's gradient is its own energy's

    def body(state: MaskState, t):
        tick(t, max_iter, "extremal_perturbation steps", progress)
        (_, (r, regul)), g = jax.value_and_grad(energy, has_aux=True)(state.mask, t)
        u, os = opt.update(g, state.opt_state, state.mask)
        p = optax.projections.projection_box(optax.apply_updates(state.mask, u), 0.0, 1.0)
        return MaskState(p, os), (r, regul)

    # behind a barrier: with max_iter=1 the scan is unrolled and XLA would constant-fold the
    # first step's mask and area ranking from the constant start (~10 s of compile at 32 px)
    p0 = shard_inner(jax.lax.optimization_barrier(jnp.ones((b,) + geom.shape_in, jnp.float32)))
    state, (rs, regs) = jax.lax.scan(body, MaskState(p0, opt.init(p0)), jnp.arange(max_iter))
    masks = smooth_mask(state.mask, geom)[0].reshape(n, k, h, w)
    rs = jnp.moveaxis(rs.reshape(max_iter, n, k), 1, 0)                 # (N, max_iter, A)
    regs = jnp.moveaxis(regs.reshape(max_iter, n, k), 1, 0)
    es = -jnp.sum(rs + regs, axis=-1)                                   # (N, max_iter)
    return Explanation(heatmap=jnp.sum(masks, axis=1), attribution=None,
                       extras={"masks": masks, "areas": jnp.asarray(areas, jnp.float32),
                               "reward": rs, "regul": regs, "loss": es},
                       target=target, method="extremal_perturbation")
