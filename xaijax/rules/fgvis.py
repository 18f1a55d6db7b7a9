"""The FGVis gradient filter (Wagner et al. 2019, §3.2, Eq. 4–6).

FGVis defends a mask optimisation against *adversarial evidence* by only letting a neuron be
driven by the explanation ``e`` inside the range it had for the original image ``x``. Instead of
clipping activations (Eq. 5, which would change the model), the paper adds a layer after every
nonlinearity that is the **identity in the forward pass** and, in the backward pass, lets the
error signal through only where the current activation lies inside the bounds of Eq. 5:

.. math::

    b_u = \\max(0, h(x)),\\quad b_l = \\min(0, h(x)),\\qquad
    \\gamma = \\bar\\gamma \\cdot [h(e) \\le b_u] \\cdot [h(e) \\ge b_l].

Here that layer is a tap *edit* (see :mod:`xaijax.nn.intercept`): ``bound_filter(h_x)`` returns
``fn(a) -> a`` with a :func:`jax.custom_vjp` backward, applied with
``model.forward(e, edits={tap: bound_filter(h_x[tap]) ...})``. The model itself is never edited.

Deviation (rounding): the filter compares ``h(e)`` with the bounds widened by
:data:`ROUNDING_TOLERANCE` × machine epsilon × the layer's largest ``|h(x)|`` (per image). The
bounds come from one forward pass of ``x`` and ``h(e)`` from another, compiled separately (the
game's forward runs inside ``lax.scan`` under autodiff), so for ``e = x`` — the start of the
preservation and deletion games, where Eq. 6 passes every neuron — the two differ in the last
bits. Compared exactly, that rounding put 38 % of the active neurons of a pretrained
EfficientNet-Lite0 "outside" their bounds at the first step (up to 48 % at one layer; largest
excess 4e-6 of the layer's maximum, 34 ε in float32) and cut most of the gradient the paper's
first step uses. The tolerance (1000 ε: 1.2e-4 of the layer's maximum in float32) is ~30× that
rounding and far below the violations the defense exists to stop.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array


def bounds(h_x: Array) -> Tuple[Array, Array]:
    """The bounds of Eq. 5 from the original image's activation ``h_x``.

    Args:
      h_x: activation of one nonlinearity for the original image.

    Returns:
      ``(b_l, b_u) = (min(0, h_x), max(0, h_x))``.

    Examples:
      >>> import jax.numpy as jnp
      >>> bl, bu = bounds(jnp.array([-1.0, 0.0, 2.0]))
      >>> bl.tolist(), bu.tolist()
      ([-1.0, 0.0, 0.0], [0.0, 0.0, 2.0])

    References:
      Wagner et al. 2019, §3.2, Eq. 5.
    """
    h_x = jax.lax.stop_gradient(h_x)
    return jnp.minimum(h_x, 0.0), jnp.maximum(h_x, 0.0)


@jax.custom_vjp
def bounded_identity(a: Array, b_l: Array, b_u: Array) -> Array:
    """Identity in the forward pass; Eq. 6 in the backward pass.

    The gradient reaching ``a`` is the incoming gradient where ``b_l <= a <= b_u`` and zero
    elsewhere; no gradient flows into the bounds.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> g = jax.grad(lambda a: bounded_identity(a, jnp.zeros(3), jnp.ones(3)).sum())
      >>> g(jnp.array([-0.5, 0.5, 1.5])).tolist()
      [0.0, 1.0, 0.0]

    References:
      Wagner et al. 2019, §3.2, Eq. 6.
    """
    return a


def _bi_fwd(a, b_l, b_u):
    return a, (a, b_l, b_u)


def _bi_bwd(res, g):
    a, b_l, b_u = res
    keep = (a <= b_u) & (a >= b_l)
    return (jnp.where(keep, g, jnp.zeros_like(g)), jnp.zeros_like(b_l), jnp.zeros_like(b_u))


bounded_identity.defvjp(_bi_fwd, _bi_bwd)


#: bounds of Eq. 5 are widened by this many machine epsilons × the layer's largest ``|h(x)|`` per
#: image before Eq. 6 compares (see the module docstring)
ROUNDING_TOLERANCE = 1000.0


def rounding_slack(h_x: Array) -> Array:
    """How far ``h(e)`` may pass a bound of Eq. 5 and still count as inside: ``ROUNDING_TOLERANCE
    · ε · max |h_x|`` over each image's activation (axis 0 is the batch), broadcastable to
    ``h_x``.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(rounding_slack(jnp.array([[0.5, -2.0]]))[0, 0]) == 1000 * 2.0 * 2.0 ** -23
      True
    """
    h_x = jax.lax.stop_gradient(h_x)
    scale = jnp.max(jnp.abs(h_x), axis=tuple(range(1, h_x.ndim)), keepdims=True)
    return ROUNDING_TOLERANCE * jnp.finfo(h_x.dtype).eps * scale


def bound_filter(h_x: Array) -> Callable[[Array], Array]:
    """A tap edit ``fn(a) -> a`` implementing the FGVis clipping layer for one nonlinearity.

    Args:
      h_x: the nonlinearity's activation for the original image (same shape as the activation
        the edit will see; batch axis included).

    Returns:
      ``fn(a) = bounded_identity(a, b_l - s, b_u + s)`` with ``(b_l, b_u) = bounds(h_x)`` and
      ``s = rounding_slack(h_x)`` (float rounding, see the module docstring).

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> _, acts = m.forward(x, capture=["relu1"])
      >>> out, _ = m.forward(0.5 * x, edits={"relu1": bound_filter(acts["relu1"])})
      >>> bool(jnp.allclose(out, m(0.5 * x)))  # identity in the forward pass
      True

    References:
      Wagner et al. 2019, §3.2, Eq. 5–6.
    """
    b_l, b_u = bounds(h_x)
    slack = rounding_slack(h_x)
    b_l, b_u = b_l - slack, b_u + slack
    return lambda a: bounded_identity(a, b_l, b_u)


def default_taps(model) -> Tuple[str, ...]:
    """The nonlinearities FGVis filters: every ReLU/ReLU6 tap of the model.

    The paper applies the constraint "after all nonlinearity-layers of the network, besides
    the final classification layer" (§3.2). The final classification layer's nonlinearity is
    the softmax on the logits, which is not a tap; hidden fully connected ReLUs (VGG16's and
    AlexNet's ``classifier.1`` / ``classifier.4``) are nonlinearities of the network and are
    filtered, as in the paper's VGG16/AlexNet experiments.
    """
    taps = tuple(model.nonlinearity_taps)
    if not taps:
        raise ValueError(
            f"model {model.spec.name!r} has no nonlinearity taps (ReLU/ReLU6 modules from "
            "xaijax.nn.layers), so the FGVis defense has nowhere to act; build the model's "
            "nonlinearities from xaijax.nn.layers or pass defense=False")
    return taps


def defense_edits(model, x: Array, taps: Optional[Iterable[str]] = None
                  ) -> Dict[str, Callable[[Array], Array]]:
    """``{tap: bound_filter(h_x[tap])}`` for every filtered nonlinearity, bounds from ``x``.

    Args:
      model: an xaijax :class:`~xaijax.models.Model`.
      x: the original image batch (bounds of Eq. 5 are taken from its activations).
      taps: nonlinearity taps to filter; default :func:`default_taps`.

    Returns:
      edits for ``model.forward(e, edits=...)``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> sorted(defense_edits(m, jnp.ones((1, 32, 32, 3))))
      ['relu1', 'relu2', 'relu3', 'relu4', 'relu5']

    References:
      Wagner et al. 2019, §3.2.
    """
    taps = tuple(default_taps(model) if taps is None else taps)
    _, acts = model.forward(x, capture=taps)
    return {t: bound_filter(acts[t]) for t in taps}
