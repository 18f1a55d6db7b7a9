"""The :class:`Explanation` result, the method registry, :func:`bind` and :func:`explain`.

Every entry point runs a method through :func:`bind`: ``bind(name, **static_options)`` is the
method configured with its shape-deciding options, a pure function ``fn(model, x, target,
**traced_options)`` compiled once per input shape and cached, that checks its input and its
options' values once per call (before tracing) and resolves ``"top1"`` inside the compiled
program. :func:`explain` splits its options into static and traced ones and calls it; so do the
command line and everything built on top (data-set runs, sharding, evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from xaijax.models.base import Model, check_finite, check_input

Array = jax.Array
Target = Union[int, Sequence[int], Array, str]
Validator = Callable[[Any, Any, Mapping[str, Any]], None]


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
    """A registered method.

    Attributes:
      name: registry name.
      fn: the method's body ``fn(model, x, target, **options)`` (no value checks).
      static: option names that decide shapes or control flow (jit static arguments).
      needs: ``"function"``, ``"taps"`` or ``"rules"``: the model access it requires.
      signed: whether the heatmap keeps a sign.
      summary: first line of the docstring.
      validate: ``validate(model, x, options)`` checking the concrete option values (every
        option, defaults filled in; traced values left out), or ``None``.
      defaults: ``{option: default}`` from the signature (``inspect.Parameter.empty`` when
        required).
      paper: the paper (and equation) the method implements, e.g. ``"Selvaraju et al. 2017,
        Eq. 1-2"``.
      peer: the peer implementations it is tested against, e.g. ``"pytorch-grad-cam GradCAM,
        Captum LayerGradCam"`` (``""``: none exists; its paper's properties are tested).
    """

    name: str
    fn: Callable[..., Explanation]
    static: Tuple[str, ...]
    needs: str  # "function" | "taps" | "rules"
    signed: bool
    summary: str
    validate: Optional[Validator] = None
    defaults: Tuple[Tuple[str, Any], ...] = ()
    paper: str = ""
    peer: str = ""

    @property
    def options(self) -> Tuple[str, ...]:
        return tuple(k for k, _ in self.defaults)


_METHODS: Dict[str, MethodInfo] = {}


def register(name: str, *, static: Sequence[str] = (), needs: str = "function",
             signed: bool = False, validate: Optional[Validator] = None, paper: str = "",
             peer: str = ""):
    """Register ``fn(model, x, target, **options) -> Explanation`` under ``name``.

    The decorated function stays a plain, jit/vmap-able function; called directly it first
    runs ``validate`` on whichever option values are concrete (under a user's own ``jit`` the
    traced ones cannot be checked). :func:`bind` and :func:`explain` run it on every call.

    Args:
      static: option names that decide shapes or control flow (hashable; jit static args).
        All other options are traced, so changing them never recompiles.
      needs: ``"function"`` (any JAX callable ``f(x) -> logits``), ``"taps"`` or ``"rules"``
        (a zoo :class:`~xaijax.models.Model`, or a linen model built from xaijax layers).
      signed: whether the heatmap keeps a sign.
      validate: ``validate(model, x, options)``: raise ``ValueError``/``TypeError`` for bad
        option values. ``options`` holds every option (defaults filled in) whose value is
        concrete (Python, numpy or device arrays: convert only what you read).
      paper: the paper and equation implemented (listed by ``xaijax methods`` and the README).
      peer: the peer implementations the parity tests compare with, ``""`` if there is none.
    """
    if needs not in ("function", "taps", "rules"):
        raise ValueError(f"needs must be function/taps/rules; got {needs!r}")

    def deco(fn):
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        params = list(inspect.signature(fn).parameters.values())[3:]
        inf = MethodInfo(name, fn, tuple(static), needs, signed, doc[0] if doc else "",
                         validate, tuple((p.name, p.default) for p in params), paper, peer)
        _METHODS[name] = inf

        @functools.wraps(fn)
        def method(model, x, target, **options):
            if inf.validate is not None:
                inf.validate(model, x, concrete_options(inf, options))
            return fn(model, x, target, **options)

        method.info = inf
        return method

    return deco


def available() -> Tuple[str, ...]:
    return tuple(sorted(_METHODS))


def info(name: str) -> MethodInfo:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {list(available())}")
    return _METHODS[name]


def concrete_options(inf: MethodInfo, options: Mapping[str, Any]) -> Dict[str, Any]:
    """Every option of ``inf`` (defaults filled in) whose value is concrete. Traced values
    (inside a user's ``jit``/``vmap``) are left out."""
    out = {}
    for k, default in inf.defaults:
        v = options.get(k, default)
        if v is inspect.Parameter.empty or isinstance(v, jax.core.Tracer):
            continue
        out[k] = v  # device arrays stay put: a validator copies only the few values it reads
    return out


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
            f"function cannot give; pass an xaijax Model (xj.models.get(...)), or wrap your "
            f"linen module built from xaijax.nn.layers with xj.models.wrap(module, variables, "
            f"...)")
    return model


