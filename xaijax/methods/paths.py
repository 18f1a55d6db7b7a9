"""Path and region methods of the PAIR saliency family: Guided IG, Blur IG and XRAI.

* :func:`guided_ig` — Guided Integrated Gradients (Kapishnikov et al. 2021): an adaptive path
  from the baseline to the input that, at each step, moves only the features whose gradient is
  smallest in magnitude, staying within ``max_dist`` of the straight line.
* :func:`blur_ig` — Blur IG (Xu et al. 2020): IG along the path of increasingly blurred images,
  from the input to a maximally blurred baseline.
* :func:`xrai` — XRAI (Kapishnikov et al. 2019): integrated-gradient attributions summed over
  over-segmented image regions, the regions ranked greedily by attribution density.
* :func:`felzenszwalb` — the graph-based over-segmentation XRAI uses (Felzenszwalb &
  Huttenlocher 2004), computed in JAX by a parallel (Borůvka-style) merge.

All four need only ``f(x) -> logits``. Option names and defaults are those of PAIR's
``saliency.core`` (``GuidedIG``, ``BlurIG``, ``XRAI``), with the deviations stated per method.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import (Explanation, check_choice, check_positive_int, input_gradient,
                                 logits_fn, register, target_scores)
from xaijax.methods.gradient import (IG_BASELINES, IG_METHODS, chunked_sum, gaussian_blur,
                                     call_chunk, heatmap_sum, make_baseline, path_points,
                                     per_item)
from xaijax.models.base import Model

Array = jax.Array

_EPS = 1e-9  # PAIR's tolerance for "the step's L1 target is reached" (relative and absolute)


def _check_real(value: Any, name: str, method: str, lo: float = -np.inf, hi: float = np.inf,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float in the interval, or a ValueError naming method and option."""
    try:
        v = float(np.asarray(value))
    except (TypeError, ValueError):
        raise ValueError(f"method {method!r}: {name} must be a real number; got {value!r}"
                         ) from None
    bad = (not np.isfinite(v) or v < lo or v > hi or (lo_open and v == lo)
           or (hi_open and v == hi))
    if bad:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"method {method!r}: {name} must lie in {lb}{lo:g}, {hi:g}{rb}; got "
                         f"{value!r}")
    return v


def _baseline_of(model: Any, x: Array, baseline: str, baseline_array: Optional[Array]
                 ) -> Array:
    if baseline_array is not None:
        return jnp.broadcast_to(jnp.asarray(baseline_array, x.dtype), x.shape)
    return make_baseline(model, x, baseline)


# ------------------------------------------------------------------------------------------------
# Guided IG


class _GuidedState(NamedTuple):
    """The carry of one Guided IG step's inner loop (one image, features flattened)."""

    x: Array        # (D,) the current point of the path
    attr: Array     # (D,) attribution accumulated so far
    gamma: Array    # () PAIR's γ; the loop runs while γ > 1
    it: Array       # () inner iterations done


def _guided_step(x: Array, attr: Array, g: Array, x_in: Array, x_base: Array, step: Array,
                 steps: int, fraction: Array, max_dist: Array, l1_total: Array,
                 max_inner: int) -> Tuple[Array, Array]:
    """One Guided IG step of one image: move the lowest-|gradient| features toward the input
    until the L1 distance to the input is ``l1_total · (1 − (step+1)/steps)``.

    Kapishnikov et al. 2021, Algorithm 1: the features are moved by whole fractions (those
    selected reach the upper edge ``x_max`` of the allowed band) until the remaining gap is
    smaller than what the selection can close; the last selection then moves by the fraction γ.
    Features left behind the lower edge ``x_min`` of the band are first pulled up to it."""
    dt = x.dtype
    alpha = (step + 1).astype(dt) / steps
    a_min = jnp.maximum(alpha - max_dist, 0.0)
    a_max = jnp.minimum(alpha + max_dist, 1.0)
    diff = x_in - x_base
    x_min = x_base + diff * a_min
    x_max = x_base + diff * a_max
    l1_target = l1_total * (1.0 - (step + 1).astype(dt) / steps)
    d = x.shape[0]
    q = jnp.floor(fraction.astype(dt) * (d - 1)).astype(jnp.int32)  # numpy's "lower" quantile
    moving = diff != 0

    def cond(s: _GuidedState):
        return (s.gamma > 1.0) & (s.it < max_inner)

    def body(s: _GuidedState):
        x_old = s.x
        a = jnp.where(moving, (s.x - x_base) / jnp.where(moving, diff, 1.0), a_max)
        x = jnp.where(a < a_min, x_min, s.x)
        l1 = jnp.sum(jnp.abs(x - x_in))
        close = jnp.abs(l1_target - l1) <= jnp.maximum(
            _EPS * jnp.maximum(jnp.abs(l1_target), jnp.abs(l1)), _EPS)
        ga = jnp.where(x == x_max, jnp.inf, jnp.abs(g))
        thr = jnp.sort(ga)[q]
        sel = (ga <= thr) & (ga != jnp.inf)
        l1_sel = jnp.sum(jnp.where(sel, jnp.abs(x - x_max), 0.0))
        gamma = jnp.where(l1_sel > 0, (l1 - l1_target) / jnp.where(l1_sel > 0, l1_sel, 1.0),
                          jnp.inf)
        moved = jnp.where(gamma > 1.0, x_max, x + (x_max - x) * gamma)
        x = jnp.where(close, x, jnp.where(sel, moved, x))
        gamma = jnp.where(close, 0.0, gamma)
        return _GuidedState(x, s.attr + (x - x_old) * g, gamma.astype(dt), s.it + 1)

    s = jax.lax.while_loop(cond, body, _GuidedState(x, attr, jnp.asarray(jnp.inf, dt),
                                                    jnp.asarray(0, jnp.int32)))
    return s.x, s.attr


def _validate_guided_ig(model, x, o):
    m = "guided_ig"
    check_positive_int(o.get("steps", 1), "steps", m, "path steps")
    if "fraction" in o:
        _check_real(o["fraction"], "fraction", m, 0.0, 1.0, lo_open=True)
    if "max_dist" in o:
        _check_real(o["max_dist"], "max_dist", m, 0.0, 1.0)
    if o.get("baseline_array") is None:
        check_choice(o.get("baseline", "zeros"), IG_BASELINES, "baseline", m)
    check_positive_int(o.get("max_inner", 1), "max_inner", m, "inner iterations per step")


