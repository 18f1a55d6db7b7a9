"""The μ-Lasso of Oramas et al. (2019, Eq. 1) by the spectral projected gradient method.

.. math::  W^* = \\arg\\min_W \\|X^T W - L^T\\|_F^2 \\quad \\text{s.t.}\\quad \\|w_j\\|_1 \\le \\mu
           \\quad \\forall j = 1, \\dots, C

The objective and the constraints separate over the class columns ``w_j``, so each column is an
independent μ-Lasso ``min ||X^T w - l_j||² s.t. ||w||_1 <= μ`` and the columns are solved side by
side under ``vmap`` (each with its own spectral step). The solver is SPG2 of Birgin, Martínez &
Raydan (2000) as used by SPGL1 (van den Berg & Friedlander 2008, the paper's [25]): a projected
gradient direction ``d = P(w - α g) - w`` with the Barzilai–Borwein step ``α = sᵀs / sᵀy``
(safeguarded to ``[α_min, α_max]``, with ``α_max`` also capping ``||α g||_∞`` at ``100 μ``), a non-monotone Armijo line search along ``d`` (the last
``memory`` objective values, safeguarded quadratic interpolation), and Euclidean projection ``P``
onto the L1 ball of radius ``μ`` (``optax.projections.projection_l1_ball``, Duchi et al. 2008).
The iteration stops when the projected-gradient norm ``||P(w - g) - w||_∞`` has dropped below
``tol`` times its value at ``w = 0``, or after ``max_iter`` iterations.

The data enter through the Gram matrix ``X Xᵀ`` (``m × m``) and ``X Lᵀ`` (``m × C``), computed once:
an objective or gradient evaluation then costs ``O(m²)`` instead of ``O(mN)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from optax import projections

Array = jax.Array

_ALPHA_MIN, _ALPHA_MAX = 1e-10, 1e10
_GAMMA = 1e-4  # Armijo sufficient-decrease constant (SPGL1's default)
_MAX_BACKTRACK = 30
_STEP_CAP = 100.0


class _State(NamedTuple):
    w: Array        # (m,) current iterate (feasible)
    g: Array        # (m,) gradient at w
    f: Array        # ()   objective at w
    alpha: Array    # ()   spectral step
    hist: Array     # (memory,) last objective values (non-monotone line search)
    it: Array       # ()   iteration count
    pg: Array       # ()   ||P(w - g) - w||_inf


def _column(gram: Array, xl: Array, ll: Array, mu: Array, tol: Array, max_iter: int,
            memory: int) -> Array:
    """SPG for one class column: ``min wᵀGw - 2wᵀc + l·l  s.t. ||w||_1 <= μ``."""
    def proj(v):
        # projection_l1_ball, written with where (its lax.cond rejects the float64 branch that
        # the simplex projection yields for float32 inputs when x64 is enabled)
        onto = projections.projection_l1_sphere(v, mu).astype(v.dtype)
        return jnp.where(jnp.sum(jnp.abs(v)) <= mu, v, onto)

    def fg(w):
        gw = gram @ w
        return w @ gw - 2.0 * (w @ xl) + ll, 2.0 * (gw - xl)

    def pgnorm(w, g):
        return jnp.max(jnp.abs(proj(w - g) - w))

    w0 = jnp.zeros_like(xl)
    f0, g0 = fg(w0)
    pg0 = pgnorm(w0, g0)
    alpha0 = jnp.clip(1.0 / jnp.maximum(pg0, 1e-30), _ALPHA_MIN, _ALPHA_MAX)
    stop = tol * jnp.maximum(pg0, 1e-30)
    init = _State(w0, g0, f0, alpha0, jnp.full((memory,), f0), jnp.zeros((), jnp.int32), pg0)

    def cond(s):
        return (s.it < max_iter) & (s.pg > stop)

    def body(s):
        d = proj(s.w - s.alpha * s.g) - s.w
        gtd = s.g @ d
        dgd = d @ (gram @ d)
        slack = jnp.max(s.hist) - s.f   # >= 0: the non-monotone allowance

        # f is quadratic, so f(w + λd) - f(w) = λ gᵀd + λ² dᵀGd exactly: the Armijo test and the
        # interpolation use this increment instead of a difference of two rounded objectives
        # (float32 cancellation made the line search accept noise near the optimum)
        def inc(lam):
            return lam * gtd + lam * lam * dgd

        def ls_cond(c):
            lam, k = c
            return (inc(lam) > slack + _GAMMA * lam * gtd) & (k < _MAX_BACKTRACK)

        def ls_body(c):
            lam, k = c
            # safeguarded quadratic interpolation (SPG2; exact here), else halve
            lt = -gtd / jnp.where(dgd > 0, 2.0 * dgd, 1.0)
            lam = jnp.where((dgd > 0) & (lt >= 0.1 * lam) & (lt <= 0.5 * lam), lt, 0.5 * lam)
            return lam, k + 1

        lam, _ = lax.while_loop(ls_cond, ls_body, (jnp.ones_like(s.f), 0))
        wnew = s.w + lam * d
        fnew = s.f + inc(lam)
        gnew = 2.0 * (gram @ wnew - xl)
        sv, yv = wnew - s.w, gnew - s.g
        sty = sv @ yv
        # cap the step so that ||α g||_∞ <= 100 μ: a longer step lands outside the ball anyway,
        # and projecting a point of size 1e9 onto a ball of radius 10 in float32 loses the
        # constraint to rounding (seen: ||w||_1 = 10.005 with a rank-deficient X)
        amax = jnp.minimum(_ALPHA_MAX, _STEP_CAP * mu / jnp.maximum(jnp.max(jnp.abs(gnew)), 1e-30))
        bb = (sv @ sv) / jnp.where(sty > 0, sty, 1.0)
        alpha = jnp.where(sty > 0, jnp.clip(bb, _ALPHA_MIN, amax), amax)
        hist = s.hist.at[(s.it + 1) % memory].set(fnew)
        return _State(wnew, gnew, fnew, alpha, hist, s.it + 1, pgnorm(wnew, gnew))

    return lax.while_loop(cond, body, init).w


@functools.partial(jax.jit, static_argnames=("max_iter", "memory"))
def mu_lasso(X: Array, L: Array, mu: float = 10.0, *, max_iter: int = 2000, tol: float = 1e-5,
             memory: int = 5) -> Array:
    """Solve the μ-Lasso ``argmin_W ||Xᵀ W - Lᵀ||_F²  s.t. ||w_j||_1 <= μ`` for every class j.

    Args:
      X: ``(m, N)`` descriptors, one column per training image (the paper's shape).
      L: ``(C, N)`` labels, one column per image (binary one-hot in the paper; any reals work).
      mu: the L1 radius μ (traced: changing it does not recompile). The paper uses μ = 10.
      max_iter: iteration cap per column (static).
      tol: stop when ``||P(w - ∇f) - w||_∞`` falls below ``tol`` times its value at ``w = 0``.
      memory: how many past objective values the non-monotone line search compares against
        (static; 1 makes it monotone).

    Returns:
      ``W`` ``(m, C)``; every column has ``||w_j||_1 <= μ`` (up to float rounding of the
      projection).

    Examples:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])   # m=2 features, N=3 images
      >>> L = jnp.array([[1.0, 0.0, 1.0]])                      # C=1 class
      >>> W = mu_lasso(X, L, mu=10.0)
      >>> W.shape, bool(abs(W[0, 0] - 1.0) < 1e-4)
      ((2, 1), True)

    References:
      Oramas et al. 2019, §3.1, Eq. 1 (μ-Lasso, solved by spectral gradient projection [17, 25]);
      Birgin, Martínez & Raydan 2000 (SPG2); van den Berg & Friedlander 2008, §4 (SPGL1).
    """
    X = jnp.asarray(X)
    L = jnp.asarray(L, X.dtype)
    if X.ndim != 2 or L.ndim != 2 or X.shape[1] != L.shape[1]:
        raise ValueError(f"mu_lasso expects X (m, N) and L (C, N) with the same N (images are "
                         f"columns, as in Eq. 1); got X {X.shape} and L {L.shape}. Pass "
                         f"descriptors.T and one_hot(labels).T")
    if memory < 1:
        raise ValueError(f"memory must be >= 1; got {memory}")
    mu = jnp.asarray(mu, X.dtype)
    tol = jnp.asarray(tol, X.dtype)
    gram = X @ X.T
    xl = X @ L.T                      # (m, C)
    ll = jnp.sum(L * L, axis=1)       # (C,)
    col = functools.partial(_column, max_iter=max_iter, memory=memory)
    return jax.vmap(col, in_axes=(None, 1, 0, None, None), out_axes=1)(gram, xl, ll, mu, tol)