SCORES = ("logit", "softmax", "sigmoid")


def class_scores(logits: Array, target: Array, kind: str = "logit") -> Array:
    """The score of class ``target[i]`` in each row ``i`` of ``logits`` ``(B, K)``: the logit,
    the softmax probability or the sigmoid. ``target`` is ``(B,)`` or one class for every row.
    Returns ``(B,)``."""
    if kind not in SCORES:
        raise ValueError(f"score must be one of {SCORES}; got {kind!r}")
    t = jnp.broadcast_to(jnp.asarray(target, jnp.int32), logits.shape[:1])
    if kind == "softmax":
        logits = jax.nn.softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logits, t[:, None], axis=1)[:, 0]
    return jax.nn.sigmoid(picked) if kind == "sigmoid" else picked


def target_scores(logits: Array, target: Array) -> Array:
    """``logits[i, target[i]]`` for each image: ``(N,)``."""
    return class_scores(logits, target)


def input_gradient(f: Callable[[Array], Array], x: Array, target: Array) -> Array:
    """∂ logit_target / ∂x for each image of the batch: ``(N, H, W, C)``."""

    def total(z):
        return jnp.sum(target_scores(f(z), target))

    return jax.grad(total)(x)


def minmax(maps: Array, axes: Tuple[int, ...] = (1, 2), eps: float = 0.0) -> Array:
    """Min-max normalisation to [0, 1] over ``axes``.

    With ``eps=0`` a constant map becomes zeros; with ``eps > 0`` it is pytorch-grad-cam's
    ``scale_cam_image``, ``(m − min) / (eps + max(m − min))`` (what FullGrad's parity needs).
    """
    m = maps - jnp.min(maps, axis=axes, keepdims=True)
    span = jnp.max(m, axis=axes, keepdims=True)
    if eps:
        return m / (eps + span)
    return jnp.where(span > 0, m / jnp.where(span > 0, span, 1.0), 0.0)


