"""Layer-wise relevance propagation (LRP) rules as ``jax.custom_vjp`` functions.

LRP (survey §5.1, Eq. 11–15) redistributes the class score backwards, layer by layer. Written as
a *modified gradient* (zennit's formulation), the signal that flows backwards between layers **is
the relevance** ``R``; a linear layer ``z = W a + b`` with rule parameters turns ``R_out`` into
``R_in`` and everything else (ReLU, BatchNorm) passes ``R`` through unchanged.

Every LRP rule here is a preset of one general form, :class:`BasicRule` (zennit's ``BasicHook``):

1. **input modifiers** ``a -> a_k`` (e.g. ``a⁺ = max(a, 0)``),
2. **parameter modifiers** ``θ -> θ_k`` (e.g. ``W⁺``, ``W + γ W⁺``, zeroed bias),
3. **output modifiers** ``z_k -> z_k'`` (identity for all presets),
4. a **gradient mapper** ``(R_out, [z_k]) -> [c_k]`` (e.g. ``c = R_out / (z + ε sign z)``),
5. a **reducer** ``([a_k], [∂(c_k·z_k)/∂a_k]) -> R_in`` (e.g. ``a⁺ g⁺ + a⁻ g⁻``),

where ``z_k = layer.forward(θ_k, a_k)`` and the gradients are vector-Jacobian products of the
modified forward passes. The rule's forward value is always the layer's own forward.

Presets (all zennit-compatible, including zennit's stabiliser ``z + ε·sign(z)`` with
``sign(0) = +1`` and its handling of biases):

* :func:`epsilon` — LRP-ε, Eq. 13; ``epsilon=0`` is LRP-0, Eq. 12.
* :func:`gamma` — LRP-γ, Eq. 14 (the generalised, sign-aware form of zennit's ``Gamma``).
* :func:`alpha_beta` — LRP-αβ, Eq. 15 (α = β + 1).
* :func:`zplus` — z⁺ (αβ with α=1, β=0; the bias enters only with its positive part).
* :func:`zbox` — zᴮ for the input layer (Montavon et al. 2017) with per-channel bounds.
* :func:`norm` — ``R_in = a · ∂(c·z)/∂a`` with ``c = R/stab(z)`` for parameter-free linear layers
  (sum pooling / average pooling, the residual :class:`~xaijax.nn.layers.Add`): each input
  receives relevance in proportion to its contribution to the output.
* :func:`pass_rule` — identity backward (nonlinearities, folded BatchNorm).

Composites for whole models (``epsilon``, ``epsilon_plus``, ``epsilon_gamma_box``, ...) are in
:func:`composite`.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from xaijax.nn import layers as L
  >>> layer = L.Dense(features=1)
  >>> p = {"kernel": jnp.array([[1.0], [2.0]]), "bias": jnp.array([0.0])}
  >>> a = jnp.array([[1.0, 1.0]])
  >>> y, vjp = jax.vjp(lambda v: epsilon(0.0)(layer, p, v), a)
  >>> vjp(jnp.array([[3.0]]))[0]   # 3 redistributed as a_i w_i / z: [1, 2]
  Array([[1., 2.]], dtype=float32)

References:
  Ayyar, Benois-Pineau, Zemmari 2021 (survey), §5.1, Eq. 11–15; Bach et al. 2015;
  Montavon et al. 2017 (deep Taylor decomposition, z⁺ and zᴮ) and 2019 (LRP overview, LRP-γ);
  Anders et al. 2021, zennit (the BasicHook general form and the composites).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.nn import layers as L
from xaijax.nn.intercept import Composite, by_name, by_type, chain

Array = jax.Array
Hyper = Mapping[str, Array]


# ------------------------------------------------------------------------------------------------
# the general form


def stabilize(z: Array, eps: Array) -> Array:
    """``z + eps·sign(z)`` with ``sign(0) = +1`` (zennit's stabiliser of LRP denominators)."""
    return z + jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype) * eps


