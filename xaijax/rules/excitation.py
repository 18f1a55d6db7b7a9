"""Excitation backprop rules: the marginal winning probability (MWP) of Zhang et al. 2016.

Excitation backprop passes a probability distribution top-down through the network. For a
linear layer ``z_j = Σ_i w_ij a_i + b_j`` whose inputs ``a_i`` are non-negative (they follow a
ReLU), a parent ``a_j`` hands its winning probability to its children in proportion to their
excitatory contributions (Zhang et al. 2016, §3.2):

``P(a_i | a_j) = a_i w_ij⁺ / Σ_k a_k w_kj⁺``,   ``P(a_i) = Σ_j P(a_i | a_j) P(a_j)``,

with ``w⁺ = max(w, 0)``; biases and inhibitory (negative) weights take no part. Written as a
modified gradient (TorchRay's formulation), the signal that flows backwards **is** ``P``:
``P_in = a ⊙ (W⁺)ᵀ (P_out ⊘ (W⁺ a))`` — the vector-Jacobian product of the layer with
``W⁺`` and no bias, applied to the normalised ``P_out``, times the input. This is the general
form of :class:`xaijax.rules.lrp.BasicRule` (EB is the z⁺ rule without bias), so the rules here
are presets of it:

* :func:`excitation` — Conv, Dense, and the parameter-free linear layers (average pooling,
  adaptive average pooling, the residual :class:`~xaijax.nn.layers.Add`, whose weights are all
  positive, so ``P`` splits in proportion to the summands).
* :func:`contrastive` — the output layer of contrastive MWP (§3.3): the MWP of the target unit
  minus that of its *dual* unit, whose weights are the negated ``-w``:
  ``P_in = a ⊙ [(W⁺)ᵀ (P ⊘ W⁺a) − ((−W)⁺)ᵀ (P ⊘ (−W)⁺a)]``.

Everything else keeps its ordinary backward pass: max pooling routes ``P`` to the winner
(winner-take-all, as in the paper and TorchRay), ReLU's mask is redundant (``P`` is already zero
where the activation is) and flattening is a re-indexing. BatchNorm passes ``P`` through
(:func:`xaijax.rules.lrp.pass_rule`): after folding it into the convolution
(:func:`xaijax.rules.canonizers.merge_batchnorm`) it is an identity; unfolded (TorchRay) the
convolution's ``W⁺`` stands for conv+BN, which is the same thing when the BatchNorm scales
``γ/σ`` are positive (the per-channel factor cancels in the normalisation).

Two variants (:data:`VARIANTS`):

* ``"paper"``: inputs are clamped, ``a⁺ = max(a, 0)``, in both the normaliser and the product
  (the paper's rule is defined for non-negative inputs; for a layer after a ReLU nothing
  changes). ``P`` then stays a probability distribution at every layer: non-negative, and its
  mass conserved except where a unit is excited by its bias alone (``Σ_k a_k w_kj⁺ = 0``),
  whose share is dropped.
* ``"torchray"``: TorchRay's ``ExcitationBackpropContext``: inputs used as they are. They differ
  where a linear layer's input can be negative: the first convolution (the normalised image) and
  the residual sum of ResNets (BatchNorm outputs), where TorchRay's ``P`` can turn negative.

The normaliser is ``Σ_k a_k w_kj⁺ + 10⁻²⁰`` in both (TorchRay's ``1e-20``).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from xaijax.nn import layers as L
  >>> layer = L.Dense(features=1, use_bias=False)
  >>> p = {"kernel": jnp.array([[1.0], [3.0], [-2.0]])}
  >>> a = jnp.array([[1.0, 1.0, 1.0]])
  >>> y, vjp = jax.vjp(lambda v: excitation()(layer, p, v), a)
  >>> vjp(jnp.array([[1.0]]))[0]   # excitatory shares 1/4, 3/4; the inhibitory input gets 0
  Array([[0.25, 0.75, 0.  ]], dtype=float32)

References:
  Zhang, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention by Excitation Backprop", ECCV
  2016 (§3.2: MWP; §3.3: contrastive MWP), and IJCV 126 (2018); TorchRay
  ``attribution.excitation_backprop`` (the modified-gradient formulation, the ``1e-20``
  stabiliser, BatchNorm pass-through, the proportional residual sum).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite, by_name, by_type, chain
from xaijax.rules import lrp as _lrp

Array = jax.Array

VARIANTS = ("paper", "torchray")
"""``"paper"``: non-negative inputs ``a⁺`` (Zhang et al.'s assumption enforced); ``"torchray"``:
inputs as they are (TorchRay's ``ExcitationBackpropContext``)."""

STABILIZER = 1e-20
"""Added to every excitation-backprop normaliser ``Σ_k a_k w_kj⁺`` (TorchRay's value)."""


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"excitation backprop variant must be one of {VARIANTS}; got "
                         f"{variant!r}")


def _inputs(variant: str):
    _check_variant(variant)
    return (lambda a, hp: jnp.maximum(a, 0.0)) if variant == "paper" else (lambda a, hp: a)


def _excitatory(sign: float):
    """Parameter modifier: ``(sign·w)⁺`` for every weight, bias dropped (``Add``/pooling have no
    parameters and pass through unchanged)."""

    def modifier(params, hp):
        return {k: jnp.maximum(sign * v, 0.0) for k, v in params.items() if k != "bias"}

    return modifier


def _normalise(r, z, hp):
    return r / (z + hp["stabilizer"])


def excitation(variant: str = "paper", stabilizer: Any = STABILIZER) -> _lrp.BasicRule:
    """The excitation-backprop rule of a linear layer: ``P_in = a ⊙ (W⁺)ᵀ (P_out ⊘ (W⁺a + s))``.

    For Conv and Dense layers (bias dropped, ``W⁺ = max(W, 0)``) and for the parameter-free
    linear layers (average pooling, :class:`~xaijax.nn.layers.Add`: all weights positive).

    Args:
      variant: ``"paper"`` (inputs clamped to ``a⁺``) or ``"torchray"`` (inputs as they are); see
        the module docstring.
      stabilizer: ``s``, added to the normaliser (TorchRay's ``1e-20``).

    Returns:
      a rule ``rule(layer, params, *inputs)`` with the layer's own forward value.

    References:
      Zhang et al. 2016, §3.2; TorchRay ``ExcitationBackpropContext._patch_conv`` /
      ``_patch_pool`` / ``_patch_eltwise_sum``.
    """
    return _lrp.BasicRule(
        input_modifiers=(_inputs(variant),),
        param_modifiers=(_excitatory(1.0),),
        output_modifiers=(_lrp._identity,),
        gradient_mapper=lambda r, zs, hp: [_normalise(r, zs[0], hp)],
        reducer=lambda a, g, hp: a[0] * g[0],
        hyper={"stabilizer": stabilizer})


def contrastive(variant: str = "paper", stabilizer: Any = STABILIZER) -> _lrp.BasicRule:
    """The output layer of contrastive MWP: the target unit's excitation minus its dual's.

    ``P_in = a ⊙ [(W⁺)ᵀ (P ⊘ (W⁺a + s)) − ((−W)⁺)ᵀ (P ⊘ ((−W)⁺a + s))]``: the MWP that the target
    unit ``o`` hands to the layer below, minus the MWP of the dual unit ``ō`` whose weights are
    ``−W`` (Zhang et al. 2016, §3.3). Every layer below passes the difference on with
    :func:`excitation`; the rule is linear in ``P``, so this equals running excitation backprop
    twice (once with the classifier's weights negated, as TorchRay does) and subtracting at any
    layer between the classifier and the layer that is read.

    Args:
      variant: as for :func:`excitation`.
      stabilizer: added to both normalisers.

    Returns:
      a rule for the classifier layer (Dense or Conv).
    """
    inp = _inputs(variant)
    return _lrp.BasicRule(
        input_modifiers=(inp, inp),
        param_modifiers=(_excitatory(1.0), _excitatory(-1.0)),
        output_modifiers=(_lrp._identity, _lrp._identity),
        gradient_mapper=lambda r, zs, hp: [_normalise(r, zs[0], hp), _normalise(r, zs[1], hp)],
        reducer=lambda a, g, hp: a[0] * g[0] - a[1] * g[1],
        hyper={"stabilizer": stabilizer})


LINEAR_LAYERS = (L.Conv, L.Dense, L.AvgPool, L.AdaptiveAvgPool, L.Add)
"""The layer types that get :func:`excitation` (BatchNorm gets the pass-through rule)."""


def composite(variant: str = "paper", *, classifier: Any = None,
              stabilizer: Any = STABILIZER) -> Composite:
    """Excitation backprop on a whole model: :func:`excitation` on every linear layer
    (:data:`LINEAR_LAYERS`), pass-through on BatchNorm, the ordinary backward pass elsewhere;
    with ``classifier`` (a tap name) that layer gets :func:`contrastive` instead (contrastive
    MWP).

    Args:
      variant: ``"paper"`` or ``"torchray"``.
      classifier: the tap of the output layer whose dual unit is subtracted, or ``None``.
      stabilizer: added to every normaliser.

    Returns:
      a composite for :func:`xaijax.nn.intercept.forward`.
    """
    eb = excitation(variant, stabilizer)
    base = by_type({**{t: eb for t in LINEAR_LAYERS}, L.BatchNorm: _lrp.pass_rule})
    if classifier is None:
        return base
    return chain(by_name({classifier: contrastive(variant, stabilizer)}), base)
