"""Gradient-based methods (survey §4.2–4.5)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from xaijax.methods.base import Explanation, input_gradient, logits_fn, register

Array = jax.Array


@register("gradient")
def gradient(model: Any, x: Array, target: Array) -> Explanation:
    """Gradient saliency (Simonyan et al. 2014): max over channels of |∂S_c/∂x|.

    Args:
      model: a zoo Model or any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` normalised batch.
      target: ``(N,)`` int class per image.

    Returns:
      heatmap ``max_c |∂S/∂x|`` ``(N, H, W)``; attribution the raw gradient ``(N, H, W, C)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.methods.gradient(m, jnp.ones((1, 32, 32, 3)), jnp.array([0])).heatmap.shape
      (1, 32, 32)

    References:
      Ayyar et al. 2021 (survey), §4.2, Eq. 6; Simonyan, Vedaldi & Zisserman 2014.
    """
    g = input_gradient(logits_fn(model), x, target)
    return Explanation(heatmap=jnp.max(jnp.abs(g), axis=-1), attribution=g, target=target,
                       method="gradient")