def check_positive_int(value: Any, name: str, method: str = "", what: str = "") -> int:
    """``value`` as an int, or a ValueError naming the method and the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        who = f"method {method!r}: " if method else ""
        raise ValueError(f"{who}{name} must be a positive int{f' ({what})' if what else ''}; "
                         f"got {value!r}")
    return int(value)


def check_choice(value: Any, choices: Sequence[Any], name: str, method: str = "") -> None:
    """A ValueError naming the method, the option and the choices unless ``value`` is one."""
    if value not in choices:
        who = f"method {method!r}: " if method else ""
        raise ValueError(f"{who}{name} must be one of {tuple(choices)}; got {value!r}")


def interp_matrix(n_in: int, n_out: int, align_corners: bool, dtype: Any = np.float32
                  ) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation with torch's conventions
    (``F.interpolate(mode="bilinear", align_corners=...)``, no antialiasing); the 2-D bilinear
    resize of a map ``m`` is ``Ry @ m @ Rx.T``."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(out)
    else:
        src = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m.astype(dtype)


def upsample(maps: Array, size: Tuple[int, int], align_corners: bool = False) -> Array:
    """Bilinear resize of ``(N, h, w[, C])`` maps to ``size``: torch's ``interpolate(...,
    mode="bilinear", align_corners=...)`` without antialiasing (half-pixel centres by default,
    as ``cv2.resize``), as two small matrix products with :func:`interp_matrix` (the one resize
    of the methods)."""
    h, w = maps.shape[1:3]
    if (h, w) == tuple(size):
        return maps
    ry = jnp.asarray(interp_matrix(h, size[0], align_corners, maps.dtype))
    rx = jnp.asarray(interp_matrix(w, size[1], align_corners, maps.dtype))
    spec = "Hh,nhw,Ww->nHW" if maps.ndim == 3 else "Hh,nhwc,Ww->nHWc"
    return jnp.einsum(spec, ry, maps, rx, precision=jax.lax.Precision.HIGHEST)


# ------------------------------------------------------------------------------------------------
# targets


def num_classes_of(model: Any, x: Any) -> int:
    """The number of logits of ``model`` for inputs shaped like ``x``."""
    if isinstance(model, Model):
        return model.spec.num_classes
    return _num_logits(model, tuple(x.shape), jnp.dtype(x.dtype))


@functools.lru_cache(maxsize=256)
def _num_logits(f: Callable, shape: Tuple[int, ...], dtype) -> int:
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(shape, dtype))
    return int(out.shape[-1])


def target_array(model: Any, x: Any, target: Target) -> Optional[np.ndarray]:
    """Targets -> ``(N,)`` int32 on the host, or ``None`` for ``"top1"`` (the model's
    prediction, computed inside the compiled method). An int applies to every image; a class
    name is looked up in the model's labels."""
    n = x.shape[0]
    if isinstance(target, str):
        if target == "top1":
            return None
        if isinstance(model, Model) and model.spec.labels == "imagenet":
            from xaijax.models.labels import class_index
            return np.full((n,), class_index(target), np.int32)
        raise ValueError(f"target must be an int, a sequence of ints, 'top1' or (for ImageNet "
                         f"models) a class name; got {target!r}")
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must be integer class indices; got dtype {t.dtype}")
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise ValueError(f"target must be an int or have shape ({n},) for {n} images; got shape "
                         f"{t.shape}")
    k = num_classes_of(model, x)
    if t.min() < 0 or t.max() >= k:
        bad = int(t[(t < 0) | (t >= k)][0])
        raise ValueError(f"unknown class {bad}: the model has {k} classes (0..{k - 1})")
    return t.astype(np.int32)


def resolve_target(model: Any, x: Array, target: Target,
                   num_classes: Optional[int] = None) -> Array:
    """Targets -> ``(N,)`` int32 (``"top1"`` runs the model once)."""
    t = target_array(model, x, target)
    if t is None:
        return jnp.argmax(_top1_logits(model, x), axis=-1).astype(jnp.int32)
    return jnp.asarray(t)


def _top1_logits(model, x):
    return model(x) if isinstance(model, Model) else jax.jit(logits_fn(model))(x)


# ------------------------------------------------------------------------------------------------
# compute precision

DTYPES = ("float32", "bfloat16")

# Methods refused under dtype="bfloat16", with the reason (measured by benchmarks/precision.py;
# see the table in :func:`explain`): Spearman < 0.9 or max|Δ|/max|h| > 0.5 against float32.
_SCORE_DIFFS = ("its heatmap is built from differences of class scores that bfloat16 rounds to "
                "~0.4 % of the score (measured against float32 on ResNet-18: max|Δ|/max|h| "
                "{rel}, Spearman {rho})")
BF16_REFUSED: Dict[str, str] = {
    "ablationcam": _SCORE_DIFFS.format(rel=0.81, rho=0.90),
    "feature_ablation": _SCORE_DIFFS.format(rel=1.04, rho=0.82),
    "kernel_shap": _SCORE_DIFFS.format(rel=1.22, rho=0.94),
    "lime": _SCORE_DIFFS.format(rel=0.90, rho=0.93),
    "shapley_sampling": _SCORE_DIFFS.format(rel=0.82, rho=0.92),
    "blur_ig": ("successive blurred images along its path differ by less than bfloat16's "
                "resolution, so the path integral vanishes (measured: max|Δ|/max|h| 1.0, "
                "Spearman 0.0)"),
    "fgvis": ("its mask optimisation diverges from the float32 run (measured: max|Δ|/max|h| "
              "0.67, Spearman 0.53)"),
    "sise": ("its mask selection (thresholds on feature maps) flips in bfloat16 (measured: "
             "max|Δ|/max|h| 0.63, Spearman 0.85)"),
    "xrai": ("its segment ranking flips in bfloat16 (measured: max|Δ|/max|h| 0.68, Spearman "
             "0.85, top-10 % IoU 0)"),
    "adversarial_explainer": "not measured (it needs a trained explainer network)",
}


