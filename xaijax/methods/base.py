"""The :class:`Explanation` result, the method registry and :func:`explain`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from xaijax.models.base import Model, check_finite, check_input

Array = jax.Array
Target = Union[int, Sequence[int], Array, str]


@struct.dataclass
class Explanation:
    """What every method returns.

    Attributes:
      heatmap: ``(N, H, W)`` float32 at input resolution: the map a person looks at. Signed
        methods (LRP, DeepLIFT, IG, ×Input) keep their sign (summed over channels).
      attribution: ``(N, H, W, C)`` per-channel map where the method has one, else ``None``.
      extras: method-specific outputs (masks, losses, deltas, selected layers, ...).
      target: ``(N,)`` int32 class explained per image.
      method: the registry name of the method (static).
    """

    heatmap: Array
    attribution: Optional[Array] = None
    extras: Dict[str, Any] = struct.field(default_factory=dict)
    target: Optional[Array] = None
    method: str = struct.field(pytree_node=False, default="")


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., Explanation]
    static: Tuple[str, ...]
    needs: str  # "function" | "taps" | "rules"
    signed: bool
    summary: str


_METHODS: Dict[str, MethodInfo] = {}


def register(name: str, *, static: Sequence[str] = (), needs: str = "function",
             signed: bool = False):
    """Register ``fn(model, x, target, **options) -> Explanation`` under ``name``.

    Args:
      static: option names that decide shapes or control flow (hashable; jit static args).
        All other options are traced, so changing them never recompiles.
      needs: ``"function"`` (any JAX callable ``f(x) -> logits``), ``"taps"`` or ``"rules"``
        (a zoo :class:`~xaijax.models.Model`, or a linen model built from xaijax layers).
      signed: whether the heatmap keeps a sign.
    """
    if needs not in ("function", "taps", "rules"):
        raise ValueError(f"needs must be function/taps/rules; got {needs!r}")

    def deco(fn):
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        _METHODS[name] = MethodInfo(name, fn, tuple(static), needs, signed,
                                    doc[0] if doc else "")
        return fn

    return deco


def available() -> Tuple[str, ...]:
    return tuple(sorted(_METHODS))


def info(name: str) -> MethodInfo:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {list(available())}")
    return _METHODS[name]


# ------------------------------------------------------------------------------------------------
# helpers shared by methods


def logits_fn(model: Any) -> Callable[[Array], Array]:
    """``x -> logits`` for a zoo Model or any callable."""
    if isinstance(model, Model):
        return model.apply_fn
    if not callable(model):
        raise TypeError(f"model must be an xaijax Model or a callable f(x) -> logits; got "
                        f"{type(model).__name__}")
    return model


def require_model(model: Any, method: str, what: str = "taps") -> Model:
    if not isinstance(model, Model):
        raise TypeError(
            f"method {method!r} needs {what} (named intermediate layers), which a plain "
            f"function cannot give; pass an xaijax Model (xj.models.get(...)) or wrap your linen "
            f"module built from xaijax.nn.layers with xj.models.Model")
    return model


def target_scores(logits: Array, target: Array) -> Array:
    """``logits[i, target[i]]`` for each image: ``(N,)``."""
    return jnp.take_along_axis(logits, target[:, None].astype(jnp.int32), axis=1)[:, 0]


def input_gradient(f: Callable[[Array], Array], x: Array, target: Array) -> Array:
    """∂ logit_target / ∂x for each image of the batch: ``(N, H, W, C)``."""

    def total(z):
        return jnp.sum(target_scores(f(z), target))

    return jax.grad(total)(x)


def upsample(maps: Array, size: Tuple[int, int]) -> Array:
    """Bilinear resize of ``(N, h, w[, C])`` maps to ``size`` with half-pixel centres
    (torch ``interpolate(..., mode="bilinear", align_corners=False)``, no antialiasing)."""
    if maps.ndim == 3:
        return upsample(maps[..., None], size)[..., 0]
    n, h, w, c = maps.shape
    if (h, w) == tuple(size):
        return maps
    return jax.image.scale_and_translate(
        maps, (n, size[0], size[1], c), (1, 2), jnp.array([size[0] / h, size[1] / w]),
        jnp.zeros(2), "linear", antialias=False)


# ------------------------------------------------------------------------------------------------
# explain


def resolve_target(model: Any, x: Array, target: Target, num_classes: Optional[int]) -> Array:
    """Targets -> ``(N,)`` int32. ``"top1"`` is the model's prediction; an int applies to every
    image; a class name is looked up in the model's labels."""
    n = x.shape[0]
    if isinstance(target, str):
        if target == "top1":
            return jnp.argmax(jax.jit(logits_fn(model))(x), axis=-1).astype(jnp.int32)
        if isinstance(model, Model) and model.spec.labels == "imagenet":
            from xaijax.models.labels import class_index
            return jnp.full((n,), class_index(target), jnp.int32)
        raise ValueError(f"target must be an int, a sequence of ints or 'top1'; got {target!r}")
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must be integer class indices; got dtype {t.dtype}")
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise ValueError(f"target must be an int or have shape ({n},) for {n} images; got shape "
                         f"{t.shape}")
    if num_classes is not None and (t.min() < 0 or t.max() >= num_classes):
        bad = int(t[(t < 0) | (t >= num_classes)][0])
        raise ValueError(f"unknown class {bad}: the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return jnp.asarray(t, jnp.int32)


_JITTED: Dict[Tuple[str, bool, frozenset], Callable] = {}


def _jitted(info_: MethodInfo, model_is_pytree: bool,
            static: Optional[frozenset] = None) -> Callable:
    static = frozenset(info_.static) if static is None else static
    key = (info_.name, model_is_pytree, static)
    if key not in _JITTED:
        fn = info_.fn
        if model_is_pytree:
            _JITTED[key] = jax.jit(fn, static_argnames=tuple(static))
        else:
            _JITTED[key] = jax.jit(fn, static_argnums=(0,), static_argnames=tuple(static))
    return _JITTED[key]


def jitted_for(info_: MethodInfo, model_is_pytree: bool, options: Dict[str, Any]) -> Callable:
    """The cached jitted method that :func:`explain` uses for these options (its
    ``_cache_size()`` tells how often it compiled)."""
    static = frozenset(info_.static) | frozenset(k for k, v in options.items()
                                                 if _is_static_value(v))
    return _jitted(info_, model_is_pytree, static)


def _is_static_value(v: Any) -> bool:
    """Options that cannot be traced (strings, None, booleans, tuples of them / of ints) are
    passed as static arguments even when the method did not declare them."""
    if v is None or isinstance(v, (str, bool)):
        return True
    if isinstance(v, tuple):
        return all(_is_static_value(a) or isinstance(a, (int, float)) for a in v)
    return callable(v) and not hasattr(v, "shape")


def explain(model: Any, x: Array, target: Target = "top1", *, method: str = "gradient",
            **options) -> Explanation:
    """Explain ``model``'s decision for each image of ``x``.

    Args:
      model: an xaijax :class:`~xaijax.models.Model`, or any JAX callable ``f(x) -> logits``
        for methods that need only the function.
      x: ``(N, H, W, C)`` float32 batch in the model's normalised space.
      target: int, ints ``(N,)``, ``"top1"`` or an ImageNet class name.
      method: a name from :func:`available`.
      **options: the method's options (see ``xj.methods.<name>``).

    Returns:
      an :class:`Explanation`.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.explain(m, jnp.ones((2, 32, 32, 3)), 3, method="gradient").heatmap.shape
      (2, 32, 32)
    """
    inf = info(method)
    if inf.needs != "function":
        require_model(model, method, "taps" if inf.needs == "taps" else "rule-aware layers")
    check_input(model if isinstance(model, Model) else None, x)
    check_finite(x)
    x = jnp.asarray(x, jnp.float32)
    num_classes = model.spec.num_classes if isinstance(model, Model) else None
    t = resolve_target(model, x, target, num_classes)
    if num_classes is None and not isinstance(target, str):
        out_shape = jax.eval_shape(logits_fn(model), x).shape
        resolve_target(model, x, np.asarray(t), out_shape[-1])
    # python floats become float32 arrays so a new value never recompiles (STYLE.md)
    options = {k: (jnp.asarray(v, jnp.float32) if isinstance(v, float) and k not in inf.static
                   else v) for k, v in options.items()}
    unknown = set(options) - set(inspect.signature(inf.fn).parameters)
    if unknown:
        raise TypeError(f"method {method!r} has no option(s) {sorted(unknown)}; options: "
                        f"{[p for p in inspect.signature(inf.fn).parameters][3:]}")
    ex = jitted_for(inf, isinstance(model, Model), options)(model, x, t, **options)
    return ex