@register("guided_ig", static=("steps", "baseline", "max_inner"), signed=True,
          validate=_validate_guided_ig,
          paper="Kapishnikov et al. 2021, Eq. 4 / Algorithm 1 (Guided IG, bounded by max_dist)",
          peer="PAIR saliency GuidedIG")
def guided_ig(model: Any, x: Array, target: Array, *, steps: int = 200, fraction: float = 0.25,
              max_dist: float = 0.02, baseline: str = "zeros",
              baseline_array: Optional[Array] = None, max_inner: int = 10000) -> Explanation:
    """Guided Integrated Gradients: IG along an adaptive path that moves low-gradient features
    first.

    .. math::

        φ_i = Σ_{k=1}^{steps} (x^{(k)}_i − x^{(k-1)}_i) · ∂S_c(x^{(k-1)})/∂x_i

    where ``x^{(0)}`` is the baseline and step ``k`` moves features from ``x^{(k-1)}`` toward
    the input until the L1 distance to the input is ``(1 − k/steps)`` of the total: repeatedly,
    the ``fraction`` of features with the smallest ``|∂S_c/∂x_i|`` (at ``x^{(k-1)}``) moves to
    the upper edge of the band ``α ∈ [k/steps − max_dist, k/steps + max_dist]`` around the
    straight line (features behind the band's lower edge are pulled up to it), the last move by
    the fraction that closes the gap exactly. ``max_dist = 0`` is IG on the straight line;
    ``max_dist = 1`` is unbounded Guided IG. The steps are a ``lax.scan`` (one gradient of the
    batch per step); the inner moves a ``lax.while_loop`` per image (``vmap``).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      steps: path steps (static; PAIR ``x_steps=200``).
      fraction: fraction of the features (all of ``H·W·C``) moved per selection, in (0, 1]
        (PAIR 0.25).
      max_dist: the largest deviation from the straight line, as a fraction of the path, in
        [0, 1] (PAIR 0.02).
      baseline: ``"zeros"`` (PAIR's default), ``"black"``, ``"blur"`` or ``"uniform"``, see
        :func:`xaijax.methods.gradient.make_baseline` (static).
      baseline_array: your own baseline ``(H, W, C)`` or ``(N, H, W, C)`` (traced).
      max_inner: a safety bound on the selections per step (static; PAIR has none: its inner
        loop ends after at most about ``1/fraction + 1`` selections).

    Returns:
      attribution ``(N, H, W, C)`` (PAIR's mask); heatmap its signed channel sum;
      ``extras["delta"]`` the completeness error ``Σ_i φ_i − (S_c(x) − S_c(x'))`` ``(N,)``,
      ``extras["baseline"]`` the baselines.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.guided_ig(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), steps=4).heatmap.shape
      (1, 32, 32)

    References:
      Kapishnikov, Venugopalan, Avci, Wedin, Terry & Bolukbasi 2021, "Guided Integrated
      Gradients: an Adaptive Path Method for Removing Noise", §3, Eq. 4 and Algorithm 1; PAIR
      ``saliency.core.GuidedIG`` (same algorithm, same defaults).
    """
    f = logits_fn(model)
    b = _baseline_of(model, x, baseline, baseline_array)
    n = x.shape[0]
    dt = x.dtype
    x_in = x.reshape(n, -1)
    x_b = b.reshape(n, -1)
    l1_total = jnp.sum(jnp.abs(x_in - x_b), axis=1)
    fraction = jnp.asarray(fraction, dt)
    max_dist = jnp.asarray(max_dist, dt)
    step_fn = jax.vmap(_guided_step, in_axes=(0, 0, 0, 0, 0, None, None, None, None, 0, None))

    def one(carry, step):
        xc, attr = carry
        g = input_gradient(f, xc.reshape(x.shape), target).reshape(n, -1)
        xc, attr = step_fn(xc, attr, g, x_in, x_b, step, steps, fraction, max_dist, l1_total,
                           max_inner)
        return (xc, attr), None

    (_, attr), _ = jax.lax.scan(one, (x_b, jnp.zeros_like(x_in)),
                                jnp.arange(steps, dtype=jnp.int32))
    attr = attr.reshape(x.shape)
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (target_scores(f(x), target)
                                             - target_scores(f(b), target))
    return Explanation(heatmap=heatmap_sum(attr), attribution=attr,
                       extras={"delta": delta, "baseline": b}, target=target, method="guided_ig")


# ------------------------------------------------------------------------------------------------
# Blur IG


def blur_sigmas(max_sigma: float, steps: int, sqrt: bool = False) -> np.ndarray:
    """PAIR's σ schedule of Blur IG: ``σ_i = i·max_sigma/steps`` (``i = 0..steps``), or its
    square root ``σ_i = √(i·max_sigma/steps)`` with ``sqrt=True``. float64, length
    ``steps + 1``."""
    s = np.arange(steps + 1, dtype=np.float64) * float(max_sigma) / float(steps)
    return np.sqrt(s) if sqrt else s


def _kernel_rows(sigmas: np.ndarray, truncate: float = 4.0) -> np.ndarray:
    """``(K, 3)`` rows ``(σ, radius, 1/Σ kernel)`` of ``scipy.ndimage.gaussian_filter``'s 1-D
    kernels: ``exp(−t²/2σ²)`` for ``|t| ≤ int(truncate·σ + 0.5)``, normalised to sum 1 (σ = 0:
    the identity)."""
    rows = []
    for s in np.asarray(sigmas, np.float64):
        r = int(truncate * s + 0.5)
        if s <= 0 or r == 0:
            rows.append((0.0, 0.0, 1.0))
            continue
        t = np.arange(-r, r + 1, dtype=np.float64)
        rows.append((s, float(r), 1.0 / np.exp(-0.5 / (s * s) * t * t).sum()))
    return np.asarray(rows, np.float64)


