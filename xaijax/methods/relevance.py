"""Relevance methods: layer-wise relevance propagation (LRP) and DeepLIFT (survey §5.1–5.2).

Both are modified gradients: the model runs forward with backward *rules* swapped in by a
composite (:mod:`xaijax.rules.lrp`, :mod:`xaijax.rules.deeplift`), and the "gradient" that comes
back at the input is the relevance (LRP) or the multiplier (DeepLIFT). No model is edited;
BatchNorm folding is a pure rewrite of the variables (:mod:`xaijax.rules.canonizers`).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import Explanation, register, require_model, target_scores
from xaijax.nn import layers as L
from xaijax.nn.intercept import chain
from xaijax.rules import canonizers
from xaijax.rules import deeplift as dl_rules
from xaijax.rules import lrp as lrp_rules

Array = jax.Array


def _validate_lrp(model, x, opts) -> None:
    """A preset name or a composite; α, β >= 0 and α = β + 1 for the αβ presets; ε, γ and the
    stabilizer >= 0."""
    comp = opts.get("composite")
    if isinstance(comp, str):
        if comp not in lrp_rules.COMPOSITES:
            raise ValueError(f"unknown LRP composite {comp!r}; presets: "
                             f"{list(lrp_rules.COMPOSITES)}, or pass a composite (a function "
                             f"layer -> rule, e.g. xaijax.nn.intercept.by_type(...))")
    elif comp is not None and not callable(comp):
        raise TypeError(f"composite must be a preset name or a composite (a function layer -> "
                        f"rule); got {type(comp).__name__}")
    if comp in ("alpha_beta", "epsilon_alpha_beta") and "alpha" in opts and "beta" in opts:
        a, b = _scalar(opts["alpha"], "alpha"), _scalar(opts["beta"], "beta")
        if a < 0 or b < 0 or abs(a - b - 1.0) > 1e-6:
            raise ValueError(f"LRP-αβ needs α, β >= 0 and α = β + 1 (survey Eq. 15); got "
                             f"α={a:g}, β={b:g}")
    for k in ("epsilon", "gamma", "stabilizer"):
        if k in opts and not _scalar(opts[k], k) >= 0:
            raise ValueError(f"LRP {k} must be >= 0; got {_scalar(opts[k], k):g}")


def _scalar(v: Any, name: str) -> float:
    a = np.asarray(v)
    if a.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {a.shape}")
    return float(a)


@register("lrp",
          paper="Bach et al. 2015; Montavon et al. 2019, Eq. 1-6 (0, eps, gamma, alpha-beta, "
                "z+, zB rules)",
          peer="Zennit composites",
          static=("composite", "canonize"), needs="rules", signed=True,
          validate=_validate_lrp)
def lrp(model: Any, x: Array, target: Array, *, composite: Any = "epsilon_plus",
        epsilon: Any = 1e-6, gamma: Any = 0.25, alpha: Any = 2.0, beta: Any = 1.0,
        stabilizer: Any = 1e-6, canonize: bool = True) -> Explanation:
    """Layer-wise relevance propagation: the class score redistributed to the input pixels.

    The relevance of the output neuron is the class score itself, ``R = S_c(x)`` (survey §5.1);
    it is propagated backwards by the rules of ``composite`` and conserved layer to layer up to
    what biases and ε absorb (Eq. 11). Nonlinearities and BatchNorm pass relevance through, the
    residual ``Add`` and average pooling split it in proportion to their inputs' contributions,
    max pooling gives it to the winner (see :func:`xaijax.rules.lrp.composite`).

    Args:
      model: a zoo :class:`~xaijax.models.Model` (rules need its layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      composite: preset name (static): ``epsilon``, ``lrp0``, ``zplus``, ``alpha_beta``,
        ``gamma``, ``epsilon_plus`` (default; zennit's EpsilonPlus), ``epsilon_alpha_beta``
        (EpsilonAlpha2Beta1), ``epsilon_gamma_box`` (EpsilonGammaBox: zᴮ on the first
        convolution), ``epsilon_plus_box``; or a composite of your own, a function ``layer ->
        rule`` such as ``by_type({L.Conv: lrp_rules.gamma(0.5), L.Dense:
        lrp_rules.epsilon(0.1)})`` from :mod:`xaijax.nn.intercept` and :mod:`xaijax.rules.lrp`
        (then ``epsilon``/``gamma``/``alpha``/``beta``/``stabilizer`` are unused: the rules carry
        their own values). Nonlinearities, BatchNorm, pooling and ``Add`` keep the pass-through
        and proportional rules of the presets unless your composite gives them another.
      epsilon: ε of LRP-ε (traced). Default 1e-6 as zennit.
      gamma: γ of LRP-γ (traced). Default 0.25 as zennit.
      alpha, beta: α and β of LRP-αβ (traced; α = β + 1 is checked when the values are
        concrete). Default 2 and 1.
      stabilizer: the ε that keeps the other rules' denominators away from zero (traced).
      canonize: fold BatchNorm into the preceding convolution first (static; default True).

    Returns:
      heatmap: the relevance summed over channels ``(N, H, W)`` (signed). attribution: the input
      relevance ``(N, H, W, C)``. extras: ``score`` (``S_c(x)``, the relevance put in) and
      ``relevance_sum`` (the relevance that reached the input).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 3, method="lrp", composite="epsilon")
      >>> ex.heatmap.shape
      (1, 32, 32)

    References:
      Ayyar et al. 2021 (survey), §5.1, Eq. 11–15; Bach et al. 2015; Montavon et al. 2017, 2019;
      zennit (Anders et al. 2021) for the composites and the modified-gradient formulation.
    """
    model = require_model(model, "lrp", "rule-aware layers")
    if canonize:
        model, _ = canonizers.merge_batchnorm(model)
    spec = model.spec
    if callable(composite):
        comp = chain(composite, lrp_rules.base_composite(stabilizer))
    else:
        bounds = lrp_rules.pixel_bounds(spec.mean, spec.std)
        first = lrp_rules.first_linear_tap(spec.taps, spec.tap_types)
        comp = lrp_rules.composite(composite, epsilon=epsilon, gamma=gamma, alpha=alpha,
                                   beta=beta, stabilizer=stabilizer, bounds=bounds,
                                   first_tap=first)

    def total(z):
        logits, _ = model.forward(z, rules=comp, require=(L.Conv, L.Dense))
        s = target_scores(logits, target)
        return jnp.sum(s * jax.lax.stop_gradient(s)), s

    rel, score = jax.grad(total, has_aux=True)(x)
    return Explanation(heatmap=jnp.sum(rel, axis=-1), attribution=rel,
                       extras={"score": score, "relevance_sum": jnp.sum(rel, axis=(1, 2, 3))},
                       target=target, method="lrp")


@register("deeplift",
          paper="Shrikumar et al. 2017, Eq. 1-3, Rescale (§3.5.1) and RevealCancel (§3.5.3)",
          peer="Captum DeepLift",
          static=("rule", "maxpool"), needs="rules", signed=True)
def deeplift(model: Any, x: Array, target: Array, *, baseline: Optional[Array] = None,
             rule: str = "rescale", maxpool: str = "rule") -> Explanation:
    """DeepLIFT: contributions of ``x − x⁰`` to ``S_c(x) − S_c(x⁰)`` (survey §5.2).

    Multipliers (Eq. 20) are back-propagated with the chain rule (Eq. 21): linear layers keep
    their gradient, nonlinearities use the Rescale or the RevealCancel rule
    (:mod:`xaijax.rules.deeplift`), max pooling Captum's DeepLIFT rule. The attribution is
    ``(x − x⁰) · m`` (Captum's ``multiply_by_inputs=True``), so summation-to-delta (Eq. 19)
    reads ``Σ attribution = S_c(x) − S_c(x⁰)``.

    The model runs once on ``[x; x⁰]`` (per device block when the batch is split:
    :func:`xaijax.rules.deeplift.join`) so every rule sees the reference's activations next to
    the input's. For ``reveal_cancel`` BatchNorm is first folded into the preceding convolution
    (:func:`xaijax.rules.canonizers.merge_batchnorm`) so a convolution feeds its nonlinearity
    directly; for ``rescale`` no canonization is needed (BatchNorm is linear).

    Args:
      model: a zoo :class:`~xaijax.models.Model`.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      baseline: the reference ``x⁰``: ``None`` or ``"zeros"`` for the all-zero image of the
        normalised space (Captum's default), or an array broadcastable to ``x`` (e.g. ``(H, W,
        C)`` or ``(N, H, W, C)``; traced).
      rule: ``"rescale"`` or ``"reveal_cancel"`` (static).
      maxpool: ``"rule"`` (default; Captum's DeepLIFT max-pool rule, summation-to-delta exact)
        or ``"gradient"`` (winner-take-all; what Captum effectively computes on VGG/ResNet, where
        a ReLU feeds each max pool — see :data:`xaijax.rules.deeplift.MAXPOOL_MODES`). Static.

    Returns:
      heatmap: attribution summed over channels ``(N, H, W)`` (signed). attribution: ``(N, H, W,
      C)``. extras: ``delta`` — ``Σ attribution − (S_c(x) − S_c(x⁰))`` per image (Captum's
      convergence delta; ~0 by Eq. 19), ``score`` ``S_c(x)`` and ``reference_score`` ``S_c(x⁰)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 3, method="deeplift")
      >>> ex.attribution.shape
      (1, 32, 32, 3)

    References:
      Ayyar et al. 2021 (survey), §5.2, Eq. 19–25; Shrikumar et al. 2017; Captum ``DeepLift``.
    """
    model = require_model(model, "deeplift", "rule-aware layers")
    if rule not in dl_rules.RULES:
        raise ValueError(f"unknown DeepLIFT rule {rule!r}; choose one of {list(dl_rules.RULES)}")
    if maxpool not in dl_rules.MAXPOOL_MODES:
        raise ValueError(f"maxpool must be one of {list(dl_rules.MAXPOOL_MODES)}; got {maxpool!r}")
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        ref = jnp.zeros_like(x)
    elif isinstance(baseline, str):
        raise ValueError(f"baseline must be None, 'zeros' or an array; got {baseline!r}")
    else:
        b = jnp.asarray(baseline, x.dtype)
        try:
            ref = jnp.broadcast_to(b, x.shape)
        except ValueError:
            raise ValueError(f"baseline of shape {b.shape} does not broadcast to x of shape "
                             f"{x.shape}") from None
    ref = jax.lax.stop_gradient(ref)
    if rule == "reveal_cancel":
        graph = canonizers.layer_graph(model, (1, *x.shape[1:]))
        model, folded = canonizers.merge_batchnorm(model, graph)
        comp = dl_rules.composite(rule, graph, model.variables, folded, maxpool_mode=maxpool)
    else:
        comp = dl_rules.composite(rule, maxpool_mode=maxpool)
    t2 = dl_rules.join(target, target)

    def total(z):
        logits, _ = model.forward(dl_rules.join(z, ref), rules=comp,
                                  require=(L.Nonlinearity,))
        s = target_scores(logits, t2)
        return jnp.sum(s), s

    mult, s = jax.grad(total, has_aux=True)(x)
    s_x, s_ref = dl_rules.split(s)
    attr = (x - ref) * mult
    delta = jnp.sum(attr, axis=(1, 2, 3)) - (s_x - s_ref)
    return Explanation(heatmap=jnp.sum(attr, axis=-1), attribution=attr,
                       extras={"delta": delta, "score": s_x, "reference_score": s_ref},
                       target=target, method="deeplift")
