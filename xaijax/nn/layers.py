"""Layer modules of the xaijax zoo.

Every layer is a small linen module whose math lives in a pure ``forward(params, *inputs)``
method (decorated with :func:`flax.linen.nowrap`), so the intervention layer
(:mod:`xaijax.nn.intercept`) can

* record or edit the layer's output (a *tap*, named by the ``tap`` attribute), and
* replace the layer's backward pass with a rule (a ``jax.custom_vjp`` function that calls
  ``forward`` with the layer's parameters),

without editing the model. Tap names follow the torchvision module paths of the reference
architectures (``features.29``, ``layer4.1.relu2``), which is what the parity tests hook.

All layers take NHWC inputs, hold their parameters in torchvision-compatible shapes transposed to
JAX conventions (``kernel``: HWIO, dense ``kernel``: (in, out)), and run in inference mode only:
BatchNorm uses its running statistics and dropout is the identity.

A user's own linen model gets rule-level access (guided backprop, LRP, FGVis defense, stride
fix) by building its nonlinearities and pooling from these modules instead of ``nn.relu`` or
``nn.max_pool``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return tuple(int(a) for a in v)  # type: ignore[return-value]


class Layer(nn.Module):
    """Base class: a layer with pure ``forward`` math and an optional tap name."""

    tap: Optional[str] = None

    @nn.nowrap
    def forward(self, params: dict, *xs: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    @nn.nowrap
    def get_params(self, *xs: Array) -> dict:
        return {}

    @nn.nowrap
    def _param(self, name: str, init: Any, shape: Tuple[int, ...]) -> Array:
        """``self.param`` without its per-call cost when the variable exists: flax then traces
        ``init`` under ``jax.eval_shape`` only to compare shapes (~3 ms a parameter, 15 % of
        tracing an EfficientNet FGVis game). The shape is compared here directly instead."""
        if not self.has_variable("params", name):
            return self.param(name, init, shape)
        value = self.get_variable("params", name)
        if tuple(np.shape(value)) != tuple(shape):
            raise ValueError(f"parameter '{name}' of layer '{'/'.join(self.scope.path)}' has "
                             f"shape {tuple(np.shape(value))}; this layer expects {tuple(shape)} "
                             "(do the variables belong to another architecture or input?)")
        return value

    @nn.compact
    def __call__(self, *xs: Array) -> Array:
        return self.forward(self.get_params(*xs), *xs)


# --------------------------------------------------------------------------------------------
# linear layers


class Conv(Layer):
    """2-D convolution with torch semantics (integer padding, groups, dilation).

    ``padding`` is ``p``, ``(ph, pw)`` (symmetric, as torch) or ``((top, bottom), (left,
    right))`` (asymmetric zero padding, e.g. the static TF-"SAME" padding of EfficientNet)."""

    features: int = 1
    kernel_size: IntPair = 3
    strides: IntPair = 1
    padding: Any = 0
    groups: int = 1
    dilation: IntPair = 1
    use_bias: bool = True

    @nn.nowrap
    def get_params(self, x: Array) -> dict:
        kh, kw = _pair(self.kernel_size)
        cin = x.shape[-1]
        fan_in = cin // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        p = {"kernel": self._param("kernel", init, (kh, kw, cin // self.groups, self.features))}
        if self.use_bias:
            p["bias"] = self._param(
                "bias", lambda k, s: jax.random.uniform(k, s, minval=-bound, maxval=bound),
                (self.features,))
        elif self.has_variable("params", "bias"):  # added by a canonizer (folded BatchNorm)
            p["bias"] = self.get_variable("params", "bias")
        return p

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        x = _compute_dtype(x, params["kernel"])
        args = (_pair(self.strides), _conv_pads(self.padding), _pair(self.dilation))
        if 1 < self.groups == x.shape[-1] == self.features and _on_cpu():  # depthwise
            y = depthwise_conv_shifted(x, params["kernel"], *args)
        else:
            y = _xla_conv(x, params["kernel"], *args, self.groups)
        if "bias" in params:
            y = y + params["bias"]
        return y


def _on_cpu() -> bool:
    # chosen while tracing, from the backend jit compiles for by default (lax.platform_dependent
    # would defer the choice to lowering, but its switch makes tracing EfficientNet's gradient
    # several times slower); both branches compute the same function
    return jax.default_backend() == "cpu"


def _compute_dtype(x: Array, w: Array) -> Array:
    """``x`` in the dtype of a bfloat16/float16 weight ``w`` (a model cast by ``dtype=
    "bfloat16"`` computes in bfloat16 even where a method builds float32 inputs, e.g. IG's
    path points); otherwise ``x`` unchanged (float32 / float64 promotion as before)."""
    w_dt = jnp.dtype(w.dtype)
    return x.astype(w_dt) if w_dt.itemsize < 4 and x.dtype != w_dt else x


def _accumulation(x: Array) -> Any:
    """float32 accumulation for bfloat16/float16 operands (``preferred_element_type``), else
    ``None`` (the operands' own precision: float32 and float64 programs are unchanged)."""
    return jnp.float32 if jnp.dtype(x.dtype).itemsize < 4 else None


def _xla_conv(x: Array, kernel: Array, strides, pads, dilation, groups: int) -> Array:
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=lax.Precision.HIGHEST, preferred_element_type=_accumulation(x)
    ).astype(x.dtype)