def _identity(v, hp):
    return v


def _params_map(fn: Callable[[Array], Array], zero: Sequence[str] = ()) -> Callable:
    """Parameter modifier applying ``fn`` to every parameter and zeroing those named in ``zero``."""
    zero = tuple(zero)

    def modifier(params, hp):
        return {k: (jnp.zeros_like(v) if k in zero else fn(v, hp)) for k, v in params.items()}

    return modifier


@dataclasses.dataclass(frozen=True)
class BasicRule:
    """The general form of an LRP rule (zennit's ``BasicHook``) as a ``custom_vjp`` rule.

    Attributes:
      input_modifiers: ``k`` functions ``(a, hp) -> a_k`` applied to each input of the layer.
      param_modifiers: ``k`` functions ``(params, hp) -> params_k``.
      output_modifiers: ``k`` functions ``(z_k, hp) -> z_k'``.
      gradient_mapper: ``(R_out, [z_k], hp) -> [c_k]`` cotangents for the modified outputs.
      reducer: ``([a_k], [g_k], hp) -> R_in`` for one input of the layer, where
        ``g_k = (∂z_k/∂a_k)ᵀ c_k``.
      hyper: the rule's hyper-parameters (ε, γ, α, β, stabiliser) as arrays; they are explicit
        arguments of the ``custom_vjp`` function, so traced values are fine and changing them
        never recompiles.

    Calling the rule as ``rule(layer, params, *inputs)`` returns ``layer.forward(params,
    *inputs)``; its vector-Jacobian product with respect to each input is that input's relevance.
    The parameters receive zero cotangents.
    """

    input_modifiers: Tuple[Callable, ...]
    param_modifiers: Tuple[Callable, ...]
    output_modifiers: Tuple[Callable, ...]
    gradient_mapper: Callable
    reducer: Callable
    hyper: Hyper = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.input_modifiers)
        if not (len(self.param_modifiers) == len(self.output_modifiers) == n and n > 0):
            raise ValueError("BasicRule needs the same (non-zero) number of input, parameter and "
                             f"output modifiers; got {n}, {len(self.param_modifiers)}, "
                             f"{len(self.output_modifiers)}")

    def __call__(self, layer: L.Layer, params: dict, *xs: Array) -> Array:
        mods = tuple(zip(self.input_modifiers, self.param_modifiers, self.output_modifiers))
        mapper, reducer = self.gradient_mapper, self.reducer

        @jax.custom_vjp
        def rule(hp, prm, inputs):
            return layer.forward(prm, *inputs)

        def fwd(hp, prm, inputs):
            y = layer.forward(prm, *inputs)
            mod_inputs, outputs, vjps = [], [], []
            for in_mod, par_mod, out_mod in mods:
                a_k = tuple(in_mod(a, hp) for a in inputs)
                p_k = par_mod(prm, hp)
                z_k, vjp_k = jax.vjp(
                    lambda *v, p_k=p_k, out_mod=out_mod: out_mod(layer.forward(p_k, *v), hp), *a_k)
                mod_inputs.append(a_k)
                outputs.append(z_k)
                vjps.append(vjp_k)
            return y, (hp, prm, tuple(mod_inputs), tuple(outputs), tuple(vjps))

        def bwd(res, r_out):
            hp, prm, mod_inputs, outputs, vjps = res
            cots = mapper(r_out, list(outputs), hp)
            # cotangents in each output's dtype, relevance in each input's (bfloat16 models:
            # the float32 hyper-parameters promote the mapped relevance to float32)
            grads = [vjp(jnp.asarray(c, o.dtype)) for vjp, c, o in zip(vjps, cots, outputs)]
            r_in = tuple(jnp.asarray(reducer([a[i] for a in mod_inputs], [g[i] for g in grads],
                                             hp), mod_inputs[0][i].dtype)
                         for i in range(len(mod_inputs[0])))
            zeros = jax.tree_util.tree_map(jnp.zeros_like, (hp, prm))
            return zeros[0], zeros[1], r_in

        rule.defvjp(fwd, bwd)
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in self.hyper.items()}
        return rule(hp, params, tuple(xs))


