"""The FGVis visualisation types (Wagner et al. 2019, Fig. 2) as images."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np

from xaijax.models.base import images_from_normalised

Array = jax.Array


def fgvis_images(model: Any, x: Array, ex, *,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> Dict[str, np.ndarray]:
    """The FGVis visualisation types of Fig. 2 as RGB images in [0, 1].

    Args:
      model: the Model explained (its mean/std undo the normalisation), or any callable when
        ``mean`` and ``std`` are given.
      x: the normalised batch that was explained.
      ex: the :func:`fgvis` result.
      mean, std: per-channel normalisation (default: the model's).

    Returns:
      ``{name: (N, H, W, 3) float32 in [0, 1]}`` with ``image`` (a), ``mask`` (b; for deletion
      and repression its colours are complementary to the image's), ``explanation`` (c;
      ``e = m·x``, grey where removed), ``mean_mask`` (f; the heatmap as grey) and, for the
      deletion/repression games, ``complement_mask`` (d; ``1 - m``, true colours) and
      ``evidence`` (e; ``ẽ = x·(1 - m)``).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> ex = xj.explain(m, x, 0, method="fgvis", iterations=2, lam=0.0)
      >>> sorted(fgvis_images(m, x, ex))
      ['complement_mask', 'evidence', 'explanation', 'image', 'mask', 'mean_mask']

    References:
      Wagner et al. 2019, Fig. 2 (visualisation types a–f).
    """
    def to_pixels(z):
        return images_from_normalised(model, z, mean=mean, std=std)

    mask = np.asarray(ex.extras["mask"], np.float32)
    heat = np.asarray(ex.extras["mean_mask"], np.float32)
    out = {
        "image": to_pixels(x),
        "mask": np.clip(mask, 0.0, 1.0),
        "explanation": to_pixels(ex.extras["explanation"]),
        "mean_mask": np.repeat(np.clip(heat, 0.0, 1.0)[..., None], 3, axis=-1),
    }
    if "complement_mask" in ex.extras:
        out["complement_mask"] = np.clip(np.asarray(ex.extras["complement_mask"]), 0.0, 1.0)
        out["evidence"] = to_pixels(ex.extras["evidence"])
    return out
