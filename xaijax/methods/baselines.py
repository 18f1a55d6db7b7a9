"""Reference baselines that explain nothing, for the evaluation tables.

``center`` is the centre baseline of the pointing game (Zhang et al. 2016; Gu et al. 2020,
Table 3, "Cntr"): a map that ignores the image and the model and always points at the image
centre. It scores what the photographers' habit of centring objects alone is worth, the floor
that a method has to beat.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import Explanation, check_choice, register

Array = jax.Array

POINTS = ("geometric", "torchray")
"""Where ``center`` puts its peak: the geometric centre of the pixel grid, ``((H−1)/2,
(W−1)/2)``, or TorchRay's point ``(H/2, W/2)`` (pixel indices)."""


def center_point(size, point: str = "geometric") -> Array:
    """The centre ``(u, v)`` = (column, row), in pixel indices, of an image of ``size`` (H, W)."""
    check_choice(point, POINTS, "point", "center")
    h, w = size
    off = 1.0 if point == "geometric" else 0.0
    return jnp.array([(w - off) / 2.0, (h - off) / 2.0], jnp.float32)


def _validate(model, x, opts) -> None:
    """``point`` is known; ``sigma`` > 0."""
    if "point" in opts:
        check_choice(opts["point"], POINTS, "point", "center")
    if "sigma" in opts:
        s = np.asarray(opts["sigma"])
        if s.ndim != 0 or not float(s) > 0:
            raise ValueError(f"method 'center': sigma must be a positive scalar (the Gaussian's "
                             f"standard deviation as a fraction of each image side); got "
                             f"{opts['sigma']!r}")


@register("center",
          paper="Zhang et al. 2016 (centre baseline of the pointing game); Gu et al. 2020, "
                "Table 3 (Cntr)",
          peer="TorchRay attribution_benchmark center",
          static=("point",), validate=_validate)
def center(model: Any, x: Array, target: Array, *, sigma: Any = 0.25,
           point: str = "geometric") -> Explanation:
    """Centre baseline: a Gaussian centred on the image, the same for every image and class.

    ``h(i, j) = exp(−((i − v)² / (σH)² + (j − u)² / (σW)²) / 2)`` with ``(u, v)`` the centre.
    The pointing game's point (the arg-max) is the centre, which is all Zhang et al.'s baseline
    specifies; the Gaussian also makes it a centre-bias prior for the other metrics. Neither the
    model nor the target is used.

    Args:
      model: any model (unused).
      x: ``(N, H, W, C)`` batch (only its shape is used).
      target: ``(N,)`` classes (unused).
      sigma: the standard deviation as a fraction of each side (traced; default 0.25).
      point: ``"geometric"`` (default): the centre of the pixel grid, ``((H−1)/2, (W−1)/2)``; for
        an even side the peak is shared by the two middle pixels, so the pointing game
        (``ties="mean"``) scores their average. ``"torchray"``: ``(H/2, W/2)``, the point of
        TorchRay's ``attribution_benchmark.py`` (``[w / 2, h / 2]``), half a pixel below and
        right of the centre; for even sides it is one pixel, so the pointing game scores exactly
        TorchRay's hits. Static.

    Returns:
      heatmap ``(N, H, W)`` in (0, 1]; extras ``point`` ``(N, 2)``: the centre ``(u, v)`` in
      pixels (TorchRay's point convention).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> ex = xj.methods.center(None, jnp.zeros((1, 4, 6, 3)), jnp.array([0]), point="torchray")
      >>> [int(i) for i in jnp.unravel_index(jnp.argmax(ex.heatmap[0]), (4, 6))]
      [2, 3]

    References:
      Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (the centre
      baseline); Gu et al. 2020 (DSSR), Table 3; TorchRay ``examples/attribution_benchmark.py``
      (``method == "center"``).
    """
    n, h, w = x.shape[:3]
    u, v = center_point((h, w), point)
    s = jnp.asarray(sigma, jnp.float32)
    rows = (jnp.arange(h, dtype=jnp.float32) - v) / (s * h)
    cols = (jnp.arange(w, dtype=jnp.float32) - u) / (s * w)
    heat = jnp.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2))
    return Explanation(heatmap=jnp.broadcast_to(heat, (n, h, w)),
                       extras={"point": jnp.broadcast_to(jnp.stack([u, v]), (n, 2))},
                       target=target, method="center")
