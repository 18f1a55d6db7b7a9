"""Excitation backprop (marginal winning probability) and its contrastive variant.

Both run the model forward with the excitation-backprop rules of :mod:`xaijax.rules.excitation`
swapped in (a composite chosen per call; the model is not edited) and read the backward signal
at one layer (a tap): there it is the marginal winning probability (MWP) of each unit given the
target class, ``P(a_i) = Σ_j P(a_i | a_j) P(a_j)`` started from ``P(o_target) = 1`` (Zhang et al.
2016, §3.2). The map is its sum over channels (the MWP of each location), upsampled bilinearly
to the input size (TorchRay's ``resize=True``: ``F.interpolate(..., mode="bilinear",
align_corners=False)``).

:func:`read_at_tap` is the shared machinery (the modified-gradient signal and the activation
at a tap, or at the input); :func:`xaijax.methods.gradient.linear_approx` uses it with the
plain gradient.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from xaijax.methods.base import (Explanation, check_choice, register, require_model,
                                 target_scores, upsample)
from xaijax.models.base import Model
from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite
from xaijax.rules import canonizers
from xaijax.rules import excitation as eb_rules

Array = jax.Array

INPUT = "input"
"""The ``tap`` value that reads a method at the model's input instead of a layer."""

_LINEAR = ("Conv", "Dense")


# ------------------------------------------------------------------------------------------------
# taps


def default_tap(model: Model) -> str:
    """The layer TorchRay's pointing-game benchmark reads excitation backprop at: the output of
    the second-to-last convolutional block (``model.block_taps[-2]``), or of the max pool that
    directly follows it — pool4 (``features.23``) of VGG16 and ``layer3`` of ResNets, as in
    TorchRay's ``examples/attribution_benchmark.py``."""
    spec = model.spec
    blocks = spec.block_taps
    name = blocks[-2] if len(blocks) >= 2 else (blocks[-1] if blocks else spec.cam_tap)
    if not name:
        raise ValueError(f"model {spec.name!r} names no block outputs (spec.block_taps) and no "
                         f"last convolution (spec.cam_tap); pass tap=... (a layer name from "
                         f"model.taps, or {INPUT!r})")
    name = model.resolve(name)
    i = spec.taps.index(name)
    if i + 1 < len(spec.taps) and spec.tap_types[i + 1] == "MaxPool":
        return spec.taps[i + 1]
    return name


def resolve_tap(model: Model, tap: Optional[str], method: str,
                default: Callable[[Model], str]) -> Optional[str]:
    """Canonical tap name, or ``None`` for the input (``tap="input"``); ``tap=None`` is
    ``default(model)``. Unknown names raise with the model's block outputs listed."""
    require_model(model, method, "taps")
    if tap == INPUT and INPUT not in model.spec.taps:
        return None
    return model.resolve(default(model) if tap is None else tap)


def classifier_tap(model: Model) -> str:
    """The last Dense or Conv layer in forward order (TorchRay's ``_get_classifier_layer``)."""
    for t, ty in zip(reversed(model.spec.taps), reversed(model.spec.tap_types)):
        if ty in _LINEAR:
            return t
    raise ValueError(f"model {model.spec.name!r} has no xaijax Dense or Conv layer to serve as "
                     f"the classifier of contrastive excitation backprop")


def read_at_tap(model: Model, x: Array, target: Array, tap: Optional[str],
                rules: Optional[Composite] = None, require: Optional[Sequence[type]] = None,
                method: str = "") -> Tuple[Array, Array]:
    """``(signal, activation)`` at ``tap`` (``None``: the input): the backward pass of each
    image's target logit (a one-hot cotangent), modified by ``rules``, as it arrives at the tap's
    output, and the tap's forward value. With ``rules=None`` the signal is the gradient."""
    if tap is None:
        def total(z):
            logits, _ = model.forward(z, rules=rules, require=require)
            return jnp.sum(target_scores(logits, target))

        return jax.grad(total)(x), x
    shape = jax.eval_shape(lambda z: model.forward(z, capture=[tap])[1][tap], x)
    if len(shape.shape) != 4:
        raise ValueError(f"method {method!r} needs a spatial feature map (N, h, w, C) at its "
                         f"tap; tap {tap!r} has shape {tuple(shape.shape)} — choose a "
                         f"convolutional layer (one of model.block_taps) or {INPUT!r}")

    def score(delta):
        logits, acts = model.forward(x, capture=[tap], edits={tap: lambda a: a + delta},
                                     rules=rules, require=require)
        # inference mode: images are independent, so the batch sum gives per-image signals
        return jnp.sum(target_scores(logits, target)), acts[tap]

    return jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))