def check_dtype(dtype: Any, method: str = "", model: Any = None) -> Optional[str]:
    """``None`` (float32, the default) or ``"bfloat16"``; a ValueError naming the choices for
    anything else, and for a method that does not tolerate bfloat16 (:data:`BF16_REFUSED`)."""
    if dtype is None:
        return None
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or None: float32); got {dtype!r}")
    if name == "float32":
        return None
    if method in BF16_REFUSED:
        raise ValueError(f"method {method!r} does not support dtype='bfloat16': "
                         f"{BF16_REFUSED[method]}; use dtype='float32'")
    if model is not None and not isinstance(model, Model):
        raise TypeError("dtype='bfloat16' needs an xaijax Model (its variables are cast to "
                        "bfloat16); a plain function keeps its own precision: cast its "
                        "parameters yourself and leave dtype at float32")
    return name


def compute_in(dtype: str, model: Model, x: Array) -> Tuple[Model, Array]:
    """``model`` with its floating variables and ``x`` cast to ``dtype`` (inside a trace: the
    stored float32 variables stay as they are)."""
    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return model.replace(variables=jax.tree_util.tree_map(cast, model.variables)), cast(x)


def draw_dtype(x: Array) -> Any:
    """The dtype of a method's random draws for input ``x``: float32 at least, so that a
    ``dtype="bfloat16"`` run sees the float32 run's samples (JAX draws other numbers in
    bfloat16, not rounded ones); float64 inputs keep float64 draws."""
    return jnp.promote_types(x.dtype, jnp.float32)


def to_float32(out: Any) -> Any:
    """Every floating array of ``out`` (an Explanation, its extras included) as float32."""
    def cast(a):
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(a, jnp.float32)
        return a

    return jax.tree_util.tree_map(cast, out)


# ------------------------------------------------------------------------------------------------
# bind


def _float_option(default: Any) -> bool:
    return isinstance(default, float) or (
        isinstance(default, (int, np.integer)) and not isinstance(default, bool))


def _as_traced(v: Any, default: Any) -> Any:
    """Fix the dtype of a traced option at the boundary: Python floats (and ints where the
    default is a float) become float32 arrays, other Python ints int32, so a new value (or an
    int for a float) never retraces (STYLE.md)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return v
    if isinstance(v, (float, np.floating)) or isinstance(default, float):
        return jnp.asarray(v, jnp.float32)
    return jnp.asarray(v, jnp.int32)


def is_static_value(v: Any) -> bool:
    """Options that cannot be traced (strings, None, booleans, callables, tuples of them / of
    numbers) are static even when the method did not declare them."""
    if v is None or isinstance(v, (str, bool)):
        return True
    if isinstance(v, tuple):
        return all(is_static_value(a) or isinstance(a, (int, float)) for a in v)
    return callable(v) and not hasattr(v, "shape")


def split_options(name: str, options: Mapping[str, Any]
                  ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(static, traced)`` options of method ``name``: the declared static ones and every value
    that cannot be traced, and the rest. Unknown names are a TypeError listing the options."""
    inf = info(name)
    unknown = sorted(set(options) - set(inf.options))
    if unknown:
        raise TypeError(f"method {name!r} has no option(s) {unknown}; options: "
                        f"{list(inf.options)}")
    static = {k: v for k, v in options.items() if k in inf.static or is_static_value(v)}
    return static, {k: v for k, v in options.items() if k not in static}


