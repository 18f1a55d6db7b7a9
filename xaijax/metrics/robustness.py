"""Robustness and sanity metrics: how an explanation changes when the input or the model does.

* :func:`max_sensitivity` — the largest relative change of the explanation over random
  perturbations of the input in an L∞ ball (Yeh et al. 2019, SENS_MAX; Quantus'
  ``MaxSensitivity``).
* :func:`randomisation_check` — the model-parameter randomisation test (Adebayo et al. 2018,
  §3): the layers are re-initialised from the logits down (cascading) or one at a time
  (independent), and each explanation is compared with the original by Spearman rank
  correlation and SSIM.
* :func:`randomise_layers` — the model with some layers re-initialised, as the check does it.

Both metrics take a method name and its options, call the method configured by
:func:`xaijax.methods.bind` (its static options fixed, its traced ones passed through) inside one
compiled program per input shape, and return per-image values: the caller averages. Options
whose names the metric uses itself (``key``, ``samples``, ...) reach the method through
``method_options={...}``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods.base import (BoundMethod, Target, bind, check_choice, check_positive_int,
                                 logits_fn, minmax, require_model, split_options)
from xaijax.models.base import Model

Array = jax.Array

NORMS = ("fro", "linf")
ORDERS = ("cascading", "independent")

# SSIM of Wang et al. 2004: an 11×11 Gaussian window of σ = 1.5 (radius int(3.5·σ + 0.5) = 5,
# scipy's truncate 3.5 as skimage), K1 = 0.01, K2 = 0.03, population (co)variances, the mean of
# the SSIM map over the pixels whose window lies inside the image.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


class RandomisationCheck(NamedTuple):
    """The result of :func:`randomisation_check`; ``L`` steps, one per randomised layer.

    Attributes:
      layers: the ``L`` layer (tap) names in randomisation order, from the logits down. Step
        ``l`` has ``layers[:l + 1]`` randomised (cascading) or ``layers[l]`` alone
        (independent).
      spearman: ``(L, N)`` Spearman rank correlation of the absolute maps ``|Φ|`` (ties get
        their average rank, as ``scipy.stats.spearmanr``); NaN where a map is constant.
      spearman_signed: ``(L, N)`` the same on the signed maps (equal to ``spearman`` for
        non-negative maps such as ``gradient``).
      ssim: ``(L, N)`` SSIM of ``|Φ|`` scaled to [0, 1] per map (min-max), data range 1.
      heatmaps: ``(L, N, H, W)`` the explanation after each step.
      original: ``(N, H, W)`` the explanation of the intact model.
    """

    layers: Tuple[str, ...]
    spearman: Array
    spearman_signed: Array
    ssim: Array
    heatmaps: Array
    original: Array


# ------------------------------------------------------------------------------------------------
# the method, checked as bind() checks it, and called inside our own compiled programs


def _method(method: str, options: Mapping[str, Any], method_options: Optional[Mapping[str, Any]],
            what: str) -> Tuple[BoundMethod, dict]:
    if not isinstance(method, str):
        raise TypeError(f"{what}: method must be a method name such as 'gradient' (see "
                        f"xj.methods.available()); got {type(method).__name__}")
    if method_options is not None and not isinstance(method_options, Mapping):
        raise TypeError(f"{what}: method_options must be a dict of the method's options; got "
                        f"{type(method_options).__name__}")
    both = sorted(set(options) & set(method_options or {}))
    if both:
        raise TypeError(f"{what}: option(s) {both} given both as keywords and in "
                        f"method_options; give each once")
    static, traced = split_options(method, {**(method_options or {}), **options})
    return bind(method, **static), traced


def _prepare(bound: BoundMethod, model: Any, x: Any, target: Target, traced: dict):
    """``bound.prepare`` (every check a call of the method makes), as ``(x, traced, t,
    top1)``."""
    x, t, top1, traced = bound.prepare(model, x, target, **traced)
    return x, traced, t, top1


def _explain(bound: BoundMethod, model: Any, x: Array, t: Array, traced: dict) -> Array:
    """The heatmap of the bound method (its body, traced inline)."""
    return bound.body(model, x, t, False, traced).heatmap


def _resolve(model: Any, x: Array, t: Array, top1: bool) -> Array:
    return jnp.argmax(logits_fn(model)(x), axis=-1).astype(jnp.int32) if top1 else t


def _key(key: Any, what: str) -> Array:
    if key is None:
        return jax.random.PRNGKey(0)
    if not hasattr(key, "shape"):
        raise TypeError(f"{what}: key must be a PRNG key (jax.random.PRNGKey(0) or "
                        f"jax.random.key(0)); got {type(key).__name__}")
    return key


def _compiled(body, static: Tuple[str, ...]):
    """``body(model, ...)`` under ``jit``: a Model is traced (its variables are leaves), a plain
    callable is a static argument."""
    on_tree = jax.jit(body, static_argnames=static)
    on_fn = jax.jit(body, static_argnums=(0,), static_argnames=static)

    def call(model, *args, **kwargs):
        return (on_tree if isinstance(model, Model) else on_fn)(model, *args, **kwargs)

    return call


# ------------------------------------------------------------------------------------------------
# max-sensitivity


def _sample_keys(key: Array, n: int, samples: int) -> Array:
    """``(N, samples)`` keys: split once per image, each image's key once per sample."""
    return jax.vmap(lambda k: jax.random.split(k, samples))(jax.random.split(key, n))


