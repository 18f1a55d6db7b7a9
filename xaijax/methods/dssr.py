"""DSSR: a hybrid of the smallest-deletion and smallest-supporting-region games (Gu 2020).

Gu (2020), "Discriminative Model-Agnostic Vision Explainer for Differentiable Classifiers",
§3.3 (Eq. 4, two-stage λ), §3.4 (Eq. 5, max-pool regulariser and average-pool auxiliary mask),
§4 (defaults: Adam, lr 0.1, λ = 10/224², 300 iterations, k₁=12 s₁=1 p₁=6, k₂=16 s₂=1 p₂=0,
mask initialised to 0, reference sampled from U(0, 1)).

Which side of the mask is the evidence (worked out from Eq. 4–5)
-----------------------------------------------------------------

With ``x_{r,m} = m·x + (1-m)·r`` (Eq. 1), Eq. 4 minimises

    L_DSSR = f(x_{r,m})_c − f(x_{r,1−m})_c − λ‖m‖₁,   m⁰ = 0.

The first term wants ``x_{r,m}`` — the image where ``m = 1`` pixels are kept — to lose the class;
the second wants ``x_{r,1−m}`` — the image where the ``m = 0`` pixels are kept — to keep it; the
third pushes every ``m`` up towards 1. The balance is ``m ≈ 1`` on everything the class does
not need and ``m ≈ 0`` on the evidence: **the evidence is ``1 − m``**. This agrees with the rest
of §3: "``x_{r,m}`` denotes the deletion based explanation ... the corresponding preservation
based explanation ``x_{r,1−m}`` should have a high classification score"; the two-stage λ
watches ``f(x_{r,1−m})``, the preservation side; and the max-pool example of §3.4 calls a pixel
with ``m = 1`` "masked (unimportant)" and encourages an isolated ``m = 0`` pixel among masked
neighbours to be masked too. The regulariser of Eq. 5, ``‖1 − maxp(1 − m)‖₁``, is the sum of
window-wise *minima* of ``m``; its gradient reaches only the smallest ``m`` of each window and,
with the minus sign, raises it: it erodes small islands of evidence (``m = 0``) and keeps
compact ones.

Eq. 5 as printed, ``f(x_{r,1−m̄}) − f(x_{r,m̄}) − λ‖1 − maxp(1−m)‖₁``, has the two score terms
the other way round from Eq. 4. Read literally, all three terms would then push ``m`` to 1 and
``m ≡ 1`` would be its minimiser for every image (``f(x_{r,0}) = f(r)`` small, ``f(x_{r,1}) =
f(x)`` large, regulariser maximal) — no explanation at all. We therefore implement Eq. 5 with
Eq. 4's orientation (the only one consistent with Eq. 4, the initialisation, the two-stage rule
and the pooling example):

    L_DSSR+ = f(x_{r,m̄})_c − f(x_{r,1−m̄})_c − λ‖1 − maxp(1 − m | k₁, s₁, p₁)‖₁,
    m̄ = avgp(m | k₂, s₂, p₂),

and return the evidence ``1 − m̄`` (what the classifier saw kept in the preservation image) as
the heatmap.

Other choices the paper leaves open
-----------------------------------

* Sizes: with k₂ = 16, s₂ = 1, p₂ = 0 the average pool shrinks its input by 15 pixels, so the
  optimised mask ``m`` is ``(H + 15) × (W + 15)`` and ``m̄`` has the image's size (in general
  ``(H − 1)·s₂ + k₂ − 2p₂``). Max pooling pads with −∞ (torch semantics), average pooling counts
  padding (only relevant when p₂ > 0).
* Reference: "random noise sampled from a uniform distribution (0, 1)" (Fig. 1) is read as a
  random *image* with pixel values in [0, 1], mapped to the model's normalised input space with
  its mean/std (``reference_space="pixel"``, default; ImageNet statistics for a plain callable).
  ``reference_space="normalised"`` samples U(0, 1) directly in the input space. One reference
  per image, drawn once from ``key`` (split per image).
* Two-stage λ (§3.3): "as long as f(x_{r,1−m})_c ≤ θ a smaller λ is used, otherwise a larger λ".
  Neither θ nor the smaller λ is given: defaults θ = 0.5 and ``lam_small = lam / 10`` (= 1/224²,
  the λ §3.4 uses for SSR/SDR). The stage is decided at every iteration from the preservation
  score of the current mask.
* f is the softmax probability of the target (the paper's ``y_c ∈ [0, 1]``).
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from xaijax.methods.base import Explanation, class_scores, logits_fn, register
from xaijax.progress import tick
from xaijax.models.base import IMAGENET_MEAN, IMAGENET_STD, Model

Array = jax.Array

REFERENCE_SPACES = ("pixel", "normalised")


class DSSRState(NamedTuple):
    """What travels through the optimisation loop: the masks (one row per image) and Adam's
    state."""

    mask: Array
    opt_state: Any


def mask_size(size: int, k2: int, s2: int, p2: int) -> int:
    """Side of the optimised mask whose average pool ``avgp(· | k2, s2, p2)`` has ``size``."""
    return (size - 1) * s2 + k2 - 2 * p2


def _window(m: Array, k: int, s: int, p: int):
    """reduce_window arguments pooling the last two axes of ``m`` (the others are batch)."""
    lead = m.ndim - 2
    return (1,) * lead + (k, k), (1,) * lead + (s, s), ((0, 0),) * lead + ((p, p), (p, p))


def avg_pool(m: Array, k: int, s: int, p: int) -> Array:
    """``avgp(m | k, s, p)`` on ``(..., H, W)`` masks (zero padding counted, torch's default)."""
    total = lax.reduce_window(m, 0.0, lax.add, *_window(m, k, s, p))
    return total / float(k * k)


def max_pool(m: Array, k: int, s: int, p: int) -> Array:
    """``maxp(m | k, s, p)`` on ``(..., H, W)`` masks (padding with −∞, torch semantics)."""
    return lax.reduce_window(m, -jnp.inf, lax.max, *_window(m, k, s, p))


def regulariser(m: Array, k1: int, s1: int, p1: int) -> Array:
    """``‖1 − maxp(1 − m | k1, s1, p1)‖₁``: the sum of window-wise minima of ``m`` (Eq. 5), per
    ``(H, W)`` mask: a scalar for one mask, ``(N,)`` for ``(N, H, W)``.

    For a mask in [0, 1] every entry is ≥ 0, so the L1 norm is the plain sum (written without
    ``abs``, whose subgradient at 0 would be 0 at the all-zero initialisation).
    """
    return jnp.sum(1.0 - max_pool(1.0 - m, k1, s1, p1), axis=(-2, -1))


def perturb(x: Array, m: Array, r: Array) -> Array:
    """``x_{r,m} = m·x + (1 − m)·r`` (Eq. 1) with a ``(H, W)`` mask broadcast over channels."""
    m = m[..., None]
    return m * x + (1.0 - m) * r


def dssr_loss(f_score, x: Array, r: Array, m: Array, lam: Array, *,
              k1: int = 12, s1: int = 1, p1: int = 6, k2: int = 16, s2: int = 1,
              p2: int = 0) -> Tuple[Array, Tuple[Array, Array, Array]]:
    """L_DSSR+ (Eq. 5, in Eq. 4's orientation; see the module docstring) for one image.

    Args:
      f_score: ``x -> softmax score of the target`` for one ``(H, W, C)`` image.
      x, r: image and reference ``(H, W, C)``.
      m: the optimised mask ``(H', W')`` with ``avgp(m)`` of the image's size.
      lam: λ.

    Returns:
      ``(loss, (deletion score f(x_{r,m̄}), preservation score f(x_{r,1−m̄}), regulariser))``.
    """
    mbar = avg_pool(m, k2, s2, p2)
    s_del = f_score(perturb(x, mbar, r))
    s_pre = f_score(perturb(x, 1.0 - mbar, r))
    reg = regulariser(m, k1, s1, p1)
    return s_del - s_pre - lam * reg, (s_del, s_pre, reg)


@register("dssr",
          paper="Gu 2020, DSSR Eq. 1-4 (smallest deleting and supporting regions)",
          peer="",
          static=("iterations", "k1", "s1", "p1", "k2", "s2", "p2", "reference_space", "progress"),
          needs="function")
def dssr(model: Any, x: Array, target: Array, *, key: Optional[Array] = None,
         lam: float = 10.0 / 224 ** 2, lam_small: Optional[float] = None, theta: float = 0.5,
         iterations: int = 300, learning_rate: float = 0.1, k1: int = 12, s1: int = 1,
         p1: int = 6, k2: int = 16, s2: int = 1, p2: int = 0,
         reference_space: str = "pixel", progress: bool = False) -> Explanation:
    """DSSR (Gu 2020): fine-grained, regular masks from a hybrid deletion/preservation game.

    All images are optimised as the rows of one batched ``lax.scan`` (each row takes exactly
    the steps it would take alone).

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits`` that treats the images of a
        batch independently (the deletion and preservation images of all rows are one batch).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      key: PRNG key for the U(0, 1) references (split per image); default ``PRNGKey(0)``.
      lam: the larger λ (used once the preservation score exceeds θ); scalar or ``(N,)``.
      lam_small: the smaller λ of the first stage; default ``lam / 10``.
      theta: threshold θ on the preservation score ``f(x_{r,1−m̄})_c`` (§3.3).
      iterations: Adam steps (static).
      learning_rate: Adam learning rate.
      k1, s1, p1: max pool of the regulariser; k2, s2, p2: average pool of the auxiliary mask.
      reference_space: ``"pixel"`` (U(0, 1) pixels, normalised with the model's mean/std) or
        ``"normalised"``.
      progress: show a bar of the optimisation steps on stderr (static; :mod:`xaijax.progress`).

    Returns:
      heatmap: the evidence ``1 − m̄`` ``(N, H, W)``. attribution: ``None``. extras: ``mask``
      (the optimised ``m``, ``(N, H+k2−1−2p2, ...)``), ``mask_avg`` (``m̄``), ``reference``,
      ``preservation`` ``x_{r,1−m̄}``, ``deletion`` ``x_{r,m̄}``, ``score_image``,
      ``score_preservation``, ``score_deletion`` (final softmax scores of the target),
      ``loss``, ``preservation_curve`` and ``lam_curve`` (the λ used at each step), each
      ``(N, iterations)``.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((2, 32, 32, 3)), 1, method="dssr", iterations=2,
      ...                 key=jax.random.PRNGKey(0))
      >>> ex.heatmap.shape, ex.extras["mask"].shape
      ((2, 32, 32), (2, 47, 47))

    References:
      Gu 2020, §3.3 (Eq. 4, two-stage λ), §3.4 (Eq. 5), §4 (defaults).
    """
    if reference_space not in REFERENCE_SPACES:
        raise ValueError(f"reference_space must be one of {REFERENCE_SPACES}; got "
                         f"{reference_space!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int; got {iterations!r}")
    for name, v in (("k1", k1), ("s1", s1), ("k2", k2), ("s2", s2)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    n, h, w, c = x.shape
    apply_fn = logits_fn(model)
    key = jax.random.PRNGKey(0) if key is None else key
    keys = jax.random.split(key, n)
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), (n,))
    lam_small = lam / 10.0 if lam_small is None else jnp.broadcast_to(
        jnp.asarray(lam_small, jnp.float32), (n,))
    theta = jnp.asarray(theta, jnp.float32)
    if reference_space == "pixel":
        spec_mean, spec_std = ((model.spec.mean, model.spec.std) if isinstance(model, Model)
                               else (IMAGENET_MEAN, IMAGENET_STD))
        mean = jnp.asarray(spec_mean, jnp.float32)[:c]
        std = jnp.asarray(spec_std, jnp.float32)[:c]
    mh, mw = mask_size(h, k2, s2, p2), mask_size(w, k2, s2, p2)
    opt = optax.adam(jnp.asarray(learning_rate, jnp.float32))

    # one reference per image, drawn from its own key (the one it would use alone)
    u = jax.vmap(lambda k_: jax.random.uniform(k_, (h, w, c), jnp.float32))(keys)
    r = (u - mean) / std if reference_space == "pixel" else u
    t2 = jnp.repeat(target, 2)

    # all images are the rows of one batched scan (the model is per-sample, every term below is
    # per row and Adam is elementwise, so each row takes the steps it would take alone); the
    # deletion and preservation images of all rows go through the model as one batch, each
    # image's two next to each other (a batch split over devices keeps them on its device)
    def score_terms(m):
        mbar = avg_pool(m, k2, s2, p2)
        z = jnp.stack([perturb(x, mbar, r), perturb(x, 1.0 - mbar, r)], 1)
        p = class_scores(apply_fn(z.reshape((2 * n,) + z.shape[2:])), t2, "softmax")
        s_del, s_pre = p[0::2], p[1::2]
        return jnp.sum(s_del - s_pre), (s_del - s_pre, s_pre)

    def reg_terms(m):
        reg = regulariser(m, k1, s1, p1)
        return jnp.sum(reg), reg

    def step(state: DSSRState, i):
        tick(i, iterations, "dssr steps", progress)
        # the score terms and the regulariser are differentiated separately so the stage
        # (two-stage λ, §3.3) can use the preservation score of the current mask
        (_, (phi, s_pre)), g_phi = jax.value_and_grad(score_terms, has_aux=True)(state.mask)
        (_, reg), g_reg = jax.value_and_grad(reg_terms, has_aux=True)(state.mask)
        lam_k = jnp.where(s_pre <= theta, lam_small, lam)
        g = g_phi - lam_k[:, None, None] * g_reg
        updates, opt_state = opt.update(g, state.opt_state, state.mask)
        m = optax.projections.projection_box(optax.apply_updates(state.mask, updates), 0.0, 1.0)
        return DSSRState(m, opt_state), (phi - lam_k * reg, s_pre, lam_k)

    m0 = jnp.zeros((n, mh, mw), jnp.float32)
    state, (losses, pre_curve, lam_curve) = lax.scan(
        step, DSSRState(m0, opt.init(m0)), jnp.arange(iterations) if progress else None,
        length=iterations)
    m = state.mask
    mbar = avg_pool(m, k2, s2, p2)
    e_pre = perturb(x, 1.0 - mbar, r)
    e_del = perturb(x, mbar, r)
    z = jnp.stack([x, e_pre, e_del], 1)
    scores = class_scores(apply_fn(z.reshape((3 * n,) + z.shape[2:])), jnp.repeat(target, 3),
                          "softmax").reshape(n, 3)
    losses, pre_curve, lam_curve = losses.T, pre_curve.T, lam_curve.T
    extras: Dict[str, Any] = {
        "mask": m,
        "mask_avg": mbar,
        "reference": r,
        "preservation": e_pre,
        "deletion": e_del,
        "score_image": scores[:, 0],
        "score_preservation": scores[:, 1],
        "score_deletion": scores[:, 2],
        "loss": losses,
        "preservation_curve": pre_curve,
        "lam_curve": lam_curve,
    }
    return Explanation(heatmap=1.0 - mbar, attribution=None, extras=extras, target=target,
                       method="dssr")