class BoundMethod:
    """A method with its static options fixed: ``f(model, x, target="top1", **traced)``.

    Build with :func:`bind`. One compiled program per input shape (and per ``"top1"`` vs
    explicit targets); new traced values, new targets and new images never recompile.
    """

    def __init__(self, name: str, static: Tuple[Tuple[str, Any], ...]):
        self.info = info(name)
        self.name = name
        self.static_options = dict(static)
        inf = self.info
        unknown = sorted(set(self.static_options) - set(inf.options))
        if unknown:
            raise TypeError(f"method {name!r} has no option(s) {unknown}; options: "
                            f"{list(inf.options)}")
        self._jit_pytree = jax.jit(self.body, static_argnums=(3, 5))
        self._jit_callable = jax.jit(self.body, static_argnums=(0, 3, 5))
        self._jit_sharded_pytree = jax.jit(self.sharded_body, static_argnums=(3, 5, 6, 7))
        self._jit_sharded_callable = jax.jit(self.sharded_body, static_argnums=(0, 3, 5, 6, 7))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.static_options.items())
        return f"bind({self.name!r}{', ' if opts else ''}{opts})"

    def body(self, model: Any, x: Array, target: Array, top1: bool,
             traced: Mapping[str, Any], dtype: Optional[str] = None) -> Explanation:
        """The method itself on prepared arguments (see :meth:`prepare`), traceable: for
        programs that call a method inside their own ``jit`` (metrics, sharding). With
        ``dtype="bfloat16"`` the model's variables and ``x`` are cast inside the program and
        the result's floating arrays cast back to float32 (:func:`compute_in`)."""
        if dtype is not None:
            model, x = compute_in(dtype, model, x)
        if top1:
            target = jnp.argmax(logits_fn(model)(x), axis=-1).astype(jnp.int32)
        out = self.info.fn(model, x, target, **self.static_options, **traced)
        return out if dtype is None else to_float32(out)

    def sharded_body(self, model: Any, x: Array, target: Array, top1: bool,
                     traced: Mapping[str, Any], mesh: Any, inner: bool = False,
                     dtype: Optional[str] = None) -> Explanation:
        """:meth:`body` with the batch axis of its input and of every per-image output held
        on ``mesh``'s data axis (a sharding constraint, so that GSPMD partitions the whole
        program by image rather than choosing to replicate a loop's carry). With ``inner``
        the images are replicated and the method's inner batch (path points, masks,
        channels, noisy copies: :func:`xaijax.sharding.shard_inner`) is split instead."""
        from xaijax import sharding

        if inner:
            with sharding.inner_axis(mesh):
                return self.body(model, x, target, top1, traced, dtype)
        x, target = sharding.constrain_batch(mesh, x.shape[0], (x, target))
        with sharding.batch_axis(mesh):
            out = self.body(model, x, target, top1, traced, dtype)
        return sharding.constrain_batch(mesh, x.shape[0], out)

    def prepare(self, model: Any, x: Any, target: Target = "top1", **options
                ) -> Tuple[Array, Array, bool, Dict[str, Any]]:
        """Every check of a call, on concrete values, before anything is traced: the model's
        access level, option names, the input batch (shape, dtype, NaN), the option values
        (the method's validator) and the targets. Returns ``(x, target, top1, traced)`` for
        :meth:`body` (``target`` is a placeholder when ``top1``)."""
        inf = self.info
        if inf.needs != "function":
            require_model(model, self.name, "taps" if inf.needs == "taps" else
                          "rule-aware layers")
        else:
            logits_fn(model)
        unknown = sorted(set(options) - set(inf.options))
        if unknown:
            raise TypeError(f"method {self.name!r} has no option(s) {unknown}; options: "
                            f"{list(inf.options)}")
        again = sorted(set(options) & set(self.static_options))
        if again:
            raise TypeError(f"option(s) {again} of {self.name!r} were fixed by bind(); bind "
                            f"again to change them")
        static_now = sorted(k for k in options if k in inf.static or is_static_value(options[k]))
        if static_now:
            raise TypeError(f"option(s) {static_now} of {self.name!r} decide the compiled "
                            f"program (static); pass them to xj.methods.bind({self.name!r}, "
                            f"...) or to xj.explain")
        check_input(model if isinstance(model, Model) else None, x)
        check_finite(x)
        defaults = dict(inf.defaults)
        traced = {k: _as_traced(v, defaults.get(k)) for k, v in options.items()}
        if inf.validate is not None:
            inf.validate(model, x, concrete_options(inf, {**self.static_options, **traced}))
        t = target_array(model, x, target)
        top1 = t is None
        t = jnp.zeros((x.shape[0],), jnp.int32) if top1 else jnp.asarray(t)
        return jnp.asarray(x, jnp.float32), t, top1, traced

    def __call__(self, model: Any, x: Array, target: Target = "top1", *, mesh: Any = None,
                 dtype: Optional[str] = None, **options) -> Explanation:
        """Run the method; with ``mesh`` (a :class:`jax.sharding.Mesh` or ``"auto"``: all
        local devices) the batch is sharded over the mesh's data axis and the model
        replicated (see :mod:`xaijax.sharding`); the result is the one-device result. With
        ``dtype="bfloat16"`` it computes in bfloat16 (see :func:`explain`)."""
        jitted, args, unpad = self._program(model, x, target, mesh, dtype, options)
        return unpad(jitted(*args))

    def compiled_text(self, model: Any, x: Array, target: Target = "top1", *,
                      mesh: Any = None, dtype: Optional[str] = None, **options) -> str:
        """The optimised HLO text of the program a call with these arguments runs (sharded
        with ``mesh``: the images split over the data axis, or, with fewer images than
        devices, the inner batch), for inspecting its partitioning and collectives."""
        jitted, args, _ = self._program(model, x, target, mesh, dtype, options)
        return jitted.lower(*args).compile().as_text()

    def _program(self, model, x, target, mesh, dtype, options):
        """``(jitted function, its arguments, cut)``: what a call runs, on checked inputs;
        ``cut`` trims a padded sharded batch back to the caller's."""
        dtype = check_dtype(dtype, self.name, model)
        x, t, top1, traced = self.prepare(model, x, target, **options)
        if mesh is None:
            jitted = self._jit_pytree if isinstance(model, Model) else self._jit_callable
            return jitted, (model, x, t, top1, traced, dtype), lambda out: out
        from xaijax import sharding

        m = sharding.resolve_mesh(mesh)
        jitted = (self._jit_sharded_pytree if isinstance(model, Model) else
                  self._jit_sharded_callable)
        rep_model, rep_traced = sharding.replicated_model(model, m), sharding.replicate(traced, m)
        if x.shape[0] < sharding.data_size(m):  # fewer images than devices: split inner axes
            xs, ts = sharding.replicate((x, t), m)
            return (jitted, (rep_model, xs, ts, top1, rep_traced, m, True, dtype),
                    lambda out: out)
        n, (xs, ts) = sharding.shard_batch(m, x, t)
        return (jitted, (rep_model, xs, ts, top1, rep_traced, m, False, dtype),
                lambda out: sharding.unpad(out, n, xs.shape[0]))