def _f32(v) -> Array:
    return jnp.asarray(v, jnp.float32)


def _pos(v, hp=None):
    return jnp.maximum(v, 0.0)


def _neg(v, hp=None):
    return jnp.minimum(v, 0.0)


# ------------------------------------------------------------------------------------------------
# presets


def epsilon(epsilon: Any = 1e-6, zero_params: Sequence[str] = ()) -> BasicRule:
    """LRP-ε (survey Eq. 13): ``R_i = Σ_j a_i w_ij / (z_j + ε sign z_j) · R_j``.

    ``z_j`` includes the bias (the survey's bias neuron ``a_0 = 1``), so relevance leaks to the
    bias and to ε; ``epsilon=0`` is LRP-0 (Eq. 12).

    Args:
      epsilon: ε (float or traced scalar). zennit's default 1e-6.
      zero_params: parameter names to set to zero in the modified pass (e.g. ``("bias",)``).
    """
    return BasicRule(
        input_modifiers=(_identity,),
        param_modifiers=(_params_map(lambda v, hp: v, zero_params),),
        output_modifiers=(_identity,),
        gradient_mapper=lambda r, zs, hp: [r / stabilize(zs[0], hp["epsilon"])],
        reducer=lambda a, g, hp: a[0] * g[0],
        hyper={"epsilon": epsilon})


def lrp0(zero_params: Sequence[str] = ()) -> BasicRule:
    """LRP-0 (survey Eq. 12): LRP-ε with ε = 0."""
    return epsilon(0.0, zero_params)


def zplus(stabilizer: Any = 1e-6, zero_params: Sequence[str] = ()) -> BasicRule:
    """z⁺: ``R_i = Σ_j (a_i⁺ w_ij⁺ + a_i⁻ w_ij⁻) / Σ_q (a_q⁺ w_qj⁺ + a_q⁻ w_qj⁻ + b_j⁺) · R_j``.

    For the non-negative inputs of a ReLU network this is the z⁺ rule of deep Taylor
    decomposition (αβ with α=1, β=0); with signed inputs the sign-matched products count as
    positive contributions (zennit's ``ZPlus``).
    """
    zb = tuple(zero_params) + ("bias",)
    return BasicRule(
        input_modifiers=(_pos, _neg),
        param_modifiers=(_params_map(lambda v, hp: _pos(v), zero_params),
                         _params_map(lambda v, hp: _neg(v), zb)),
        output_modifiers=(_identity, _identity),
        gradient_mapper=lambda r, zs, hp: [r / stabilize(zs[0] + zs[1], hp["stabilizer"])] * 2,
        reducer=lambda a, g, hp: a[0] * g[0] + a[1] * g[1],
        hyper={"stabilizer": stabilizer})