def _uniform(keys: Array, shape: Tuple[int, ...], radius: Array) -> Array:
    """``(len(keys), *shape)`` noise, U[-radius, radius) per entry (Quantus'
    ``batch_uniform_noise``)."""
    return jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, -radius, radius))(keys)


@functools.partial(jax.jit, static_argnames=("samples",))
def _perturbations(key: Array, x: Array, radius: Array, *, samples: int) -> Array:
    """``(N, samples, H, W, C)``: the δ that :func:`max_sensitivity` adds with this key."""
    keys = _sample_keys(key, x.shape[0], samples)
    return jax.vmap(lambda k: _uniform(k, x.shape[1:], radius))(keys)


def _norm(a: Array, kind: str) -> Array:
    """Per-row norm of ``(B, P)``: the Frobenius (L2) norm of each flattened map, or L∞."""
    if kind == "linf":
        return jnp.max(jnp.abs(a), axis=-1)
    return jnp.sqrt(jnp.sum(a * a, axis=-1))


def _sens_body(model, x, t, key, radius, traced, *, bound, top1, samples, sample_batch, norm,
               relative):
    n = x.shape[0]
    t = _resolve(model, x, t, top1)
    ref = _explain(bound, model, x, t, traced).reshape(n, -1)
    keys = _sample_keys(key, n, samples)

    def one(s):  # one perturbed copy of the whole batch
        xs = x + _uniform(keys[:, s], x.shape[1:], radius)
        h = _explain(bound, model, xs, t, traced).reshape(n, -1)
        return _norm(ref - h, norm)  # Quantus: difference(a, b) = a − b, then the norm

    d = jax.lax.map(one, jnp.arange(samples, dtype=jnp.int32), batch_size=sample_batch)
    if relative:
        d = d / _norm(ref, norm)[None]
    return jnp.max(d, axis=0)


_sens = _compiled(_sens_body, ("bound", "top1", "samples", "sample_batch", "norm", "relative"))


