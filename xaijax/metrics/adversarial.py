"""Adversarial evidence: how far an explanation drives a network's neurons outside the range
the original image gave them (Wagner et al. 2019, §3.2, Eq. 4–5; the measure behind Table 1).

FGVis' defense (:mod:`xaijax.rules.fgvis`) keeps the optimisation from exploiting such neurons;
these functions measure, for any explanation image ``e`` (a defended or undefended FGVis result,
a masked image of any other method), the share of neurons outside their bounds and how far.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.rules.fgvis import bounds, default_taps

Array = jax.Array


def bound_violation(h_x: Array, h_e: Array) -> Tuple[Array, Array]:
    """How far an activation ``h_e`` leaves the bounds of Eq. 5 set by ``h_x``.

    Args:
      h_x: activation for the original image.
      h_e: activation for the explanation (same shape).

    Returns:
      ``(outside, excess)``: boolean map of neurons violating Eq. 4 and the distance
      ``max(h_e - b_u, b_l - h_e, 0)`` outside the bounds.

    Examples:
      >>> import jax.numpy as jnp
      >>> o, d = bound_violation(jnp.array([1.0, 0.0]), jnp.array([2.0, 0.0]))
      >>> o.tolist(), d.tolist()
      ([True, False], [1.0, 0.0])

    References:
      Wagner et al. 2019, §3.2, Eq. 4–5.
    """
    b_l, b_u = bounds(h_x)
    excess = jnp.maximum(jnp.maximum(h_e - b_u, b_l - h_e), 0.0)
    return excess > 0, excess


def violation_summary(model, x: Array, e: Array, e_start: Optional[Array] = None,
                      taps: Optional[Iterable[str]] = None) -> Dict[str, Array]:
    """How much the explanations ``e`` violate Eq. 4 at the filtered nonlinearities, per image.

    Args:
      model: an xaijax Model.
      x: original images ``(N, H, W, C)`` (they set the bounds of Eq. 5).
      e: explanations ``(N, H, W, C)``.
      e_start: the explanations the optimisation started from (e.g. zeros for the generation
        game); adds the violations the optimisation *created*.
      taps: nonlinearity taps; default :func:`default_taps`.

    Returns:
      a dict of ``(N,)`` arrays, ``"outside"`` (share of neurons outside their bounds) and
      ``"excess"`` (mean distance outside, over all neurons); with ``e_start`` also ``"new_outside"`` (share
      outside for ``e`` but inside for ``e_start``) and ``"excess_growth"`` (mean of
      ``max(excess(e) - excess(e_start), 0)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> {k: float(v[0]) for k, v in violation_summary(m, x, x).items()}  # e = x: inside
      {'excess': 0.0, 'outside': 0.0}

    References:
      Wagner et al. 2019, §3.2, Eq. 4–5.
    """
    taps = tuple(default_taps(model) if taps is None else taps)
    return _violation_summary(model, x, e, e_start, taps)


@functools.partial(jax.jit, static_argnames=("taps",))
def _violation_summary(model, x, e, e_start, taps):
    # compiled as one program (op-by-op it took ~50 s on EfficientNet-Lite0 on CPU)
    _, ax = model.forward(x, capture=taps)
    _, ae = model.forward(e, capture=taps)
    a0 = model.forward(e_start, capture=taps)[1] if e_start is not None else None
    sums = {"outside": 0.0, "excess": 0.0}
    if a0 is not None:
        sums.update(new_outside=0.0, excess_growth=0.0)
    count = 0
    for t in taps:
        o, d = bound_violation(ax[t], ae[t])
        axes = tuple(range(1, o.ndim))
        sums["outside"] = sums["outside"] + jnp.sum(o, axis=axes)
        sums["excess"] = sums["excess"] + jnp.sum(d, axis=axes)
        if a0 is not None:
            o0, d0 = bound_violation(ax[t], a0[t])
            sums["new_outside"] = sums["new_outside"] + jnp.sum(o & ~o0, axis=axes)
            sums["excess_growth"] = sums["excess_growth"] + jnp.sum(
                jnp.maximum(d - d0, 0.0), axis=axes)
        count += int(np.prod(o.shape[1:]))
    return {k: v / count for k, v in sums.items()}