def depthwise_conv_shifted(x: Array, kernel: Array, strides: Tuple[int, int],
                           pads: Tuple[Tuple[int, int], Tuple[int, int]],
                           dilation: Tuple[int, int] = (1, 1)) -> Array:
    """Depthwise convolution (``kernel``: (kh, kw, 1, C)) as a sum of ``kh*kw`` shifted,
    strided slices of the zero-padded input times one kernel tap each (autodiff turns the
    slices into pads for the backward pass).

    Used on CPU, where XLA's grouped convolution is slow: EfficientNet-Lite0 at 224x224 runs
    its float32 forward ~7x and its input gradient ~9x faster this way (XLA compiles the sum
    ~2x longer, a few seconds once), and in float64 XLA's kernel takes ~1 s for a single 5x5
    depthwise convolution on a 4x4 map. Other backends keep ``lax.conv_general_dilated``.
    Same result up to summation order."""
    (sh, sw), (dh, dw) = strides, dilation
    kh, kw = kernel.shape[:2]
    xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    y = None
    for i in range(kh):
        for j in range(kw):
            a, b = i * dh, j * dw
            tap = lax.slice(xp, (0, a, b, 0), (n, a + (ho - 1) * sh + 1, b + (wo - 1) * sw + 1,
                                               c), (1, sh, sw, 1))
            term = (tap * kernel[i, j, 0]).astype(_accumulation(x) or x.dtype)
            y = term if y is None else y + term
    return y.astype(x.dtype)


def _conv_pads(p: Any) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``p`` | ``(ph, pw)`` | ``((top, bottom), (left, right))`` -> explicit (lo, hi) pairs."""
    if isinstance(p, int):
        return ((p, p), (p, p))
    a, b = p
    if isinstance(a, int) and isinstance(b, int):
        return ((a, a), (b, b))
    return ((int(a[0]), int(a[1])), (int(b[0]), int(b[1])))


class Dense(Layer):
    """Fully connected layer; ``kernel`` is (in, out)."""

    features: int = 1
    use_bias: bool = True

    @nn.nowrap
    def get_params(self, x: Array) -> dict:
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        uni = lambda k, s: jax.random.uniform(k, s, minval=-bound, maxval=bound)
        p = {"kernel": self._param("kernel", uni, (fan_in, self.features))}
        if self.use_bias:
            p["bias"] = self._param("bias", uni, (self.features,))
        elif self.has_variable("params", "bias"):  # added by a canonizer (folded BatchNorm)
            p["bias"] = self.get_variable("params", "bias")
        return p

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        x = _compute_dtype(x, params["kernel"])
        y = jnp.dot(x, params["kernel"], precision=lax.Precision.HIGHEST,
                    preferred_element_type=_accumulation(x)).astype(x.dtype)
        if "bias" in params:
            y = y + params["bias"]
        return y


class BatchNorm(Layer):
    """Inference-mode batch normalisation with torch's parameter names mapped to
    ``scale``/``bias``/``mean``/``var`` (all in the ``params`` collection)."""

    epsilon: float = 1e-5

    @nn.nowrap
    def get_params(self, x: Array) -> dict:
        c = x.shape[-1]
        return {
            "scale": self._param("scale", nn.initializers.ones, (c,)),
            "bias": self._param("bias", nn.initializers.zeros, (c,)),
            "mean": self._param("mean", nn.initializers.zeros, (c,)),
            "var": self._param("var", nn.initializers.ones, (c,)),
        }

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        x = _compute_dtype(x, params["scale"])
        inv = params["scale"] / jnp.sqrt(params["var"] + self.epsilon)
        return (x - params["mean"]) * inv + params["bias"]


# --------------------------------------------------------------------------------------------
# nonlinearities


class Nonlinearity(Layer):
    """Marker base class of element-wise nonlinearities (rules and the FGVis filter use it)."""


class ReLU(Nonlinearity):
    """max(x, 0) with torch's gradient convention (0 at x = 0; ``jnp.maximum`` would give 0.5)."""

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        return jax.nn.relu(x)