def alpha_beta(alpha: Any = 2.0, beta: Any = 1.0, stabilizer: Any = 1e-6,
               zero_params: Sequence[str] = ()) -> BasicRule:
    """LRP-αβ (survey Eq. 15): ``R_i = Σ_j (α (a_i w_ij)⁺/Σ(a w)⁺ − β (a_i w_ij)⁻/Σ(a w)⁻) R_j``.

    The paper constrains α = β + 1 (relevance is then conserved); the lrp method checks it when
    the values are concrete. The positive part includes the positive bias and the negative part
    the negative bias (zennit's ``AlphaBeta``).
    """
    try:
        a, b = float(alpha), float(beta)
    except (jax.errors.ConcretizationTypeError, TypeError):
        a, b = 1.0, 0.0  # traced values cannot be checked
    if a < 0 or b < 0 or abs(a - b - 1.0) > 1e-6:
        raise ValueError(f"LRP-αβ needs α, β >= 0 and α = β + 1; got α={a:g}, β={b:g}")
    zb = tuple(zero_params) + ("bias",)
    keep = _params_map(lambda v, hp: _pos(v), zero_params)
    keep_n = _params_map(lambda v, hp: _neg(v), zero_params)
    return BasicRule(
        input_modifiers=(_pos, _neg, _pos, _neg),
        param_modifiers=(keep, _params_map(lambda v, hp: _neg(v), zb),
                         keep_n, _params_map(lambda v, hp: _pos(v), zb)),
        output_modifiers=(_identity,) * 4,
        gradient_mapper=lambda r, zs, hp: (
            [r / stabilize(zs[0] + zs[1], hp["stabilizer"])] * 2
            + [r / stabilize(zs[2] + zs[3], hp["stabilizer"])] * 2),
        reducer=lambda a, g, hp: (hp["alpha"] * (a[0] * g[0] + a[1] * g[1])
                                  - hp["beta"] * (a[2] * g[2] + a[3] * g[3])),
        hyper={"alpha": alpha, "beta": beta, "stabilizer": stabilizer})


def gamma(gamma: Any = 0.25, stabilizer: Any = 1e-6, zero_params: Sequence[str] = ()) -> BasicRule:
    """LRP-γ (survey Eq. 14): ``R_i = Σ_j a_i (w_ij + γ w_ij⁺) / Σ_q a_q (w_qj + γ w_qj⁺) · R_j``.

    Generalised to signed inputs as in zennit's ``Gamma``: outputs with ``z_j > 0`` are explained
    by the positive contributions ``a⁺(w + γw⁺) + a⁻(w + γw⁻)``, outputs with ``z_j < 0`` by the
    negative ones ``a⁺(w + γw⁻) + a⁻(w + γw⁺)``. For non-negative inputs and ``z_j > 0`` this is
    Eq. 14 with the positive contributions up-weighted.
    """
    zb = tuple(zero_params) + ("bias",)

    def gmod(clamp, zero):
        return _params_map(lambda v, hp: v + hp["gamma"] * clamp(v), zero)

    def mapper(r, zs, hp):
        s = hp["stabilizer"]
        pos = (zs[4] > 0).astype(r.dtype) * r / stabilize(zs[0] + zs[1], s)
        neg = (zs[4] < 0).astype(r.dtype) * r / stabilize(zs[2] + zs[3], s)
        return [pos, pos, neg, neg, jnp.zeros_like(r)]

    return BasicRule(
        input_modifiers=(_pos, _neg, _pos, _neg, _identity),
        param_modifiers=(gmod(_pos, zero_params), gmod(_neg, zb), gmod(_neg, zero_params),
                         gmod(_pos, zb), _params_map(lambda v, hp: v)),
        output_modifiers=(_identity,) * 5,
        gradient_mapper=mapper,
        reducer=lambda a, g, hp: sum(a[k] * g[k] for k in range(4)),
        hyper={"gamma": gamma, "stabilizer": stabilizer})


def zbox(low: Any, high: Any, stabilizer: Any = 1e-6, zero_params: Sequence[str] = ()) -> BasicRule:
    """zᴮ for the input layer: ``R_i = Σ_j (x_i w_ij − l_i w_ij⁺ − h_i w_ij⁻) / Σ_q (...) · R_j``.

    Args:
      low, high: the lowest and highest input values, broadcast against the input (per channel
        ``(C,)`` for NHWC images: the normalised image of the pixel range [0, 1], i.e.
        ``(0 − mean)/std`` and ``(1 − mean)/std``; see :func:`pixel_bounds`).
    """
    low = jnp.asarray(low, jnp.float32)
    high = jnp.asarray(high, jnp.float32)
    return BasicRule(
        input_modifiers=(_identity, lambda a, hp: jnp.broadcast_to(hp["low"], a.shape),
                         lambda a, hp: jnp.broadcast_to(hp["high"], a.shape)),
        param_modifiers=(_params_map(lambda v, hp: v, zero_params),
                         _params_map(lambda v, hp: _pos(v), zero_params),
                         _params_map(lambda v, hp: _neg(v), zero_params)),
        output_modifiers=(_identity,) * 3,
        gradient_mapper=lambda r, zs, hp: [r / stabilize(zs[0] - zs[1] - zs[2],
                                                         hp["stabilizer"])] * 3,
        reducer=lambda a, g, hp: a[0] * g[0] - a[1] * g[1] - a[2] * g[2],
        hyper={"low": low, "high": high, "stabilizer": stabilizer})