def _blur_matrix(n: int, row: Array) -> Array:
    """``(n, n)`` Gaussian blur with zeros outside (scipy ``mode="constant"``) for one kernel
    row of :func:`_kernel_rows` (traced, so every σ of the path shares one program)."""
    s, r, inv = row[0], row[1], row[2]
    d = (jnp.arange(n)[:, None] - jnp.arange(n)[None, :]).astype(row.dtype)
    safe = jnp.where(s > 0, s, 1.0)
    k = jnp.exp(-0.5 / (safe * safe) * d * d) * inv
    k = jnp.where(jnp.abs(d) <= r, k, 0.0)
    return jnp.where(s > 0, k, jnp.eye(n, dtype=row.dtype))


def _blur(x: Array, row: Array) -> Array:
    """Separable blur of ``(N, H, W, C)`` images with one kernel row (H then W)."""
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ij,njwc->niwc", _blur_matrix(x.shape[1], row), x, precision=hi)
    return jnp.einsum("ij,nhjc->nhic", _blur_matrix(x.shape[2], row), y, precision=hi)


def _validate_blur_ig(model, x, o):
    m = "blur_ig"
    check_positive_int(o.get("steps", 1), "steps", m, "path steps")
    _check_real(o.get("max_sigma", 1.0), "max_sigma", m, 0.0, lo_open=True)
    _check_real(o.get("grad_step", 1.0), "grad_step", m, 0.0, lo_open=True)
    if not isinstance(o.get("sqrt", False), (bool, np.bool_)):
        raise ValueError(f"method {m!r}: sqrt must be a bool; got {o['sqrt']!r}")
    if o.get("internal_batch_size") is not None:
        check_positive_int(o["internal_batch_size"], "internal_batch_size", m,
                           "path points per forward/backward pass")


@register("blur_ig", static=("steps", "max_sigma", "grad_step", "sqrt", "internal_batch_size"),
          signed=True, validate=_validate_blur_ig,
          paper="Xu, Venugopalan & Sundararajan 2020, Eq. 3 (Blur IG)",
          peer="PAIR saliency BlurIG")
def blur_ig(model: Any, x: Array, target: Array, *, max_sigma: float = 50.0, steps: int = 100,
            grad_step: float = 0.01, sqrt: bool = False,
            internal_batch_size: Optional[int] = None
            ) -> Explanation:
    """Blur IG: integrated gradients along the path of increasingly blurred inputs.

    .. math::

        φ_i = −Σ_{k=0}^{steps−1} (σ_{k+1} − σ_k) · \\frac{L(x, σ_k + h) − L(x, σ_k)}{h}_i
              · ∂S_c(L(x, σ_k))/∂x_i

    with ``L(x, σ)`` the Gaussian blur of ``x`` with standard deviation ``σ`` pixels (per
    channel, zeros outside the image: scipy ``gaussian_filter(..., mode="constant")``,
    ``truncate=4``), the schedule ``σ_k = k·max_sigma/steps`` (``sqrt``: its square root, i.e.
    uniform steps in the scale ``σ²`` that the paper's heat-equation parametrisation uses) and
    the forward difference of step ``h = grad_step`` for ``∂L/∂σ``. The sum telescopes:
    ``Σ_i φ_i ≈ S_c(x) − S_c(L(x, max_sigma))`` (completeness w.r.t. the blurred baseline).
    The σ's are evaluated ``internal_batch_size`` at a time (a ``lax.scan`` over chunks);
    the blur is two small matrix products per σ (a traced kernel, so one program for the
    whole path).

    Each step uses its own ``σ_{k+1} − σ_k``. (PAIR ``BlurIG`` with ``batch_size > 1`` and
    ``sqrt=True`` weights a whole batch of steps by the last step's spacing; with its default
    ``batch_size=1``, which the parity test uses, the two agree.)

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      max_sigma: σ of the baseline, in pixels (static: it decides the kernels; PAIR 50).
      steps: number of path steps (static; PAIR 100).
      grad_step: ``h`` of the finite difference (static; PAIR 0.01).
      sqrt: square-root σ spacing (static; PAIR False).
      internal_batch_size: σ values per forward/backward pass (static; default as many as
        keep a pass at 64 images, :func:`xaijax.methods.gradient.call_chunk`).

    Returns:
      attribution ``(N, H, W, C)`` (PAIR's mask); heatmap its signed channel sum;
      ``extras["delta"]`` the completeness error ``Σ_i φ_i − (S_c(x) − S_c(L(x, max_sigma)))``
      and ``extras["baseline"]`` the maximally blurred images.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.blur_ig(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), steps=4).heatmap.shape
      (1, 32, 32)

    References:
      Xu, Venugopalan & Sundararajan 2020, "Attribution in Scale and Space", CVPR, §3 (Eq. 3,
      the blur path integral); PAIR ``saliency.core.BlurIG`` (σ schedule, finite difference).
    """
    f = logits_fn(model)
    sig = blur_sigmas(max_sigma, steps, sqrt)
    lo = _kernel_rows(sig[:-1])
    hi = _kernel_rows(sig[:-1] + float(grad_step))
    dsig = np.diff(sig)[:, None]
    rows = jnp.asarray(np.concatenate([lo, hi, dsig], axis=1), x.dtype)  # (steps, 7)
    h = jnp.asarray(grad_step, x.dtype)

    def points(r):  # (K, 7) kernel rows -> (K, N, H, W, C) path terms
        xs = jax.vmap(lambda row: _blur(x, row[0:3]))(r)
        dl = (jax.vmap(lambda row: _blur(x, row[3:6]))(r) - xs) / h
        g = per_item(lambda z, t: input_gradient(f, z, t), xs, target)
        return r[:, 6, None, None, None, None] * dl * g

    attr = -chunked_sum(points, rows, call_chunk(internal_batch_size, rows.shape[0], x.shape[0]))
    b = _blur(x, jnp.asarray(_kernel_rows(sig[-1:])[0], x.dtype))
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (target_scores(f(x), target)
                                             - target_scores(f(b), target))
    return Explanation(heatmap=heatmap_sum(attr), attribution=attr,
                       extras={"delta": delta, "baseline": b}, target=target, method="blur_ig")