class ReLU6(Nonlinearity):
    """min(max(x, 0), 6) with torch's gradient (1 strictly inside (0, 6), else 0)."""

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        return jnp.where((x > 0.0) & (x < 6.0), x, lax.stop_gradient(jnp.clip(x, 0.0, 6.0)))


# --------------------------------------------------------------------------------------------
# pooling and structure


def _pool_pads(size: int, k: int, s: int, p: int, ceil_mode: bool) -> Tuple[int, int]:
    """Left/right padding reproducing torch's output size rule (incl. ceil_mode)."""
    if ceil_mode:
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:  # torch: last window must start inside input or left pad
            out -= 1
    else:
        out = (size + 2 * p - k) // s + 1
    right = max((out - 1) * s + k - size - p, 0)
    return p, right


class MaxPool(Layer):
    window: IntPair = 2
    strides: Optional[IntPair] = None
    padding: IntPair = 0
    ceil_mode: bool = False

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        k = _pair(self.window)
        s = _pair(self.strides if self.strides is not None else self.window)
        p = _pair(self.padding)
        pads = [(0, 0)] + [_pool_pads(x.shape[1 + i], k[i], s[i], p[i], self.ceil_mode)
                           for i in range(2)] + [(0, 0)]
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *k, 1), (1, *s, 1), pads)


class AvgPool(Layer):
    window: IntPair = 2
    strides: Optional[IntPair] = None
    padding: IntPair = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        k = _pair(self.window)
        s = _pair(self.strides if self.strides is not None else self.window)
        p = _pair(self.padding)
        pads = [(0, 0)] + [_pool_pads(x.shape[1 + i], k[i], s[i], p[i], self.ceil_mode)
                           for i in range(2)] + [(0, 0)]
        total = lax.reduce_window(x, 0.0, lax.add, (1, *k, 1), (1, *s, 1), pads)
        if self.count_include_pad:
            # torch counts the explicit padding but not the extra ceil_mode overhang
            ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
            ones = jnp.pad(ones, [(0, 0), (p[0], p[0]), (p[1], p[1]), (0, 0)], constant_values=1.0)
            pads2 = [(0, 0)] + [(0, pads[1 + i][1] - p[i]) for i in range(2)] + [(0, 0)]
            count = lax.reduce_window(ones, 0.0, lax.add, (1, *k, 1), (1, *s, 1), pads2)
        else:
            ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
            count = lax.reduce_window(ones, 0.0, lax.add, (1, *k, 1), (1, *s, 1), pads)
        return total / count


def adaptive_bins(size: int, out: int) -> Sequence[Tuple[int, int]]:
    """torch's adaptive pooling bins: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


class AdaptiveAvgPool(Layer):
    """torch ``AdaptiveAvgPool2d``; written as a (static) averaging matrix per axis so it is a
    linear map that every rule sees as such."""

    output_size: IntPair = 1

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        oh, ow = _pair(self.output_size)
        h, w = x.shape[1], x.shape[2]
        if (oh, ow) == (1, 1):
            return jnp.mean(x, axis=(1, 2), keepdims=True)
        if (h, w) == (oh, ow):
            return x

        def mat(size, out):
            m = [[0.0] * size for _ in range(out)]
            for i, (a, b) in enumerate(adaptive_bins(size, out)):
                for j in range(a, b):
                    m[i][j] = 1.0 / (b - a)
            return jnp.asarray(m, x.dtype)

        return jnp.einsum("ph,qw,nhwc->npqc", mat(h, oh), mat(w, ow), x,
                          precision=lax.Precision.HIGHEST)


class Flatten(Layer):
    """Flatten in torch's NCHW order so converted classifier weights apply unchanged."""

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class Add(Layer):
    """Residual sum of its inputs (a module so LRP/DeepLIFT can give it a rule)."""

    @nn.nowrap
    def forward(self, params: dict, *xs: Array) -> Array:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(Layer):
    """Channel concatenation (Inception branches)."""

    @nn.nowrap
    def forward(self, params: dict, *xs: Array) -> Array:
        return jnp.concatenate(xs, axis=-1)


class Identity(Layer):
    """A named point in the network (a tap with no computation)."""

    @nn.nowrap
    def forward(self, params: dict, x: Array) -> Array:
        return x


LINEAR_TYPES = (Conv, Dense)
POOL_TYPES = (MaxPool, AvgPool, AdaptiveAvgPool)
