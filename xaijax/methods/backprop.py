"""DeconvNet and guided backpropagation (survey §4.1–4.3), with the Oramas stride fix.

Both are the input gradient computed with a modified backward pass: a ReLU rule from
:mod:`xaijax.rules.relu` on every ReLU / ReLU6 (survey Fig. 5 (c), (d)) and, with
``stride_fix=True``, the stride-1 rule of :mod:`xaijax.rules.stride` on every strided Conv,
MaxPool and AvgPool (Oramas §3.3, Eq. 2–3). Max-pooling keeps the forward "switches" (its
ordinary backward pass), which is the DeconvNet unpooling (survey §4.2).

The backward pass starts either from a class score (``tap=None``, the default) or from one
filter of one layer (``tap=..., filter=...``), to visualise what that filter responds to
(Zeiler & Fergus 2014, §2.1; Oramas §3.2, which follows Grün et al. 2016): every other channel
of the layer is set to zero and the filter's own feature map is passed down
(``start="activation"``, the default: the cotangent at the tap is the activation of channel
``filter`` and zero elsewhere). ``start="max"`` keeps only the strongest activation of the
channel (Zeiler & Fergus' "single strongest activation" used for their Fig. 2 projections).
Taps are best chosen at ReLU outputs (``model.nonlinearity_taps``), the activations the papers
project.

Heatmap (both methods): ``max_c |·|`` over the colour channels of the reconstruction, the same
reduction as the gradient (survey Eq. 6); ``attribution`` is the signed per-channel
reconstruction, the image that Springenberg et al. and Zeiler & Fergus display.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import Explanation, input_gradient, register, require_model
from xaijax.methods.gradient import heatmap_maxabs
from xaijax.models.base import Model
from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite, chain
from xaijax.rules.relu import deconvnet_rules, guided_backprop_rules
from xaijax.rules.stride import stride_fix_rules

Array = jax.Array

_STATIC = ("tap", "start", "stride_fix")
STARTS = ("activation", "max")


def start_cotangent(a: Array, filt: Array, start: str) -> Array:
    """The signal injected at a tap to visualise channel ``filt[i]`` of image ``i``.

    Args:
      a: the tap's activation ``(N, ..., C)``.
      filt: ``(N,)`` channel index per image.
      start: ``"activation"`` (the channel's feature map, other channels zero) or ``"max"``
        (only the channel's largest activation, at its position).

    Returns:
      an array shaped like ``a``.
    """
    n, c = a.shape[0], a.shape[-1]
    onehot = jax.nn.one_hot(filt, c, dtype=a.dtype).reshape((n,) + (1,) * (a.ndim - 2) + (c,))
    chan = a * onehot
    if start == "activation":
        return chan
    if start == "max":
        flat = jnp.sum(chan, axis=-1).reshape(n, -1)
        pos = jax.nn.one_hot(jnp.argmax(flat, axis=1), flat.shape[1], dtype=a.dtype)
        return chan * pos.reshape(a.shape[:-1] + (1,))
    raise ValueError(f"start must be one of {STARTS}; got {start!r}")


def modified_backprop(model: Model, x: Array, target: Array, rules: Composite, *,
                      tap: Optional[str], filt: Any, start: str) -> Array:
    """Input gradient with ``rules`` in the backward pass, from a class score or a filter."""
    need = (L.ReLU, L.ReLU6)
    if tap is None:
        return input_gradient(lambda z: model.forward(z, rules=rules, require=need)[0], x, target)
    name = model.resolve(tap)
    filt = jnp.broadcast_to(jnp.asarray(filt, jnp.int32), (x.shape[0],))

    def act(z):
        return model.forward(z, capture=[name], rules=rules, require=need)[1][name]

    a, vjp = jax.vjp(act, x)
    return vjp(start_cotangent(a, filt, start))[0]


def _validate(model, x, opts) -> None:
    """``start`` is a known mode; ``filter`` is a channel of ``tap`` (one int or one per
    image)."""
    if "start" in opts and opts["start"] not in STARTS:
        raise ValueError(f"start must be one of {STARTS}; got {opts['start']!r}")
    tap, filt = opts.get("tap"), opts.get("filter")
    if tap is None or filt is None or not isinstance(model, Model):
        return
    f = np.asarray(filt)
    if f.dtype.kind not in "iu":
        raise TypeError(f"filter must be an int channel index (or one per image); got {filt!r}")
    if f.ndim not in (0, 1) or (f.ndim == 1 and f.shape[0] != x.shape[0]):
        raise ValueError(f"filter must be an int or have shape ({x.shape[0]},), one channel per "
                         f"image; got shape {f.shape}")
    name = model.resolve(tap)
    c = model.tap_shapes(tuple(x.shape[1:3]))[name][-1]
    if np.any((f < 0) | (f >= c)):
        raise ValueError(f"filter must be a channel of tap {name!r}, in 0..{c - 1}; got "
                         f"{f.tolist()}")


def _backprop(kind, model, x, target, tap, filter, start, stride_fix):
    model = require_model(model, kind, "rule-aware layers")
    rules = guided_backprop_rules() if kind == "guided_backprop" else deconvnet_rules()
    if stride_fix:
        rules = chain(rules, stride_fix_rules())
    g = modified_backprop(model, x, target, rules, tap=tap, filt=filter, start=start)
    return Explanation(heatmap=heatmap_maxabs(g), attribution=g, target=target, method=kind)


@register("guided_backprop",
          paper="Springenberg et al. 2015, §3.4; stride fix: Oramas et al. 2019, §3.3",
          peer="Captum GuidedBackprop",
          static=_STATIC, needs="rules", validate=_validate)
def guided_backprop(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
                    filter: Any = 0, start: str = "activation",
                    stride_fix: bool = False) -> Explanation:
    """Guided backpropagation: the gradient with ReLUs passing back ``relu(g)·[x > 0]``.

    Args:
      model: a zoo Model (rules need its ReLU layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` classes (used when ``tap`` is None).
      tap: start from this layer instead of the class score (static); a tap name or alias.
      filter: channel of ``tap`` to visualise: an int or ``(N,)`` ints (traced, so looping over
        filters does not recompile).
      start: ``"activation"`` (the channel's feature map) or ``"max"`` (its strongest
        activation only); static.
      stride_fix: apply the Oramas stride fix on every strided Conv / MaxPool / AvgPool
        (static); see :mod:`xaijax.rules.stride` for exactly what it does.

    Returns:
      attribution: the signed reconstruction ``(N, H, W, C)``; heatmap: ``max_c |·|``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> ex = xj.methods.guided_backprop(m, jnp.ones((1, 32, 32, 3)), jnp.array([0]),
      ...                                 tap="relu3", filter=5, stride_fix=True)
      >>> ex.heatmap.shape
      (1, 32, 32)

    References:
      Survey §4.3, Fig. 5(d); Springenberg et al. 2015; Oramas et al. 2019 §3.2–3.3 (filter
      visualisation, stride fix).
    """
    return _backprop("guided_backprop", model, x, target, tap, filter, start, stride_fix)


@register("deconvnet",
          paper="Zeiler & Fergus 2014, §2.1; stride fix: Oramas et al. 2019, §3.3",
          peer="Captum Deconvolution",
          static=_STATIC, needs="rules", validate=_validate)
def deconvnet(model: Model, x: Array, target: Array, *, tap: Optional[str] = None,
              filter: Any = 0, start: str = "activation", stride_fix: bool = False) -> Explanation:
    """DeconvNet: the backward pass with ReLUs passing back ``relu(g)`` (rectified signal,
    forward mask ignored), max-pool switches and transposed filters.

    Args:
      model: a zoo Model (rules need its ReLU layers).
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` classes (used when ``tap`` is None).
      tap: start from this layer instead of the class score (static).
      filter: channel of ``tap`` to visualise: an int or ``(N,)`` ints (traced).
      start: ``"activation"`` or ``"max"`` (static).
      stride_fix: apply the Oramas stride fix (static).

    Returns:
      attribution: the signed reconstruction ``(N, H, W, C)``; heatmap: ``max_c |·|``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.deconvnet(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Survey §4.1 (unpooling, rectification, filtering) and §4.2, Fig. 5(c); Zeiler & Fergus
      2014; Oramas et al. 2019 §3.3 (stride fix).
    """
    return _backprop("deconvnet", model, x, target, tap, filter, start, stride_fix)