def max_sensitivity(model: Any, x: Array, target: Target = "top1", method: str = "gradient", *,
                    radius: float = 0.2, samples: int = 10, key: Optional[Array] = None,
                    norm: str = "fro", relative: bool = True,
                    sample_batch: Optional[int] = None,
                    method_options: Optional[Mapping[str, Any]] = None,
                    **options) -> Array:
    """Max-sensitivity: the largest change of the explanation under small input perturbations
    (lower is better).

    For each image, ``samples`` perturbations ``δ_s`` are drawn uniformly from the L∞ ball of
    ``radius`` (every entry ~ U[−radius, radius), Quantus' ``batch_uniform_noise``) and

        SENS_MAX(x) = max_s ‖Φ(x) − Φ(x + δ_s)‖ / ‖Φ(x)‖

    with ``Φ`` the method's heatmap (flattened) and ‖·‖ the Frobenius norm (Quantus' defaults:
    ``difference``, ``fro_norm`` for numerator and denominator, no ``abs``, no normalisation of
    the maps). ``relative=False`` drops the denominator (Yeh et al.'s equation as printed). The
    target is held fixed: ``"top1"`` is the prediction on the unperturbed ``x``, as Quantus
    explains its ``y_batch`` at every sample. A zero map ``Φ(x)`` gives inf (NaN where the
    perturbed map is zero as well; Quantus' ``nanmax`` would skip such samples).

    The perturbed copies of the batch go through the method ``sample_batch`` copies at a time
    (``lax.map`` over the samples, ``vmap`` within a chunk), in the same compiled program as
    ``Φ(x)``; each method call sees the whole batch of ``N`` images, so per-image options
    (baseline arrays, noise) work unchanged.

    Args:
      model: an xaijax Model, or any JAX callable ``f(x) -> logits`` for methods that need only
        the function (pass the same function object each time: it is a static argument).
      x: ``(N, H, W, C)`` float32 images in the model's normalised space.
      target: an int, ints ``(N,)``, ``"top1"`` or a class name.
      method: a method name (``xj.methods.available()``).
      radius: half-width of the uniform noise, in the units of ``x`` (traced); 0.2 as Quantus'
        ``lower_bound``.
      samples: perturbations per image (static; Quantus' ``nr_samples``, default 200 there).
      key: PRNG key of the perturbations, split per image and per sample; default
        ``PRNGKey(0)``.
      norm: ``"fro"`` (L2 of the flattened map, default) or ``"linf"``, for both numerator and
        denominator.
      relative: divide by ``‖Φ(x)‖`` (default, as Quantus and Yeh et al.'s code).
      sample_batch: perturbed copies of the batch per method call (static); default
        ``max(1, 64 // N)``, about 64 images per call.
      method_options: the method's options whose names clash with the metric's own
        (``key``, ``samples``, ...), e.g. ``{"key": k}`` for ``smoothgrad``.
      **options: the method's options (static ones configure :func:`xaijax.methods.bind`).

    Returns:
      ``(N,)`` float32 max-sensitivity per image.

    Examples:
      >>> import xaijax as xj, jax, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
      >>> s = xj.metrics.max_sensitivity(m, x, 3, "gradient", samples=4)
      >>> s.shape, bool(jnp.all(s > 0))
      ((2,), True)
      >>> s0 = xj.metrics.max_sensitivity(m, x, 3, "gradient", radius=0.0, samples=4)
      >>> bool(jnp.all(s0 < 1e-5))             # no noise: the same map (to rounding)
      True

    References:
      Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS, the
      max-sensitivity ``SENS_MAX(Φ, f, x, r) = max_{‖y − x‖ ≤ r} ‖Φ(f, y) − Φ(f, x)‖``,
      estimated by Monte-Carlo sampling; Hedström et al. 2023, Quantus ``MaxSensitivity``
      (v0.6.0 defaults, except ``samples``).
    """
    what = "max_sensitivity"
    samples = check_positive_int(samples, "samples", what, "perturbations per image")
    check_choice(norm, NORMS, "norm", what)
    if not isinstance(relative, bool):
        raise TypeError(f"{what}: relative must be True or False; got {relative!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)) \
            or not np.isfinite(radius) or radius < 0:
        raise ValueError(f"{what}: radius must be a finite number >= 0 (the half-width of the "
                         f"uniform noise, in the units of x); got {radius!r}")
    bound, traced = _method(method, options, method_options, what)
    x, traced, t, top1 = _prepare(bound, model, x, target, traced)
    n = x.shape[0]
    if sample_batch is None:
        sample_batch = max(1, 64 // n)
    sample_batch = min(samples, check_positive_int(sample_batch, "sample_batch", what,
                                                   "perturbed copies of the batch per call"))
    return _sens(model, x, t, _key(key, what), jnp.asarray(radius, jnp.float32), traced,
                 bound=bound, top1=top1, samples=samples, sample_batch=sample_batch, norm=norm,
                 relative=relative)


# ------------------------------------------------------------------------------------------------
# layer randomisation


_LAYERS: dict = {}


def _kernel_layers(model: Model) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    """``(tap, module path)`` of every layer with a ``kernel`` parameter (convolutions, dense
    layers), in forward order; one abstract trace per architecture, cached."""
    key = (type(model.module), repr(model.module), model.spec,
           jax.tree_util.tree_structure(model.variables))
    if key not in _LAYERS:
        params = model.variables["params"] if "params" in model.variables else {}
        out = []
        for tap, (path, _) in model.layers().items():
            node = params
            for p in path:
                node = node.get(p) if isinstance(node, Mapping) else None
            if isinstance(node, Mapping) and "kernel" in node:
                out.append((tap, tuple(path)))
        _LAYERS[key] = tuple(out)
    return _LAYERS[key]


def _select_layers(model: Model, layers: Any, what: str) -> Tuple[Tuple[str, Tuple[str, ...]],
                                                                 ...]:
    """The layers to randomise as ``(tap, path)``, from the logits down (reverse forward
    order), with their index among all kernel layers (which decides their random draw)."""
    table = _kernel_layers(model)
    if not table:
        raise ValueError(f"{what}: model {model.spec.name!r} has no layer with a 'kernel' "
                         f"parameter (convolution or dense) under a tap name; nothing to "
                         f"randomise")
    names = [tap for tap, _ in table]
    if layers is None:
        chosen = set(names)
    else:
        if isinstance(layers, str):
            layers = (layers,)
        try:
            asked = list(layers)
        except TypeError:
            raise TypeError(f"{what}: layers must be None (every conv/dense layer) or a sequence "
                            f"of tap names; got {type(layers).__name__}") from None
        chosen = set()
        for name in asked:
            if not isinstance(name, str):
                raise TypeError(f"{what}: layers must be tap names (str); got {name!r}")
            tap = model.resolve(name)
            if tap not in names:
                raise ValueError(f"{what}: layer {name!r} has no 'kernel' parameter ("
                                 f"{model.tap_type(tap)}); only convolutions and dense layers "
                                 f"are re-initialised (normalisation layers are kept). Choose "
                                 f"from {names}")
            if tap in chosen:
                raise ValueError(f"{what}: layer {name!r} is listed twice in layers")
            chosen.add(tap)
        if not chosen:
            raise ValueError(f"{what}: layers is empty; pass None for every conv/dense layer")
    return tuple((j, tap, path) for j, (tap, path) in reversed(list(enumerate(table)))
                 if tap in chosen)


def _get(tree: Any, path: Tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: Any, path: Tuple[str, ...], value: Any) -> Any:
    """A copy of the nested mapping ``tree`` with ``value`` at ``path`` (copies along the path
    only)."""
    if not path:
        return value
    new = dict(tree)
    new[path[0]] = _set(tree[path[0]], path[1:], value)
    return type(tree)(new) if not isinstance(tree, dict) else new


def _fresh_params(params: Mapping[str, Array], key: Array) -> dict:
    """The layer's parameters drawn again with the zoo's (torch's default) initialisation:
    every leaf ~ U(−1/√fan_in, 1/√fan_in), fan_in the product of the kernel's shape but the
    last (output) axis."""
    fan_in = int(np.prod(params["kernel"].shape[:-1]))
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    names = sorted(params)
    keys = jax.random.split(key, len(names))
    return {k: jax.random.uniform(kk, params[k].shape, params[k].dtype, -bound, bound)
            for k, kk in zip(names, keys)}


def _randomised_variables(variables: Any, chosen, key: Array, on: Array) -> Any:
    """``variables`` with layer ``i`` of ``chosen`` re-initialised where ``on[i]`` (traced
    bool). The draw of a layer depends on ``key`` and its index among the model's kernel
    layers only, so it is the same whichever other layers are chosen."""
    out = variables
    for i, (j, _, path) in enumerate(chosen):
        full = ("params",) + path
        old = _get(variables, full)
        new = _fresh_params(old, jax.random.fold_in(key, j))
        mixed = {k: jnp.where(on[i], new[k], v) if k in new else v for k, v in old.items()}
        out = _set(out, full, type(old)(mixed) if not isinstance(old, dict) else mixed)
    return out


@functools.partial(jax.jit, static_argnames=("chosen",))
def _randomise(model: Model, key: Array, *, chosen) -> Model:
    v = _randomised_variables(model.variables, chosen, key, jnp.ones((len(chosen),), bool))
    return model.replace_variables(v)


def randomise_layers(model: Model, layers: Union[str, Sequence[str], None] = None, *,
                     key: Optional[Array] = None) -> Model:
    """The model with ``layers`` re-initialised, exactly as :func:`randomisation_check` does.

    Every parameter of a chosen convolution or dense layer (kernel and bias) is drawn again
    from the zoo's initialisation, U(−1/√fan_in, 1/√fan_in) (torch's default); the draw of a
    layer depends only on ``key`` and the layer, so the last step of a cascade equals
    ``randomise_layers(model, layers, key=key)``. Normalisation layers (BatchNorm) are kept.

    Args:
      model: an xaijax Model.
      layers: tap names of convolution / dense layers, or ``None`` for all of them.
      key: PRNG key; default ``PRNGKey(0)``.

    Returns:
      a new :class:`~xaijax.models.Model` (the input is not changed).

    Examples:
      >>> import xaijax as xj, jax.numpy as jnp
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> r = xj.metrics.randomise_layers(m, ["fc"])
      >>> bool(jnp.all(r.variables["params"]["conv1"]["kernel"] ==
      ...               m.variables["params"]["conv1"]["kernel"]))
      True

    References:
      Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS, §3 (model parameter
      randomisation test).
    """
    what = "randomise_layers"
    model = require_model(model, what, "parameters by layer")
    chosen = _select_layers(model, layers, what)
    return _randomise(model, _key(key, what), chosen=chosen)


# ------------------------------------------------------------------------------------------------
# similarity of maps


def _average_ranks(v: Array) -> Array:
    """1-based ranks along the last axis, ties sharing their average rank (``scipy.stats.
    rankdata(method="average")``)."""
    shape = v.shape
    v = jnp.where(v == 0, 0.0, v).reshape(-1, shape[-1])  # −0 and +0 tie
    s = jnp.sort(v, axis=-1)
    lo = jax.vmap(lambda a, q: jnp.searchsorted(a, q, side="left"))(s, v)
    hi = jax.vmap(lambda a, q: jnp.searchsorted(a, q, side="right"))(s, v)
    return ((lo + hi + 1).astype(jnp.float32) / 2.0).reshape(shape)


def _spearman(a: Array, b: Array) -> Array:
    """Spearman's ρ of the maps ``a``, ``b`` ``(..., H, W)`` per map: the Pearson correlation of
    their average ranks (NaN when a map is constant)."""
    a = a.reshape(*a.shape[:-2], -1).astype(jnp.float32)
    b = b.reshape(*b.shape[:-2], -1).astype(jnp.float32)
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - jnp.mean(ra, axis=-1, keepdims=True)
    rb = rb - jnp.mean(rb, axis=-1, keepdims=True)
    rho = jnp.sum(ra * rb, axis=-1) / jnp.sqrt(jnp.sum(ra * ra, axis=-1) *
                                               jnp.sum(rb * rb, axis=-1))
    constant = (jnp.max(a, -1) == jnp.min(a, -1)) | (jnp.max(b, -1) == jnp.min(b, -1))
    return jnp.where(constant, jnp.nan, rho)  # the mean of equal ranks need not round to 0


def _window(n: int) -> np.ndarray:
    """``(n − 2r, n)`` matrix of the 1-D Gaussian window at every valid position."""
    t = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    g /= g.sum()
    m = np.zeros((n - 2 * SSIM_RADIUS, n))
    for i in range(n - 2 * SSIM_RADIUS):
        m[i, i: i + 2 * SSIM_RADIUS + 1] = g
    return m.astype(np.float32)


def _ssim(a: Array, b: Array, data_range: float = 1.0) -> Array:
    """Mean SSIM (Wang et al. 2004) of the maps ``a``, ``b`` ``(..., H, W)``: Gaussian window
    σ = 1.5 of 11×11, K1 = 0.01, K2 = 0.03, population statistics, averaged over the valid
    positions (``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``)."""
    h, w = a.shape[-2:]
    if min(h, w) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs maps of at least {2 * SSIM_RADIUS + 1}x"
                         f"{2 * SSIM_RADIUS + 1} (its Gaussian window); got {h}x{w}")
    gy, gx = jnp.asarray(_window(h)), jnp.asarray(_window(w))
    hi = jax.lax.Precision.HIGHEST

    def filt(m):
        return jnp.einsum("Yy,...yx,Xx->...YX", gy, m, gx, precision=hi)

    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    ux, uy = filt(a), filt(b)
    vx = filt(a * a) - ux * ux
    vy = filt(b * b) - uy * uy
    vxy = filt(a * b) - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(-2, -1))