def norm(stabilizer: Any = 1e-6) -> BasicRule:
    """Proportional redistribution for parameter-free linear layers (zennit's ``Norm``).

    ``R_in = a · (∂z/∂a)ᵀ (R / stab(z))``: for an average pool each input gets ``a_i / (k z_j)``
    of ``R_j``; for the residual :class:`~xaijax.nn.layers.Add` each summand ``s`` gets
    ``s / Σ s · R`` (its share of the sum), so relevance is conserved through the skip connection.
    """
    return BasicRule(
        input_modifiers=(_identity,),
        param_modifiers=(_identity,),
        output_modifiers=(_identity,),
        gradient_mapper=lambda r, zs, hp: [r / stabilize(zs[0], hp["stabilizer"])],
        reducer=lambda a, g, hp: a[0] * g[0],
        hyper={"stabilizer": stabilizer})


_epsilon_rule = epsilon
_gamma_rule = gamma


def pass_rule(layer: L.Layer, params: dict, *xs: Array) -> Array:
    """Identity backward: relevance at the output is handed to the (single) input unchanged.

    Used for element-wise nonlinearities (LRP treats ReLU as part of the linear layer below it;
    zennit's ``Pass``) and for BatchNorm layers (identities after
    :func:`xaijax.rules.canonizers.merge_batchnorm`).
    """
    if len(xs) != 1:
        raise ValueError(f"pass_rule applies to single-input layers; {type(layer).__name__} "
                         f"(tap {layer.tap!r}) got {len(xs)} inputs")

    @jax.custom_vjp
    def rule(x):
        return layer.forward(params, x)

    def fwd(x):
        return layer.forward(params, x), None

    def bwd(_, r):
        return (r,)

    rule.defvjp(fwd, bwd)
    return rule(xs[0])


# ------------------------------------------------------------------------------------------------
# composites


