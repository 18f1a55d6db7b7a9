"""ReLU backward rules: guided backpropagation and DeconvNet (survey §4.1–4.3, Fig. 5).

For a rectifier ``y = relu(x)`` with incoming signal ``g = ∂S/∂y`` the three backward passes of
the survey's Fig. 5 are

* gradient (Fig. 5b): ``g · [x > 0]``  (the ordinary derivative; no rule needed),
* DeconvNet (Fig. 5c): ``relu(g)`` — rectify the signal, ignore the forward pass,
* guided backprop (Fig. 5d): ``relu(g) · [x > 0]`` — both.

For ``ReLU6`` (EfficientNet-Lite) the forward mask is its own derivative ``[0 < x < 6]`` (torch's
``hardtanh_backward`` convention at the kinks) and the rectification is the same.

Each rule has the intercept signature ``rule(layer, params, x) -> y``: it computes exactly
``layer.forward(params, x)`` and only changes the backward pass (a :func:`jax.custom_vjp`).
:func:`guided_backprop_rules` and :func:`deconvnet_rules` are the composites that put the rule
on every ReLU / ReLU6 (:func:`xaijax.nn.by_type`).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from xaijax.nn import layers as L
  >>> x = jnp.array([-1.0, 2.0, 3.0])
  >>> jax.vjp(lambda z: guided_relu(L.ReLU(), {}, z), x)[1](jnp.array([5.0, -1.0, 2.0]))[0]
  Array([0., 0., 2.], dtype=float32)

References:
  Ayyar, Benois-Pineau, Zemmari 2021 (survey), §4.1 (DeconvNet rectification), §4.3 (guided
  backpropagation), Fig. 5; Zeiler & Fergus 2014; Springenberg et al. 2015.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite, by_type

Array = jax.Array


def forward_mask(layer: L.Layer, x: Array) -> Array:
    """The derivative of the rectifier at ``x`` as a 0/1 mask (torch conventions at kinks).

    Raises:
      TypeError: for a nonlinearity that is not ReLU / ReLU6.
    """
    if isinstance(layer, L.ReLU6):
        return ((x > 0.0) & (x < 6.0)).astype(x.dtype)
    if isinstance(layer, L.ReLU):
        return (x > 0.0).astype(x.dtype)
    raise TypeError(f"ReLU rules apply to xaijax ReLU / ReLU6 layers; got {type(layer).__name__}"
                    f" (tap {layer.tap!r})")


def _rectifier_rule(layer: L.Layer, params: dict, x: Array, *, use_mask: bool) -> Array:
    forward_mask(layer, x)  # type check at trace time

    @jax.custom_vjp
    def rule(z):
        return layer.forward(params, z)

    def fwd(z):
        return layer.forward(params, z), z

    def bwd(z, g):
        g = jnp.maximum(g, 0.0)
        if use_mask:
            g = g * forward_mask(layer, z)
        return (g,)

    rule.defvjp(fwd, bwd)
    return rule(x)


def guided_relu(layer: L.Layer, params: dict, x: Array) -> Array:
    """Guided-backprop rectifier: forward ``layer``, backward ``relu(g) · f'(x)``.

    Args:
      layer: a :class:`~xaijax.nn.layers.ReLU` or :class:`~xaijax.nn.layers.ReLU6`.
      params: its (empty) parameters.
      x: its input.

    Returns:
      ``layer.forward(params, x)``.

    References:
      Survey §4.3, Fig. 5(d); Springenberg et al. 2015.
    """
    return _rectifier_rule(layer, params, x, use_mask=True)


def deconvnet_relu(layer: L.Layer, params: dict, x: Array) -> Array:
    """DeconvNet rectifier: forward ``layer``, backward ``relu(g)`` (forward mask ignored).

    Args:
      layer: a :class:`~xaijax.nn.layers.ReLU` or :class:`~xaijax.nn.layers.ReLU6`.
      params: its (empty) parameters.
      x: its input.

    Returns:
      ``layer.forward(params, x)``.

    References:
      Survey §4.1 ("Rectification") and §4.2, Fig. 5(c); Zeiler & Fergus 2014.
    """
    return _rectifier_rule(layer, params, x, use_mask=False)


def guided_backprop_rules() -> Composite:
    """Composite: :func:`guided_relu` on every ReLU and ReLU6."""
    return by_type({L.ReLU: guided_relu, L.ReLU6: guided_relu})


def deconvnet_rules() -> Composite:
    """Composite: :func:`deconvnet_relu` on every ReLU and ReLU6."""
    return by_type({L.ReLU: deconvnet_relu, L.ReLU6: deconvnet_relu})