# ------------------------------------------------------------------------------------------------
# the model-parameter randomisation test


def _rand_body(model, x, t, key, steps, traced, *, bound, top1, chosen):
    t = _resolve(model, x, t, top1)
    ref = _explain(bound, model, x, t, traced)

    def step(on):
        m = model.replace_variables(_randomised_variables(model.variables, chosen, key, on))
        return _explain(bound, m, x, t, traced)

    maps = jax.lax.map(step, steps)
    a_ref, a = jnp.abs(ref), jnp.abs(maps)
    rho = _spearman(a_ref[None], a)
    rho_signed = _spearman(ref[None], maps)
    ssim = _ssim(minmax(a_ref)[None], jax.vmap(minmax)(a))
    return rho, rho_signed, ssim, maps, ref


_rand = jax.jit(_rand_body, static_argnames=("bound", "top1", "chosen"))


def randomisation_check(model: Model, x: Array, target: Target = "top1",
                        method: str = "gradient", *, order: str = "cascading",
                        key: Optional[Array] = None,
                        layers: Union[str, Sequence[str], None] = None,
                        method_options: Optional[Mapping[str, Any]] = None,
                        **options) -> RandomisationCheck:
    """Model-parameter randomisation test: does the explanation depend on the learned weights?

    The convolution and dense layers are re-initialised (:func:`randomise_layers`: kernel and
    bias drawn again from the zoo's initialisation U(±1/√fan_in), normalisation layers kept)
    from the logits down. ``order="cascading"`` randomises them successively, step ``l`` having
    the top ``l + 1`` layers random; ``"independent"`` randomises one layer at a time, the
    others intact. After each step the explanation of the same target is computed again
    (``"top1"`` is the intact model's prediction, held fixed) and compared with the original
    by Spearman's rank correlation of the absolute maps (and of the signed maps) and by SSIM of
    the absolute maps min-max scaled to [0, 1] (data range 1; Gaussian window σ = 1.5, 11×11,
    K1 = 0.01, K2 = 0.03, population statistics, mean over the valid positions: Wang et al.
    2004). A method that passes the check has low similarities once the top layers are random;
    the intact model (step "0", not returned) has similarity 1.

    All ``L`` steps run in one compiled program (``lax.map`` over the steps, one model in memory
    at a time); a layer's random draw depends only on ``key`` and the layer, so the cascade's
    steps are nested and the two orders use the same random weights (``order`` is not part of
    the compiled program).

    Args:
      model: an xaijax Model (the parameters are needed by layer).
      x: ``(N, H, W, C)`` float32 images in the model's normalised space (H, W >= 11 for SSIM).
      target: an int, ints ``(N,)``, ``"top1"`` or a class name.
      method: a method name (``xj.methods.available()``).
      order: ``"cascading"`` (default) or ``"independent"``.
      key: PRNG key of the new weights; default ``PRNGKey(0)``.
      layers: tap names of the convolution / dense layers to randomise (put in order from the
        logits down whatever order they come in); default all of them.
      method_options: the method's options whose names clash with the metric's own
        (``key``, ``order``, ``layers``), e.g. ``{"key": k}``.
      **options: the method's options (static ones configure :func:`xaijax.methods.bind`).

    Returns:
      a :class:`RandomisationCheck`: ``layers`` (L names), ``spearman``, ``spearman_signed``,
      ``ssim`` ``(L, N)``, ``heatmaps`` ``(L, N, H, W)``, ``original`` ``(N, H, W)``.

    Examples:
      >>> import xaijax as xj, jax
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
      >>> r = xj.metrics.randomisation_check(m, x, 3, "gradient")
      >>> r.layers
      ('fc', 'conv5', 'conv4', 'conv3', 'conv2', 'conv1')
      >>> r.spearman.shape, r.ssim.shape, r.heatmaps.shape
      ((6, 2), (6, 2), (6, 2, 32, 32))

    References:
      Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS, §3 (cascading and
      independent randomisation; Spearman rank correlation with and without absolute values,
      SSIM); Wang et al. 2004, "Image Quality Assessment: From Error Visibility to Structural
      Similarity", IEEE TIP (SSIM, Eq. 13; §III-C, the 11×11 Gaussian window of σ = 1.5).
    """
    what = "randomisation_check"
    model = require_model(model, what, "parameters by layer")
    check_choice(order, ORDERS, "order", what)
    chosen = _select_layers(model, layers, what)
    bound, traced = _method(method, options, method_options, what)
    x, traced, t, top1 = _prepare(bound, model, x, target, traced)
    size = 2 * SSIM_RADIUS + 1
    if min(x.shape[1:3]) < size:
        raise ValueError(f"{what}: SSIM needs images of at least {size}x{size} (its Gaussian "
                         f"window); got {x.shape[1]}x{x.shape[2]}")
    n_l = len(chosen)
    steps = np.tril(np.ones((n_l, n_l), bool)) if order == "cascading" else np.eye(n_l,
                                                                                   dtype=bool)
    rho, rho_signed, ssim, maps, ref = _rand(model, x, t, _key(key, what), jnp.asarray(steps),
                                             traced, bound=bound, top1=top1, chosen=chosen)
    return RandomisationCheck(tuple(tap for _, tap, _ in chosen), rho, rho_signed, ssim, maps,
                              ref)