_BOUND: Dict[Tuple[str, Tuple[Tuple[str, Any], ...]], BoundMethod] = {}


def bind(name: str, **static_options) -> BoundMethod:
    """Method ``name`` configured with its static options, as a pure, compiled function.

    Args:
      name: a name from :func:`available`.
      **static_options: the options that decide shapes or control flow (``tap``, ``steps``,
        ``composite``, ...); hashable values.

    Returns:
      ``f(model, x, target="top1", **traced_options) -> Explanation``, cached: the same
      ``bind`` arguments give the same function and its compiled programs.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> f = xj.methods.bind("gradcam", tap="conv3")
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> f(m, jnp.ones((2, 32, 32, 3)), "top1").heatmap.shape
      (2, 32, 32)
    """
    key = (name, tuple(sorted(static_options.items())))
    try:
        hash(key)
    except TypeError:
        bad = [k for k, v in static_options.items() if not _hashable(v)]
        raise TypeError(f"static option(s) {bad} of {name!r} must be hashable (use tuples, "
                        f"not lists or arrays)") from None
    if key not in _BOUND:
        _BOUND[key] = BoundMethod(name, key[1])
    return _BOUND[key]


def _hashable(v: Any) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


# ------------------------------------------------------------------------------------------------
# explain


def explain(model: Any, x: Array, target: Target = "top1", *, method: str = "gradient",
            mesh: Any = None, dtype: Optional[str] = None, **options) -> Explanation:
    """Explain ``model``'s decision for each image of ``x``.

    ``explain(model, x, t, method=name, **options)`` is ``bind(name, **static)(model, x, t,
    **traced)``, with the options split by :func:`split_options`.

    Args:
      model: an xaijax :class:`~xaijax.models.Model`, or any JAX callable ``f(x) -> logits``
        for methods that need only the function.
      x: ``(N, H, W, C)`` float32 batch in the model's normalised space.
      target: int, ints ``(N,)``, ``"top1"`` or an ImageNet class name.
      method: a name from :func:`available`.
      mesh: ``None`` (one device), a :class:`jax.sharding.Mesh` or ``"auto"`` (all local
        devices on one ``"data"`` axis): the batch is sharded over the mesh's data axis
        (padded to a multiple of it and cut back), the model's variables replicated; the
        result equals the one-device result (:mod:`xaijax.sharding`).
      dtype: ``None``/``"float32"`` (default) or ``"bfloat16"``: the compute precision. In
        bfloat16 the model's variables and ``x`` are cast inside the compiled program (the
        stored variables stay float32), convolutions and dense layers accumulate in float32
        (``preferred_element_type``) and round to bfloat16, regressions (LIME/SHAP) and SVDs
        (Eigen-CAM) run in float32, and every floating output is float32. One compiled
        program per dtype (a repeated call does not recompile). Needs an xaijax Model.
        Methods in :data:`BF16_REFUSED` raise a ValueError; the others' error against float32
        is in the table below.
      **options: the method's options (see ``xj.methods.<name>``).

    Returns:
      an :class:`Explanation`.

    bfloat16 against float32, measured by ``python benchmarks/precision.py --model resnet18
    --size 64 --batch 2`` (ResNet-18, random weights, two N(0, 1) images at 64x64, the float32
    top-1 class, the script's cheap options: IG 16 steps, RISE 128 masks, SmoothGrad 8 samples,
    20 optimisation steps, ...; CPU, jax 0.10.2). ``rel`` = max|h_bf16 − h_f32| / max|h_f32|,
    ``ρ`` = Spearman correlation of the pixels (smallest of the two images), ``IoU`` = overlap
    of the top-10 % pixels (smallest; at 64 px the CAM maps are 2x2 upsampled, so near-ties
    make it low for some CAMs whose ``rel`` is < 1 %). Allowed: ``ρ ≥ 0.9`` and ``rel ≤ 0.5``;
    the refused rows raise (:data:`BF16_REFUSED`)::

      method                           rel      ρ      IoU
      cam / gradcam / hirescam       1.1e-2   0.999   0.985
      gradcam_elementwise, layercam  7.7e-3   0.995   0.607
      gradcam_pp                     7.4e-3   0.990   0.198
      xgradcam                       8.8e-3   0.999   0.957
      eigencam                       1.4e-3   0.999   0.985
      eigengradcam                   4.8e-3   1.000   0.995
      fem                            3.7e-2   0.998   0.962
      scorecam                       6.6e-3   0.993   0.673
      linear_approx                  1.1e-2   0.999   0.985
      excitation_backprop            7.9e-3   1.000   0.981
      contrastive_excitation_backprop 7.4e-2  1.000   0.938
      lrp (epsilon_plus)             7.0e-3   1.000   0.990
      deeplift / deeplift_shap       1.4e-1   0.977   0.851
      deconvnet                      1.2e-1   0.999   0.957
      guided_backprop                2.6e-2   0.999   0.962
      guided_gradcam                 2.0e-2   0.998   0.971
      fullgrad                       2.0e-1   0.985   0.876
      gradient                       1.9e-1   0.986   0.902
      input_x_gradient               1.4e-1   0.977   0.851
      integrated_gradients           1.2e-1   0.984   0.880
      guided_ig                      7.5e-2   0.986   0.863
      gradient_shap                  9.6e-2   0.986   0.885
      smoothgrad                     7.3e-2   0.994   0.916
      vargrad                        1.4e-1   0.997   0.925
      occlusion                      6.5e-2   0.993   0.889
      rise                           4.3e-4   1.000   0.990
      extremal_perturbation          1.2e-3   1.000   0.985
      meaningful_perturbation        0        1.000   1.000  (identical after 20 steps)
      dssr                           3.6e-2   0.937   0.782
      center                         0        1.000   1.000  (no model involved)
      refused: ablationcam 8.1e-1 / 0.901, feature_ablation 1.04 / 0.823, kernel_shap
      1.22 / 0.939, lime 0.90 / 0.928, shapley_sampling 0.82 / 0.925 (rel / ρ: differences of
      class scores rounded to ~0.4 %), blur_ig 1.0 / 0.0 (its path vanishes in bfloat16),
      fgvis 0.67 / 0.53 (the mask optimisation diverges), sise 0.63 / 0.85 and xrai 0.68 / 0.85
      (their discrete choices: SISE's mask selection, XRAI's segment ranking, flip);
      adversarial_explainer not measured. Random draws (SmoothGrad noise, GradientSHAP) are
      made in float32 in both runs (:func:`draw_dtype`), so the rows compare like with like.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> xj.explain(m, jnp.ones((2, 32, 32, 3)), 3, method="gradient").heatmap.shape
      (2, 32, 32)
    """
    static, traced = split_options(method, options)
    return bind(method, **static)(model, x, target, mesh=mesh, dtype=dtype, **traced)