# ------------------------------------------------------------------------------------------------
# Felzenszwalb segmentation (parallel merge)


def _grid_edges(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """The 8-connected pixel graph of an ``h × w`` grid: ``(u, v)`` flat indices of the right,
    down, down-right and up-right neighbours (skimage's four edge directions)."""
    idx = np.arange(h * w).reshape(h, w)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :]),
             (idx[:-1, :-1], idx[1:, 1:]), (idx[1:, :-1], idx[:-1, 1:])]
    u = np.concatenate([a.ravel() for a, _ in pairs]).astype(np.int32)
    v = np.concatenate([b.ravel() for _, b in pairs]).astype(np.int32)
    return u, v


def _hook(comp: Array, w: Array, u: Array, v: Array, ok: Array, chooser: Array
          ) -> Tuple[Array, Array, Array]:
    """One Borůvka round: every component ``c`` with ``chooser[c]`` joins the neighbour across
    its lightest edge among ``ok`` (ties by edge index: a strict order, so the only cycles are
    pairs, kept rooted at the smaller id); the result is flattened by pointer jumping.

    Returns ``(new comp per pixel, hooked per component, the hooking edge's weight per
    component)``."""
    p = comp.shape[0]
    e = w.shape[0]
    cu, cv = comp[u], comp[v]
    big = jnp.asarray(jnp.inf, w.dtype)
    wm = jnp.where(ok, w, big)
    wmin = jnp.minimum(jax.ops.segment_min(wm, cu, p), jax.ops.segment_min(wm, cv, p))
    eid = jnp.arange(e, dtype=jnp.int32)
    eu = jnp.where(ok & (wm == wmin[cu]), eid, e)
    ev = jnp.where(ok & (wm == wmin[cv]), eid, e)
    emin = jnp.minimum(jax.ops.segment_min(eu, cu, p), jax.ops.segment_min(ev, cv, p))
    ids = jnp.arange(p, dtype=jnp.int32)
    has = (emin < e) & chooser
    es = jnp.minimum(emin, e - 1)
    other = jnp.where(cu[es] == ids, cv[es], cu[es])
    parent = jnp.where(has, other, ids)
    mutual = (parent[parent] == ids) & (ids < parent)
    parent = jnp.where(mutual, ids, parent)
    hooked = parent != ids

    def jump(c):
        par, _ = c
        nxt = par[par]
        return nxt, jnp.any(nxt != par)

    parent, _ = jax.lax.while_loop(lambda c: c[1], jump, (parent, jnp.asarray(True)))
    return parent[comp], hooked, jnp.where(hooked, w[es], 0.0)