def pixel_bounds(mean: Sequence[float], std: Sequence[float]) -> Tuple[Array, Array]:
    """Per-channel bounds of the normalised input for pixels in [0, 1]: ``((0−μ)/σ, (1−μ)/σ)``."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return jnp.asarray((0.0 - m) / s), jnp.asarray((1.0 - m) / s)


COMPOSITES = ("epsilon", "lrp0", "zplus", "alpha_beta", "gamma", "epsilon_plus",
              "epsilon_alpha_beta", "epsilon_gamma_box", "epsilon_plus_box")
"""Preset names accepted by :func:`composite` (and the ``lrp`` method's ``composite`` option)."""


def base_composite(stabilizer: Any = 1e-6) -> Composite:
    """Rules shared by every preset (zennit's ``layer_map_base``): nonlinearities and BatchNorm
    pass relevance through, the residual ``Add`` and average pooling redistribute in proportion
    (:func:`norm`). Max pooling, ``Flatten``, ``Concat`` and ``Identity`` keep the ordinary
    gradient: winner-take-all for max pooling, a pure re-indexing for the others."""
    n = norm(stabilizer)
    return by_type({L.Nonlinearity: pass_rule, L.BatchNorm: pass_rule, L.Add: n, L.AvgPool: n,
                    L.AdaptiveAvgPool: n})


def first_linear_tap(taps: Sequence[str], tap_types: Sequence[str],
                     types: Sequence[str] = ("Conv",)) -> Optional[str]:
    """The first tap (in forward order) whose layer type is in ``types``."""
    for t, ty in zip(taps, tap_types):
        if ty in types:
            return t
    return None


def composite(name: str, *, epsilon: Any = 1e-6, gamma: Any = 0.25, alpha: Any = 2.0,
              beta: Any = 1.0, stabilizer: Any = 1e-6, bounds: Optional[Tuple[Any, Any]] = None,
              first_tap: Optional[str] = None) -> Composite:
    """An LRP composite (which rule on which layer) by preset name.

    Every preset adds :func:`base_composite` (Pass on nonlinearities and BatchNorm, :func:`norm` on
    ``Add`` / average pooling, gradient on max pooling). The rules on ``Conv`` / ``Dense`` are:

    ======================  ===========================  ======  ======================
    name                    Conv                         Dense   zennit equivalent
    ======================  ===========================  ======  ======================
    ``epsilon``             LRP-ε                        LRP-ε   LayerMap ``Epsilon``
    ``lrp0``                LRP-0                        LRP-0   ``Epsilon(epsilon=0)``
    ``zplus``               z⁺                           z⁺      LayerMap ``ZPlus``
    ``alpha_beta``          LRP-αβ                       LRP-αβ  LayerMap ``AlphaBeta``
    ``gamma``               LRP-γ                        LRP-γ   LayerMap ``Gamma``
    ``epsilon_plus``        z⁺                           LRP-ε   ``EpsilonPlus``
    ``epsilon_alpha_beta``  LRP-αβ                       LRP-ε   ``EpsilonAlpha2Beta1``
    ``epsilon_gamma_box``   zᴮ first conv, LRP-γ others  LRP-ε   ``EpsilonGammaBox``
    ``epsilon_plus_box``    zᴮ first conv, z⁺ others     LRP-ε   (EpsilonPlus + zᴮ)
    ======================  ===========================  ======  ======================

    Args:
      name: a preset from :data:`COMPOSITES`.
      epsilon, gamma, alpha, beta, stabilizer: rule parameters (floats or traced scalars).
      bounds: ``(low, high)`` input bounds for zᴮ (see :func:`pixel_bounds`); required by the
        ``*_box`` presets.
      first_tap: the tap of the input layer that gets zᴮ (the first ``Conv``); required by the
        ``*_box`` presets.

    Returns:
      a composite ``layer -> rule | None`` for :func:`xaijax.nn.intercept.forward`.
    """
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; presets: {list(COMPOSITES)}")
    rule_eps = _epsilon_rule(epsilon)
    uniform = {
        "epsilon": rule_eps,
        "lrp0": lrp0(),
        "zplus": zplus(stabilizer),
        "alpha_beta": alpha_beta(alpha, beta, stabilizer) if name == "alpha_beta" else None,
        "gamma": _gamma_rule(gamma, stabilizer),
    }
    base = base_composite(stabilizer)
    if name in uniform:
        return chain(base, by_type({L.Conv: uniform[name], L.Dense: uniform[name]}))
    conv_rule = {
        "epsilon_plus": lambda: zplus(stabilizer),
        "epsilon_alpha_beta": lambda: alpha_beta(alpha, beta, stabilizer),
        "epsilon_gamma_box": lambda: _gamma_rule(gamma, stabilizer),
        "epsilon_plus_box": lambda: zplus(stabilizer),
    }[name]()
    types = by_type({L.Conv: conv_rule, L.Dense: rule_eps})
    if name.endswith("_box"):
        if bounds is None or first_tap is None:
            raise ValueError(f"composite {name!r} needs the input bounds and the tap of the first "
                             "convolution (the lrp method takes them from model.spec)")
        return chain(base, by_name({first_tap: zbox(bounds[0], bounds[1], stabilizer)}), types)
    return chain(base, types)
