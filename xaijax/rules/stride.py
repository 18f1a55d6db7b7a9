"""The Oramas stride fix: back-propagate through strided layers with stride 1 (Oramas §3.3).

A convolution / pooling block with mask ``M x M``, stride ``S`` and padding ``O`` maps an
``A x A`` input to ``B x B`` with (Eq. 2–3)

.. math::  A + 2O = M + (B - 1) S, \\qquad B = \\lfloor (A + 2O - M) / S \\rfloor + 1 .

Back-propagating a ``B x B`` signal through a strided block scatters it on a grid of period
``S``, which shows as grid artefacts in DeconvNet / guided-backprop heatmaps. The fix (§3.3):
resample the incoming ``A_d x A_d = B x B`` signal by **nearest neighbour** to the size the block
would produce with stride one, ``A'_d = B|_{S=1} = A + 2O - M + 1``, and back-propagate it
through the **same block with stride 1** (same mask, padding, dilation, groups; for max pooling
the switches are those of the stride-1 pooling of the same forward input).

What is implemented, exactly:

* the forward value is the layer's own (strided) output; only the backward pass changes;
* the rule acts on :class:`~xaijax.nn.layers.Conv`, :class:`~xaijax.nn.layers.MaxPool` and
  :class:`~xaijax.nn.layers.AvgPool` layers whose stride is larger than one along an axis (a
  stride-1 layer keeps its ordinary backward pass). ``AdaptiveAvgPool`` is a fixed averaging
  matrix rather than a strided window and is left alone;
* ``M`` is the effective mask ``d·(M-1)+1`` for dilated convolutions, and ``2·O`` is the sum of
  the two paddings (asymmetric "SAME" padding included). For pooling with ``ceil_mode`` the
  stride-1 block uses the symmetric padding ``O`` only (ceil mode does not exist at stride 1);
* nearest-neighbour resampling uses half-pixel centres, ``src = floor((i + 1/2) · B / A'_d)``
  (MATLAB ``imresize(..., 'nearest')``, the MatConvNet setting of the paper; ``jax.image.resize``
  ``"nearest"``); each axis is resampled independently;
* no rescaling: a stride-1 backward pass sums about ``S²`` times as many contributions as the
  strided one, so the result is ``≈ S²`` times larger. A heatmap is displayed normalised, so
  this constant is immaterial; it is not compensated, as the paper does not;
* the parameter cotangent (``∂/∂kernel``) is the ordinary one, so the rule never corrupts a
  gradient with respect to the weights.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from xaijax.nn import layers as L
  >>> pool = L.MaxPool(window=2, strides=2)
  >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  >>> jax.vjp(lambda z: stride_fixed(pool, {}, z), x)[1](jnp.ones((1, 2, 2, 1)))[0][0, ..., 0]
  Array([[0., 0., 0., 0.],
         [0., 1., 1., 1.],
         [0., 1., 1., 1.],
         [0., 1., 1., 1.]], dtype=float32)

References:
  Oramas, Wang, Tuytelaars 2019, "Visual Explanation by Interpretation", §3.3, Eq. 2–3, Fig. 3.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite, by_type

Array = jax.Array

STRIDED_TYPES = (L.Conv, L.MaxPool, L.AvgPool)


def layer_strides(layer: L.Layer) -> Tuple[int, int]:
    """The (row, column) stride of a Conv / MaxPool / AvgPool layer."""
    if isinstance(layer, L.Conv):
        return L._pair(layer.strides)
    if isinstance(layer, (L.MaxPool, L.AvgPool)):
        return L._pair(layer.strides if layer.strides is not None else layer.window)
    raise TypeError(f"the stride fix applies to Conv, MaxPool and AvgPool layers; got "
                    f"{type(layer).__name__} (tap {layer.tap!r})")


def stride_one(layer: L.Layer) -> L.Layer:
    """An unbound copy of ``layer`` with stride 1 (same mask, padding, dilation, groups)."""
    if isinstance(layer, L.Conv):
        return layer.clone(parent=None, strides=1, name=None, tap=None)
    return layer.clone(parent=None, strides=1, ceil_mode=False, name=None, tap=None)


def resample_nearest(g: Array, size: Tuple[int, int]) -> Array:
    """Nearest-neighbour resize of NHWC ``g`` to ``size`` with half-pixel centres.

    ``out[i] = g[floor((i + 0.5) · B / size)]`` per spatial axis (``B`` the input length).
    """
    out = g
    for axis, new in zip((1, 2), size):
        old = g.shape[axis]
        if old == new:
            continue
        idx = np.minimum(np.floor((np.arange(new) + 0.5) * old / new).astype(np.int32), old - 1)
        out = jnp.take(out, jnp.asarray(idx), axis=axis)
    return out


def stride_fixed(layer: L.Layer, params: dict, x: Array) -> Array:
    """Rule: forward ``layer`` unchanged; backward through the stride-1 block after resampling
    the incoming signal to ``A + 2O - M + 1`` by nearest neighbour (Oramas Eq. 3 with S = 1).

    Args:
      layer: a Conv, MaxPool or AvgPool layer (a stride-1 layer is returned unchanged).
      params: its parameters (``kernel``/``bias`` for Conv, none for pooling).
      x: its NHWC input.

    Returns:
      ``layer.forward(params, x)``.

    References:
      Oramas et al. 2019, §3.3, Eq. 2–3.
    """
    if layer_strides(layer) == (1, 1):
        return layer.forward(params, x)
    one = stride_one(layer)
    # B|_{S=1} = A + 2O - M + 1: the output size of the stride-1 block (static)
    size = tuple(jax.eval_shape(one.forward, params, x).shape[1:3])

    @jax.custom_vjp
    def rule(p, z):
        return layer.forward(p, z)

    def fwd(p, z):
        y, vjp_strided = jax.vjp(layer.forward, p, z)
        _, vjp_one = jax.vjp(lambda zz: one.forward(p, zz), z)
        return y, (vjp_strided, vjp_one)

    def bwd(res, g):
        vjp_strided, vjp_one = res
        p_ct, _ = vjp_strided(g)
        (x_ct,) = vjp_one(resample_nearest(g, size))
        return p_ct, x_ct

    rule.defvjp(fwd, bwd)
    return rule(params, x)


def grid_energy(heatmap: Array, stride: int) -> Array:
    """Fraction of a heatmap's spectral power at the frequencies of a period-``stride`` grid.

    With ``P = |FFT2(h − mean h)|²`` (the DC term removed), the measure is

    .. math::  E_S(h) = \\frac{\\sum_{(k, l) \\ne (0, 0),\\, 0 \\le k, l < S} P(kH/S,\\, lW/S)}
                            {\\sum_{u, v} P(u, v)} ,

    the energy of the harmonics of a pattern repeating every ``S`` pixels (the artefact of a
    cumulative stride ``S``; the harmonics of every divisor of ``S`` are included). White noise
    scores ``(S² − 1)/(HW − 1)``; a pure period-``S`` grid scores 1.

    Args:
      heatmap: ``(N, H, W)`` maps; ``H`` and ``W`` must be multiples of ``stride``.
      stride: the grid period in pixels (e.g. the product of the strides above a layer).

    Returns:
      ``(N,)`` fractions in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> grid = jnp.tile(jnp.array([[1.0, 0.0], [0.0, 0.0]]), (4, 4))[None]
      >>> float(grid_energy(grid, 2)[0])
      1.0
    """
    h = jnp.asarray(heatmap)
    n, hh, ww = h.shape
    s = int(stride)
    if s < 2 or hh % s or ww % s:
        raise ValueError(f"stride must be >= 2 and divide the heatmap size {hh}x{ww}; got "
                         f"{stride}")
    h = h - jnp.mean(h, axis=(1, 2), keepdims=True)
    p = jnp.abs(jnp.fft.fft2(h)) ** 2
    rows = np.arange(s) * (hh // s)
    cols = np.arange(s) * (ww // s)
    at = p[:, rows][:, :, cols]
    return (jnp.sum(at, axis=(1, 2)) - at[:, 0, 0]) / jnp.maximum(jnp.sum(p, axis=(1, 2)),
                                                                  1e-30)


def stride_fix_rules() -> Composite:
    """Composite: :func:`stride_fixed` on every Conv, MaxPool and AvgPool (stride-1 layers keep
    their ordinary backward pass)."""
    return by_type({t: stride_fixed for t in STRIDED_TYPES})