def _tap_index(model: Model, tap: Optional[str]) -> int:
    return -1 if tap is None else model.spec.taps.index(tap)


# ------------------------------------------------------------------------------------------------
# option checks


def _validator(method: str, contrastive: bool):
    def validate(model, x, opts) -> None:
        """``variant`` is known; ``tap`` (and ``classifier``) name layers of the model; the
        classifier is a Dense / Conv layer above the tap."""
        if "variant" in opts:
            check_choice(opts["variant"], eb_rules.VARIANTS, "variant", method)
        if not isinstance(model, Model):
            return
        tap = resolve_tap(model, opts.get("tap"), method, default_tap)
        if not contrastive:
            return
        cls = opts.get("classifier")
        cls = classifier_tap(model) if cls is None else model.resolve(cls)
        kind = model.tap_type(cls)
        if kind not in _LINEAR:
            raise ValueError(f"method {method!r}: classifier must be a Dense or Conv layer (the "
                             f"output layer whose dual unit is subtracted); {cls!r} is a {kind}")
        if _tap_index(model, tap) >= _tap_index(model, cls):
            raise ValueError(f"method {method!r}: the tap {tap!r} must lie below the classifier "
                             f"{cls!r} (the contrast flows from the classifier down to the tap)")

    return validate


_STATIC = ("tap", "variant")


def _excitation(kind: str, model: Any, x: Array, target: Array, tap: Optional[str],
                variant: str, classifier: Optional[str]) -> Explanation:
    model = require_model(model, kind, "rule-aware layers")
    check_choice(variant, eb_rules.VARIANTS, "variant", kind)
    name = resolve_tap(model, tap, kind, default_tap)
    cls = None
    if kind == "contrastive_excitation_backprop":
        cls = classifier_tap(model) if classifier is None else model.resolve(classifier)
    if variant == "paper":
        model, _ = canonizers.merge_batchnorm(model)
    rules = eb_rules.composite(variant, classifier=cls)
    p, _ = read_at_tap(model, x, target, name, rules, (L.Conv, L.Dense), kind)
    low = jnp.sum(p, axis=-1)
    if cls is not None:
        low = jax.nn.relu(low)
    extras = {"low_res": low, "mass": jnp.sum(p, axis=(1, 2, 3))}
    return Explanation(heatmap=upsample(low, x.shape[1:3]),
                       attribution=p if name is None else None, extras=extras, target=target,
                       method=kind)





@register("excitation_backprop",
          paper="Zhang et al. 2016, Top-down neural attention by excitation backprop, §3.2 "
                "(marginal winning probability)",
          peer="TorchRay excitation_backprop",
          static=_STATIC, needs="rules",
          validate=_validator("excitation_backprop", False))