def felzenszwalb(image: Array, scale: float = 1.0, sigma: float = 0.8, min_size: int = 20,
                 batches: int = 256, max_rounds: int = 64) -> Tuple[Array, Array]:
    """Felzenszwalb–Huttenlocher graph segmentation of one ``(H, W, C)`` image, in JAX.

    The graph is the 8-connected pixel grid of the image smoothed by a Gaussian of ``sigma``
    (reflecting edges), weighted by the colour distance ``‖I_p − I_q‖₂``. Components ``C₁, C₂``
    merge across an edge ``w`` when ``w < min(Int(C₁) + k/|C₁|, Int(C₂) + k/|C₂|)``
    (Felzenszwalb & Huttenlocher 2004, Eq. 3–5; ``Int`` the largest edge merged so far,
    ``k = scale/255`` as skimage), then components smaller than ``min_size`` join a neighbour.

    The paper merges edge by edge in increasing weight, a sequential union-find. Here the
    edges, sorted by weight, are cut into ``batches`` consecutive groups, visited in order (a
    ``lax.scan``); within a group the merges run in parallel rounds (Borůvka, a
    ``lax.while_loop`` of at most ``max_rounds``): every component joins the neighbour across
    its lightest edge of the group that meets the criterion (with the statistics at the start
    of the round), and ``Int`` of the union is the largest of the parts' ``Int`` and of the
    joining edges; rounds repeat until no edge of the group qualifies. Visiting the weights in
    order is what keeps the criterion's ``k/|C|`` meaningful (merging all light edges at once
    lets singletons chain across the whole image). The small-component pass is the same
    Borůvka loop over all edges, each component smaller than ``min_size`` joining across its
    lightest edge. Segments are connected and cover the image; they are not skimage's
    segments pixel for pixel (on ``skimage.data.astronaut`` at 224², scales 50/150/500/1200:
    88/74/58/33 segments here, 68/73/58/33 in skimage).

    Args:
      image: ``(H, W, C)`` float image.
      scale: ``k`` of the merge criterion ×255 (larger: fewer, larger segments).
      sigma: Gaussian pre-smoothing in pixels (static).
      min_size: smallest segment size (traced).
      batches: number of weight-ordered edge groups (static; 1: fully parallel).
      max_rounds: bound on the merge rounds of each phase (static).

    Returns:
      ``(labels, n)``: ``(H, W)`` int32 labels in ``[0, n)``, and the number of segments ``n``.

    Examples:
      >>> import jax.numpy as jnp
      >>> img = jnp.zeros((8, 8, 3)).at[:, 4:].set(1.0)
      >>> labels, n = felzenszwalb(img, scale=1.0, sigma=0.0, min_size=2)
      >>> int(n)
      2

    References:
      Felzenszwalb & Huttenlocher 2004, "Efficient Graph-Based Image Segmentation", IJCV, §3–4;
      skimage ``segmentation.felzenszwalb`` (the parameters and 8-connectivity).
    """
    h, w_, c = image.shape
    p = h * w_
    img = gaussian_blur(image[None], sigma)[0] if sigma > 0 else image
    u_np, v_np = _grid_edges(h, w_)
    u, v = jnp.asarray(u_np), jnp.asarray(v_np)
    flat = img.reshape(p, c)
    wt = jnp.sqrt(jnp.sum((flat[u] - flat[v]) ** 2, axis=-1))
    k = jnp.asarray(scale, wt.dtype) / 255.0
    ids = jnp.arange(p, dtype=jnp.int32)
    one = jnp.ones((p,), wt.dtype)

    # edges in increasing weight, cut into `batches` consecutive groups (padding: weight inf)
    e = wt.shape[0]
    nb = max(1, min(int(batches), e))
    per = -(-e // nb)
    order = jnp.argsort(wt)
    pad = nb * per - e
    ob = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(nb, per)
    live = jnp.concatenate([jnp.ones((e,), bool), jnp.zeros((pad,), bool)]).reshape(nb, per)

    def merge_batch(carry, batch):
        idx, valid = batch
        ub, vb, wb = u[idx], v[idx], wt[idx]

        def merge_round(state):
            comp, cint, _, r = state
            size = jax.ops.segment_sum(one, comp, p)
            cu, cv = comp[ub], comp[vb]
            tu = cint[cu] + k / size[cu]
            tv = cint[cv] + k / size[cv]
            ok = valid & (cu != cv) & (wb < jnp.minimum(tu, tv))
            new, hooked, wh = _hook(comp, wb, ub, vb, ok, jnp.ones((p,), bool))
            # Int of each new root: the largest Int of its parts and of the edges joining them
            # (index c of an old root, comp[c] == c, lands at its new root new[c])
            val = jnp.where(comp == ids, jnp.maximum(cint, wh), 0.0)
            cint = jnp.maximum(jax.ops.segment_max(val, new, p), 0.0)
            return new, cint, jnp.any(hooked), r + 1

        comp, cint = carry
        comp, cint, _, _ = jax.lax.while_loop(cond, merge_round,
                                              (comp, cint, jnp.asarray(True), zero))
        return (comp, cint), None

    def small_round(state):
        comp, cint, _, r = state
        size = jax.ops.segment_sum(one, comp, p)
        cu, cv = comp[u], comp[v]
        ok = (cu != cv) & ((size[cu] < min_size) | (size[cv] < min_size))
        new, hooked, _ = _hook(comp, wt, u, v, ok, size < min_size)
        return new, cint, jnp.any(hooked), r + 1

    def cond(state):
        return state[2] & (state[3] < max_rounds)

    zero = jnp.asarray(0, jnp.int32)
    (comp, cint), _ = jax.lax.scan(merge_batch, (ids, jnp.zeros((p,), wt.dtype)), (ob, live))
    comp, _, _, _ = jax.lax.while_loop(cond, small_round, (comp, cint, jnp.asarray(True), zero))
    is_root = comp == ids
    label_of_root = jnp.cumsum(is_root.astype(jnp.int32)) - 1
    return label_of_root[comp].reshape(h, w_), jnp.sum(is_root.astype(jnp.int32))


def disk(radius: int) -> np.ndarray:
    """``(2r+1, 2r+1)`` boolean disk ``i² + j² ≤ r²`` (skimage ``morphology.disk``)."""
    t = np.arange(-radius, radius + 1)
    return (t[:, None] ** 2 + t[None, :] ** 2) <= radius * radius


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel of a nearest-neighbour resize (pixel centres)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def xrai_segments(x: Array, scale_values: Sequence[float] = (50, 100, 150, 250, 500, 1200),
                  sigma: float = 0.8, min_size: int = 150,
                  resize_image: Optional[Tuple[int, int]] = (224, 224),
                  scale_range: Tuple[float, float] = (-1.0, 1.0), dilation_rad: int = 5,
                  max_rounds: int = 64) -> Array:
    """XRAI's region candidates for one image ``(H, W, C)``: ``(K, H, W)`` boolean masks.

    As PAIR's ``_get_segments_felzenszwalb``: the image is rescaled to ``scale_range`` (by its
    own min and max) and resized to ``resize_image`` (cubic, antialiased; ``None``: kept),
    segmented by :func:`felzenszwalb` at every scale of ``scale_values``, the labels are
    resized back (nearest), each segment becomes a mask, and each mask is dilated by a disk of
    ``dilation_rad`` pixels (0: none). ``K = len(scale_values) · ⌊h·w/min_size⌋`` (the most
    segments a scale can have, ``h × w`` the segmentation size); masks past a scale's segment
    count are empty (XRAI skips them).

    References:
      Kapishnikov, Bolukbasi, Viégas & Terry 2019, "XRAI: Better Attributions Through Regions",
      §3.1 (over-segmentation at several scales, dilated); PAIR ``saliency.core.xrai``.
    """
    h, w, c = x.shape
    lo, hi = scale_range
    mn, mx = jnp.min(x), jnp.max(x)
    im = (x - mn) / jnp.where(mx > mn, mx - mn, 1.0) * (hi - lo) + lo
    sh, sw = (h, w) if resize_image is None else tuple(int(s) for s in resize_image)
    if (sh, sw) != (h, w):
        im = jax.image.resize(im, (sh, sw, c), method="cubic", antialias=True)
    kmax = max(1, (sh * sw) // int(min_size))
    labels = jax.vmap(lambda s: felzenszwalb(im, s, sigma, min_size, max_rounds=max_rounds)[0])(
        jnp.asarray(scale_values, im.dtype))  # (S, sh, sw)
    if (sh, sw) != (h, w):
        labels = labels[:, _nearest_index(sh, h)][:, :, _nearest_index(sw, w)]
    if not dilation_rad:
        masks = labels[:, None] == jnp.arange(kmax, dtype=jnp.int32)[None, :, None, None]
        return masks.reshape(-1, h, w)
    # the dilated mask of segment k holds pixel p when some pixel of the disk around p has label
    # k: one scatter of True per (scale, disk offset, pixel) into (S, K, H, W). A convolution of
    # the K masks with the disk computes the same but allocates im2col buffers of K·H·W·|disk|
    # floats (2004 masks at 224 px: ~48 GB, std::bad_alloc on a 24 GB host)
    r = int(dilation_rad)
    dy, dx = (d.ravel() for d in np.nonzero(disk(r)))
    dy, dx = dy - r, dx - r                                                   # (O,) offsets
    padded = jnp.pad(labels, ((0, 0), (r, r), (r, r)), constant_values=kmax)  # kmax: dropped
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    src = padded[:, r + yy[None] + dy[:, None, None], r + xx[None] + dx[:, None, None]]
    n_s, n_o = labels.shape[0], dy.size
    scale = np.broadcast_to(np.arange(n_s)[:, None, None, None], (n_s, n_o, h, w))
    rows = np.broadcast_to(yy, (n_s, n_o, h, w))
    cols = np.broadcast_to(xx, (n_s, n_o, h, w))
    masks = jnp.zeros((n_s, kmax, h, w), bool).at[scale, src, rows, cols].set(True, mode="drop")
    return masks.reshape(-1, h, w)


# ------------------------------------------------------------------------------------------------
# XRAI


class _XraiState(NamedTuple):
    """The carry of XRAI's greedy region selection (one image, pixels flattened)."""

    covered: Array   # (P,) bool: pixels of the regions chosen so far
    alive: Array     # (K,) bool: candidate regions still considered
    step: Array      # (P,) int32: the selection step that added each pixel (-1: none)
    gains: Array     # (K,) gain of the region added at each step (-inf: no step)
    n: Array         # () regions added
    done: Array      # () no candidate left


def _finish(attr: Array, s: _XraiState) -> Tuple[Array, Array, Array]:
    """XRAI's map and ranks from the selection: each added region's pixels get its gain, the
    rest (never covered) the mean attribution over them; ranks 1, 2, ... order the added
    regions by decreasing gain (ties: selection order), the uncovered rest ranked last."""
    k = s.gains.shape[0]
    valid = jnp.arange(k) < s.n
    key = jnp.where(valid, -s.gains, jnp.inf)
    order = jnp.argsort(key, stable=True)
    rank_of_step = jnp.zeros((k,), jnp.int32).at[order].set(jnp.arange(1, k + 1, dtype=jnp.int32))
    rest = s.step < 0
    cnt = jnp.sum(rest)
    rest_gain = jnp.sum(jnp.where(rest, attr, 0.0)) / jnp.maximum(cnt, 1)
    st = jnp.maximum(s.step, 0)
    heat = jnp.where(rest, rest_gain, s.gains[st])
    ranks = jnp.where(rest, s.n + 1, rank_of_step[st])
    return heat, ranks, s.n


def _xrai_full(attr: Array, masks: Array, area_threshold: Array, min_pixel_diff: Array
               ) -> Tuple[Array, Array]:
    """XRAI's greedy selection (Kapishnikov et al. 2019, §3.2, Algorithm 1) of one image:
    ``attr`` ``(P,)``, ``masks`` ``(K, P)`` float 0/1. While the covered area is at most
    ``area_threshold``: drop candidates adding fewer than ``min_pixel_diff`` new pixels, add the
    one whose new pixels have the highest mean attribution. A ``lax.while_loop`` of at most
    ``K`` steps, two matrix-vector products per step."""
    k, p = masks.shape
    hi = jax.lax.Precision.HIGHEST

    def cond(s: _XraiState):
        return (~s.done) & (jnp.mean(s.covered.astype(attr.dtype)) <= area_threshold) & (s.n < k)

    def body(s: _XraiState):
        free = (~s.covered).astype(attr.dtype)
        cnt = jnp.dot(masks, free, precision=hi)
        tot = jnp.dot(masks, attr * free, precision=hi)
        alive = s.alive & (cnt >= min_pixel_diff)
        gain = jnp.where(alive, tot / jnp.where(alive, cnt, 1.0), -jnp.inf)
        best = jnp.argmax(gain)
        go = jnp.any(alive)
        m = masks[best] > 0.5
        new = m & ~s.covered & go
        return _XraiState(covered=s.covered | (m & go),
                          alive=alive.at[best].set(False),
                          step=jnp.where(new, s.n, s.step),
                          gains=s.gains.at[s.n].set(jnp.where(go, gain[best], s.gains[s.n])),
                          n=s.n + go.astype(jnp.int32), done=~go)

    s0 = _XraiState(jnp.zeros((p,), bool), jnp.ones((k,), bool), jnp.full((p,), -1, jnp.int32),
                    jnp.full((k,), -jnp.inf, attr.dtype), jnp.asarray(0, jnp.int32),
                    jnp.asarray(False))
    return _finish(attr, jax.lax.while_loop(cond, body, s0))


def _xrai_fast(attr: Array, masks: Array, area_threshold: Array, min_pixel_diff: Array
               ) -> Tuple[Array, Array]:
    """PAIR's ``fast`` XRAI: the regions sorted once by their own mean attribution (empty ones
    last), then added in that order (a ``lax.scan``) when they add at least ``min_pixel_diff``
    new pixels, each scored by the mean over its new pixels. ``area_threshold`` is ignored, as
    in PAIR."""
    k, p = masks.shape
    hi = jax.lax.Precision.HIGHEST
    cnt0 = jnp.sum(masks, axis=1)
    g0 = jnp.where(cnt0 > 0, jnp.dot(masks, attr, precision=hi) / jnp.maximum(cnt0, 1), -jnp.inf)
    order = jnp.argsort(-g0, stable=True)

    def body(s: _XraiState, j):
        m = masks[j] > 0.5
        new = m & ~s.covered
        cnt = jnp.sum(new)
        go = cnt >= min_pixel_diff
        gain = jnp.sum(jnp.where(new, attr, 0.0)) / jnp.maximum(cnt, 1)
        s = _XraiState(covered=jnp.where(go, s.covered | m, s.covered), alive=s.alive,
                       step=jnp.where(new & go, s.n, s.step),
                       gains=s.gains.at[s.n].set(jnp.where(go, gain, s.gains[s.n])),
                       n=s.n + go.astype(jnp.int32), done=s.done)
        return s, None

    s0 = _XraiState(jnp.zeros((p,), bool), jnp.ones((k,), bool), jnp.full((p,), -1, jnp.int32),
                    jnp.full((k,), -jnp.inf, attr.dtype), jnp.asarray(0, jnp.int32),
                    jnp.asarray(False))
    s, _ = jax.lax.scan(body, s0, order)
    return _finish(attr, s)


XRAI_ALGORITHMS = ("full", "fast")
XRAI_BASELINES = ("minmax", "black_white")
XRAI_IG_METHODS = ("pair",) + IG_METHODS


def _ig_points(steps: int, ig_method: str) -> Tuple[np.ndarray, np.ndarray]:
    """PAIR ``IntegratedGradients``' nodes ``linspace(0, 1, steps)`` with equal weights
    ``1/steps`` (``"pair"``), or one of Captum's rules (:func:`path_points`)."""
    if ig_method == "pair":
        return (np.linspace(0.0, 1.0, steps).astype(np.float32),
                np.full((steps,), 1.0 / steps, np.float32))
    return path_points(steps, ig_method)


def _xrai_baselines(model: Any, x: Array, baselines: str) -> Array:
    """``(2, N, H, W, C)``: the black and the white baseline of each image."""
    if baselines == "black_white":
        if not isinstance(model, Model):
            raise ValueError("xrai: baselines='black_white' needs the model's normalisation; "
                             "pass an xaijax Model, use baselines='minmax' (PAIR's: the image's "
                             "own min and max) or give baseline_array")
        m = jnp.asarray(model.spec.mean, x.dtype)
        s = jnp.asarray(model.spec.std, x.dtype)
        return jnp.stack([jnp.broadcast_to(-m / s, x.shape),
                          jnp.broadcast_to((1.0 - m) / s, x.shape)])
    lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
    hi = jnp.max(x, axis=(1, 2, 3), keepdims=True)
    return jnp.stack([jnp.broadcast_to(lo, x.shape), jnp.broadcast_to(hi, x.shape)])


def _validate_xrai(model, x, o):
    m = "xrai"
    check_positive_int(o.get("steps", 2), "steps", m, "IG path points per baseline")
    check_choice(o.get("algorithm", "full"), XRAI_ALGORITHMS, "algorithm", m)
    check_choice(o.get("ig_method", "pair"), XRAI_IG_METHODS, "ig_method", m)
    if o.get("ig_method", "pair") != "pair" and o.get("steps", 2) < 2:
        raise ValueError(f"method {m!r}: steps must be >= 2 for ig_method "
                         f"{o['ig_method']!r}; got {o['steps']}")
    if o.get("baseline_array") is None and o.get("base_attribution") is None:
        check_choice(o.get("baselines", "minmax"), XRAI_BASELINES, "baselines", m)
    if "area_threshold" in o:
        _check_real(o["area_threshold"], "area_threshold", m, 0.0, 1.0)
    mpd = o.get("min_pixel_diff", 1)  # traced: a device scalar through explain
    check_positive_int(mpd.item() if hasattr(mpd, "item") and np.ndim(mpd) == 0 else mpd,
                       "min_pixel_diff", m, "new pixels a region must add")
    check_positive_int(o.get("min_segment_size", 1), "min_segment_size", m, "pixels")
    if o.get("internal_batch_size") is not None:
        check_positive_int(o["internal_batch_size"], "internal_batch_size", m,
                           "path points per forward/backward pass")
    sv = o.get("scale_values", (1,))
    if not isinstance(sv, tuple) or not sv or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in sv):
        raise ValueError(f"method {m!r}: scale_values must be a non-empty tuple of positive "
                         f"numbers (Felzenszwalb scales); got {sv!r}")
    dr = o.get("dilation_rad", 0)
    if isinstance(dr, bool) or not isinstance(dr, (int, np.integer)) or dr < 0:
        raise ValueError(f"method {m!r}: dilation_rad must be an int >= 0; got {dr!r}")
    ri = o.get("resize_image", None)
    if ri is not None and (not isinstance(ri, tuple) or len(ri) != 2 or not all(
            isinstance(v, int) and v > 0 for v in ri)):
        raise ValueError(f"method {m!r}: resize_image must be None or a tuple (height, width) "
                         f"of positive ints; got {ri!r}")
    n, h, w = x.shape[:3]
    seg = o.get("segments")
    if seg is not None:
        shape = np.shape(seg) if not isinstance(seg, (list, tuple)) else (
            (len(seg),) + tuple(np.shape(seg[0])) if len(seg) else (0,))
        ok = (len(shape) == 3 and shape[1:] == (h, w)) or (
            len(shape) == 4 and shape[0] == n and shape[2:] == (h, w))
        if not ok or shape[-3] == 0:
            raise ValueError(f"method {m!r}: segments must be K boolean masks (K, {h}, {w}) "
                             f"shared by the batch or per image (N={n}, K, {h}, {w}); got "
                             f"shape {shape}")
    ba = o.get("base_attribution")
    if ba is not None and np.shape(ba) not in ((n, h, w), tuple(x.shape)):
        raise ValueError(f"method {m!r}: base_attribution must have shape {(n, h, w)} or "
                         f"{tuple(x.shape)}; got {np.shape(ba)}")
    bl = o.get("baseline_array")
    if bl is not None and np.shape(bl)[-3:] != tuple(x.shape[1:]):
        raise ValueError(f"method {m!r}: baseline_array must be (B, H, W, C) or (B, N, H, W, C) "
                         f"with (H, W, C) = {tuple(x.shape[1:])}; got {np.shape(bl)}")


@register("xrai", static=("steps", "algorithm", "ig_method", "baselines", "scale_values",
                          "felzenszwalb_sigma", "min_segment_size", "resize_image",
                          "scale_range", "dilation_rad", "internal_batch_size", "max_rounds"),
          signed=True, validate=_validate_xrai,
          paper="Kapishnikov et al. 2019, §3.1-3.2 / Algorithm 1 (XRAI)",
          peer="PAIR saliency XRAI")
def xrai(model: Any, x: Array, target: Array, *, steps: int = 100, area_threshold: float = 1.0,
         algorithm: str = "full", min_pixel_diff: int = 50, segments: Optional[Any] = None,
         base_attribution: Optional[Array] = None, baselines: str = "minmax",
         baseline_array: Optional[Array] = None, ig_method: str = "pair",
         scale_values: Tuple[float, ...] = (50, 100, 150, 250, 500, 1200),
         felzenszwalb_sigma: float = 0.8, min_segment_size: int = 150,
         resize_image: Optional[Tuple[int, int]] = (224, 224),
         scale_range: Tuple[float, float] = (-1.0, 1.0), dilation_rad: int = 5,
         internal_batch_size: Optional[int] = None, max_rounds: int = 64) -> Explanation:
    """XRAI: integrated-gradient attributions aggregated over greedily ranked image regions.

    1. Attribution: IG (``steps`` points) from a black and from a white baseline, averaged,
       then the maximum over channels: ``a = max_c ½ Σ_{b} (x − b) ⊙ Σ_k w_k ∇S_c(b + α_k(x −
       b))``.
    2. Regions: Felzenszwalb segments at several scales, each dilated (:func:`xrai_segments`),
       or your own ``segments``.
    3. Greedy selection (§3.2): starting from nothing, repeatedly add the region whose pixels
       not yet covered have the largest mean attribution (regions adding fewer than
       ``min_pixel_diff`` new pixels are dropped), until the covered area exceeds
       ``area_threshold`` or no region is left. Each added region's new pixels get its gain;
       pixels never covered get their own mean attribution.

    PAIR's choices, kept: the black and white baselines are the image's own minimum and maximum
    value (``baselines="minmax"``; ``"black_white"`` uses the pixel values 0 and 1 through a
    zoo model's normalisation); IG's nodes are ``linspace(0, 1, steps)`` with weights
    ``1/steps`` (``ig_method="pair"``; any of IG's quadratures may be chosen). PAIR's
    segmentation calls skimage; this one is :func:`felzenszwalb` (parallel merges), so on the
    same image the segments, and hence the maps, differ from PAIR's; given the same segments
    (``segments=``) and attribution the maps agree.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      steps: IG points per baseline (static; PAIR ``XRAIParameters.steps=100``).
      area_threshold: stop once this fraction of the image is covered (PAIR 1.0).
      algorithm: ``"full"`` (§3.2) or PAIR's ``"fast"`` (regions ranked once, ignoring overlaps;
        ignores ``area_threshold``), static.
      min_pixel_diff: least number of new pixels a region must add (PAIR's experimental 50).
      segments: region masks ``(K, H, W)`` shared by the batch or ``(N, K, H, W)``, or a list
        of ``(H, W)`` masks (PAIR's ``segments``); default: computed.
      base_attribution: an attribution ``(N, H, W, C)`` or ``(N, H, W)`` to use instead of IG.
      baselines: ``"minmax"`` (PAIR) or ``"black_white"`` (static).
      baseline_array: your own IG baselines ``(B, H, W, C)`` or ``(B, N, H, W, C)``.
      ig_method: ``"pair"`` or an IG quadrature (static).
      scale_values, felzenszwalb_sigma, min_segment_size: the segmentation (PAIR's constants;
        static), see :func:`xrai_segments`.
      resize_image, scale_range, dilation_rad: the segmentation, as the three above.
      internal_batch_size: IG points per forward/backward pass (static; default as many as
        keep a pass at 64 images, :func:`xaijax.methods.gradient.call_chunk`).
      max_rounds: bound on the segmentation's merge rounds (static).

    Returns:
      heatmap ``(N, H, W)``: XRAI's map (PAIR's ``attribution_mask``); attribution ``None``;
      ``extras["ranks"]`` ``(N, H, W)`` int32, 1 for the most important region (PAIR's
      flattened ``segments``); ``extras["ig_attribution"]`` the attribution used ``(N, H, W)``
      after the channel maximum; ``extras["num_regions"]`` ``(N,)`` regions added.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.xrai(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]), steps=4,
      ...                      resize_image=None, scale_values=(50.0,), min_segment_size=64)
      >>> ex.heatmap.shape, ex.extras["ranks"].shape
      ((1, 32, 32), (1, 32, 32))

    References:
      Kapishnikov, Bolukbasi, Viégas & Terry 2019, "XRAI: Better Attributions Through Regions",
      ICCV, §3.1 (segmentation), §3.2 and Algorithm 1 (region selection); PAIR
      ``saliency.core.XRAI``.
    """
    f = logits_fn(model)
    n, h, w, c = x.shape
    if base_attribution is not None:
        a = jnp.asarray(base_attribution, x.dtype)
    else:
        if baseline_array is not None:
            bl = jnp.asarray(baseline_array, x.dtype)
            bl = jnp.broadcast_to(bl[:, None] if bl.ndim == 4 else bl, (bl.shape[0],) + x.shape)
        else:
            bl = _xrai_baselines(model, x, baselines)
        alphas, weights = _ig_points(steps, ig_method)
        pts = jnp.stack([jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype)], 1)

        def ig(b):
            diff = x - b

            def points(aw):  # (K, 2) nodes and weights -> (K, N, ...) weighted gradients
                a, w = aw[:, 0, None, None, None, None], aw[:, 1, None, None, None, None]
                return w * per_item(lambda z, t: input_gradient(f, z, t), b + a * diff, target)

            avg = chunked_sum(points, pts, call_chunk(internal_batch_size, pts.shape[0],
                                                      x.shape[0]))
            return diff * avg

        a = jnp.mean(jax.lax.map(ig, bl), axis=0)
    if a.ndim == 4:
        a = jnp.max(a, axis=-1)
    if segments is None:
        seg = jax.vmap(lambda im: xrai_segments(
            im, scale_values, felzenszwalb_sigma, min_segment_size, resize_image, scale_range,
            dilation_rad, max_rounds))(x)
    else:
        seg = jnp.stack([jnp.asarray(s) for s in segments]) if isinstance(
            segments, (list, tuple)) else jnp.asarray(segments)
        seg = jnp.broadcast_to(seg, (n,) + seg.shape[-3:]) if seg.ndim == 3 else seg
    masks = seg.reshape(n, seg.shape[1], h * w).astype(x.dtype)
    select = _xrai_full if algorithm == "full" else _xrai_fast
    th = jnp.asarray(area_threshold, x.dtype)
    mpd = jnp.asarray(min_pixel_diff, x.dtype)
    heat, ranks, count = jax.vmap(select, in_axes=(0, 0, None, None))(a.reshape(n, -1), masks,
                                                                       th, mpd)
    ranks = ranks.reshape(n, h, w)
    return Explanation(heatmap=heat.reshape(n, h, w), attribution=None,
                       extras={"ranks": ranks, "ig_attribution": a,
                               "num_regions": count},
                       target=target, method="xrai")