def excitation_backprop(model: Any, x: Array, target: Array, *, tap: Optional[str] = None,
                        variant: str = "paper") -> Explanation:
    """Excitation backprop: the marginal winning probability of each location given the class.

    Starting from ``P(o_target) = 1``, every linear layer hands a unit's winning probability to
    its inputs in proportion to their excitatory contributions, ``P(a_i | a_j) = a_i w_ij⁺ /
    Σ_k a_k w_kj⁺`` (§3.2; :mod:`xaijax.rules.excitation`); max pooling hands it to the winner.
    The heatmap is the MWP at ``tap`` summed over channels, upsampled to the input size.

    Args:
      model: a zoo Model (rules need its Conv / Dense layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer read (static): a tap name or alias, or ``"input"`` for the image itself
        (TorchRay's function default). Default (``None``): :func:`default_tap`, the layer of
        TorchRay's pointing-game benchmark (VGG16 pool4 ``features.23``, ResNet ``layer3``);
        Zhang et al. also read intermediate layers, where the maps are less noisy than at the
        pixels.
      variant: ``"paper"`` (default) or ``"torchray"`` (static). ``"paper"`` clamps
        every linear layer's inputs to ``a⁺`` (the paper's rule is defined for non-negative
        inputs, so ``P`` stays a probability distribution) and folds BatchNorm into the
        convolution before it; ``"torchray"`` is TorchRay's ``ExcitationBackpropContext``: inputs
        as they are, BatchNorm passes ``P`` through. They agree on VGG above the first
        convolution; on ResNets they differ at the residual sums, whose summands are BatchNorm
        outputs of either sign (TorchRay's ``P`` can turn negative there), and, where a BatchNorm
        scale is negative, at the folded convolution.

    Returns:
      heatmap ``(N, H, W)``: the MWP map upsampled (it sums to ~1 over the tap's locations before
      resizing). attribution: the per-channel MWP ``(N, H, W, C)`` when ``tap="input"``, else
      ``None``. extras: ``low_res`` the map at the tap's resolution (TorchRay's ``resize=False``
      output), ``mass`` the total probability that reached the tap (1 up to what units excited
      by their bias alone drop).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 3, method="excitation_backprop")
      >>> ex.heatmap.shape, ex.extras["low_res"].shape
      ((1, 32, 32), (1, 8, 8))

    References:
      Zhang, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention by Excitation Backprop",
      ECCV 2016, §3.2; TorchRay ``attribution.excitation_backprop.excitation_backprop``.
    """
    return _excitation("excitation_backprop", model, x, target, tap, variant, None)


@register("contrastive_excitation_backprop",
          paper="Zhang et al. 2016, Top-down neural attention by excitation backprop, §3.3 "
                "(contrastive MWP)",
          peer="TorchRay contrastive_excitation_backprop",
          static=_STATIC + ("classifier",), needs="rules",
          validate=_validator("contrastive_excitation_backprop", True))
def contrastive_excitation_backprop(model: Any, x: Array, target: Array, *,
                                    tap: Optional[str] = None, variant: str = "paper",
                                    classifier: Optional[str] = None) -> Explanation:
    """Contrastive excitation backprop: the target's MWP minus that of its dual unit, ReLU'd.

    The dual unit ``ō`` of the target output unit ``o`` has the negated weights ``−w`` (it
    fires for "everything but the class"). The MWP of ``o`` and of ``ō`` are taken at the
    classifier's input and subtracted, the difference is passed down by excitation backprop to
    ``tap``, summed over channels and its positive part kept (§3.3; TorchRay
    ``gradient_to_contrastive_excitation_backprop_saliency``).

    TorchRay computes it with two backward passes (the second after negating the classifier's
    weights) and subtracts at a ``contrast_layer`` it asks for; the rules are linear in the
    signal, so the result is the same for every contrast layer between the classifier and the
    tap (the parity test checks two), and xaijax subtracts inside the classifier's rule, in one
    pass (:func:`xaijax.rules.excitation.contrastive`).

    Args:
      model: a zoo Model.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.
      tap: the layer read (static); default :func:`default_tap` (TorchRay's benchmark layer), or
        ``"input"``.
      variant: ``"paper"`` or ``"torchray"`` (static), as for :func:`excitation_backprop`.
      classifier: the output layer's tap (static); default the last Dense / Conv layer
        (TorchRay's ``_get_classifier_layer``).

    Returns:
      heatmap ``(N, H, W)`` (non-negative); attribution the per-channel signal when
      ``tap="input"``, else ``None``; extras ``low_res`` (at the tap), ``mass`` (the signal's
      sum before the ReLU: ~0, two distributions subtracted).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.explain(m, jnp.ones((1, 32, 32, 3)), 3,
      ...                 method="contrastive_excitation_backprop")
      >>> ex.heatmap.shape
      (1, 32, 32)

    References:
      Zhang et al. 2016, §3.3 (contrastive top-down attention); TorchRay
      ``attribution.excitation_backprop.contrastive_excitation_backprop``.
    """
    return _excitation("contrastive_excitation_backprop", model, x, target, tap, variant,
                       classifier)
