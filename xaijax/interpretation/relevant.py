"""Explanation by interpretation (Oramas et al. 2019, §3.1–3.2, §4.1): filter-wise descriptors,
relevant (layer, filter) pairs by μ-Lasso, visual feedback from the top relevant filters of the
predicted class, average images of relevant filters and filter ablation.

Layers and responses. The descriptor layers are the model's ``Conv`` and ``Dense`` taps in
forward order, except the last of them (the layer "whose output is directly related to the
classes", §3.1). A layer's *response* is read at the ReLU that follows it (BatchNorm in between
is skipped), or at the layer itself when no ReLU follows: the paper's "filter responses" are the
rectified activations it visualises and ablates. A relevant feature is a pair (layer, filter);
its heatmaps start from that filter's response map (``xaijax.methods.backprop``'s
``tap=``/``filter=`` convention) and its ablation zeroes that map.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from xaijax.interpretation.lasso import mu_lasso
from xaijax.methods.backprop import start_cotangent
from xaijax.methods.base import require_model
from xaijax.methods.gradient import heatmap_maxabs
from xaijax.models.base import Model
from xaijax.nn import layers as L
from xaijax.nn.intercept import chain
from xaijax.rules.relu import guided_backprop_rules
from xaijax.rules.stride import stride_fix_rules

Array = jax.Array
LayerSel = Union[str, Sequence[str]]

FEEDBACKS = ("upsampled", "deconv_gb", "stride_fix")
_PARAMETRIC = ("Conv", "Dense")
_PASS = ("BatchNorm", "Identity")


# ---- layers ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _layer_table(taps: Tuple[str, ...], types: Tuple[str, ...]) -> Tuple[Tuple[str, str, str], ...]:
    """``(layer, response_tap, type)`` for every Conv/Dense tap except the last."""
    idx = [i for i, t in enumerate(types) if t in _PARAMETRIC]
    out = []
    for i in idx[:-1]:
        j = i + 1
        while j < len(taps) and types[j] in _PASS:
            j += 1
        resp = taps[j] if j < len(taps) and types[j] in ("ReLU", "ReLU6") else taps[i]
        out.append((taps[i], resp, types[i]))
    return tuple(out)


def descriptor_layers(model: Model, layers: LayerSel = "all") -> Tuple[Tuple[str, str, str], ...]:
    """The descriptor layers as ``(layer, response_tap, layer_type)`` triples.

    Args:
      model: a zoo Model (it must name its taps).
      layers: ``"all"`` (every Conv and Dense layer but the last: the paper's *All*), ``"conv"``
        (its Conv layers only: *OnlyConv*) or a sequence of layer tap names.

    Returns:
      the triples in forward order.
    """
    model = require_model(model, "descriptors", "taps")
    table = _layer_table(tuple(model.spec.taps), tuple(model.spec.tap_types))
    if not table:
        raise ValueError(f"model {model.spec.name!r} has fewer than two Conv/Dense taps, so it has "
                         f"no internal layer to describe (the last layer is excluded, §3.1)")
    if isinstance(layers, str):
        if layers == "all":
            return table
        if layers == "conv":
            return tuple(t for t in table if t[2] == "Conv")
        layers = (layers,)
    names = [model.resolve(n) for n in layers]
    known = {t[0]: t for t in table}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"layers {bad} are not descriptor layers of {model.spec.name!r}; choose "
                         f"among {list(known)} (Conv/Dense taps except the last), or 'all'/'conv'")
    return tuple(t for t in table if t[0] in set(names))


def _sizes(model: Model, table, hw) -> Tuple[int, ...]:
    shapes = model.tap_shapes(hw)
    return tuple(int(shapes[resp][-1]) for _, resp, _ in table)


# ---- descriptors (§3.1) -----------------------------------------------------------------------
def _descr_from_acts(acts: Mapping[str, Array], table) -> Array:
    parts = []
    for _, resp, _ in table:
        a = acts[resp]
        a = a.reshape(a.shape[0], -1, a.shape[-1])
        norm = jnp.sqrt(jnp.sum(a * a, axis=1))                         # L2 per channel
        parts.append(norm / jnp.maximum(jnp.sum(norm, axis=1, keepdims=True), 1e-12))  # L1/layer
    return jnp.concatenate(parts, axis=1)


def descriptors(model: Model, x: Array, *, layers: LayerSel = "all") -> Array:
    """Filter-wise image descriptors ``x_i`` (Oramas §3.1), one row per image.

    For every descriptor layer (see :func:`descriptor_layers`): the L2 norm of each channel's
    response over its spatial positions (a Dense unit's norm is its absolute value), the layer's
    vector L1-normalised (so that layers of different width weigh alike), then concatenated in
    forward order. An all-zero layer stays zero.

    Args:
      model: a zoo Model with taps.
      x: ``(N, H, W, C)`` normalised batch.
      layers: ``"all"``, ``"conv"`` or a sequence of layer names (static).

    Returns:
      ``(N, m)`` descriptors, ``m`` the total number of channels; the paper's ``X`` is its
      transpose.

    References:
      Oramas et al. 2019, §3.1.
    """
    table = descriptor_layers(model, layers)
    _, acts = model.forward(x, capture=[resp for _, resp, _ in table])
    return _descr_from_acts(acts, table)


# ---- fit (§3.1, Eq. 1) --------------------------------------------------------------------------
@struct.dataclass
class RelevantFilters:
    """The result of :func:`fit_relevant_filters`.

    Attributes:
      weights: ``W`` ``(m, C)``: row ``r`` is feature ``r`` (a (layer, filter) pair), column
        ``j`` class ``j``; the non-zero entries of column ``j`` are class ``j``'s relevant
        features.
      layers: the descriptor layers (static), in the order of the rows.
      taps: the response tap of each layer (static).
      sizes: the number of filters of each layer (static).
    """

    weights: Array
    layers: Tuple[str, ...] = struct.field(pytree_node=False)
    taps: Tuple[str, ...] = struct.field(pytree_node=False)
    sizes: Tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def layer_index(self) -> np.ndarray:
        """``(m,)`` index into :attr:`layers` of every feature row."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    @property
    def filter_index(self) -> np.ndarray:
        """``(m,)`` channel of every feature row within its layer."""
        return np.concatenate([np.arange(s) for s in self.sizes])

    def pair(self, row: int) -> Tuple[str, int]:
        """``(layer, filter)`` of feature row ``row``."""
        return self.layers[int(self.layer_index[row])], int(self.filter_index[row])

    def relevant(self, cls: Optional[int] = None, tol: float = 0.0) -> List[Tuple[str, int, float]]:
        """Relevant ``(layer, filter, weight)`` triples of class ``cls`` sorted by decreasing
        weight, or (``cls=None``) the union over the classes with the largest ``|weight|`` of
        each feature. A feature is relevant when ``|w| > tol``."""
        w = np.asarray(self.weights)
        col = w[:, cls] if cls is not None else w[np.arange(len(w)), np.argmax(np.abs(w), 1)]
        rows = np.nonzero(np.abs(col) > tol)[0]
        rows = rows[np.argsort(-col[rows], kind="stable")]
        return [(*self.pair(r), float(col[r])) for r in rows]

    def selection(self, tol: float = 0.0) -> Dict[str, np.ndarray]:
        """``{layer: filters}``: every feature relevant to at least one class (what Fig. 4
        ablates)."""
        rows = np.nonzero(np.any(np.abs(np.asarray(self.weights)) > tol, axis=1))[0]
        li, fi = self.layer_index[rows], self.filter_index[rows]
        return {name: fi[li == k] for k, name in enumerate(self.layers) if np.any(li == k)}


@functools.partial(jax.jit, static_argnames=("layers",))
def _descr_jit(model, x, layers):
    return descriptors(model, x, layers=layers)


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over ``x`` in batches of one fixed shape (the last one padded), so one compile."""
    n = len(x)
    bs = min(batch_size, n)
    out = []
    for i in range(0, n, bs):
        b = x[i:i + bs]
        pad = bs - len(b)
        if pad:
            b = np.concatenate([b, np.repeat(b[-1:], pad, 0)])
        out.append(np.asarray(fn(jnp.asarray(b)))[:bs - pad])
    return np.concatenate(out)


def _layers_key(layers: LayerSel):
    return layers if isinstance(layers, str) else tuple(layers)


def fit_relevant_filters(model: Model, images: Array, labels: Array, mu: float = 10.0, *,
                         layers: LayerSel = "all", num_classes: Optional[int] = None,
                         batch_size: int = 256, max_iter: int = 2000,
                         tol: float = 1e-5) -> RelevantFilters:
    """Identify the relevant (layer, filter) pairs of every class (Oramas §3.1, Eq. 1).

    Builds ``X`` ``(m, N)`` from :func:`descriptors` of the training images and the binary label
    matrix ``L`` ``(C, N)``, and solves the μ-Lasso ``min ||XᵀW - Lᵀ||_F²`` s.t.
    ``||w_j||_1 <= μ`` (:func:`mu_lasso`).

    Args:
      model: a trained zoo Model with taps.
      images: ``(N, H, W, C)`` normalised training images.
      labels: ``(N,)`` int classes.
      mu: the sparsity radius μ (the paper uses 10 for every data set).
      layers: ``"all"`` (the paper's *All*), ``"conv"`` (*OnlyConv*) or layer names.
      num_classes: C (default: the model's number of logits).
      batch_size: images per forward pass (the descriptors are computed in fixed-size batches).
      max_iter, tol: passed to :func:`mu_lasso`.

    Returns:
      a :class:`RelevantFilters`.

    References:
      Oramas et al. 2019, §3.1, Eq. 1.
    """
    model = require_model(model, "fit_relevant_filters", "taps")
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (N, H, W, C) and labels (N,); got {images.shape} and "
                         f"{labels.shape}")
    c = int(num_classes or model.spec.num_classes)
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in 0..{c - 1}; got {labels.min()}..{labels.max()}")
    key = _layers_key(layers)
    table = descriptor_layers(model, key)
    d = _batched(lambda b: _descr_jit(model, b, key), images, batch_size)
    lab = np.eye(c, dtype=np.float32)[labels]
    w = mu_lasso(jnp.asarray(d.T), jnp.asarray(lab.T), mu, max_iter=max_iter, tol=tol)
    return RelevantFilters(weights=w, layers=tuple(t[0] for t in table),
                           taps=tuple(t[1] for t in table),
                           sizes=_sizes(model, table, images.shape[1:3]))


# ---- visual feedback (§3.2–3.3) -----------------------------------------------------------------
@struct.dataclass
class Interpretation:
    """The result of :func:`explain_by_interpretation` (arrays over images ``N`` and ranks ``k``).

    Attributes:
      target: ``(N,)`` the predicted class ĵ.
      features: ``(N, k)`` feature rows of ``fit`` (``fit.pair(row)`` names them), strongest
        first.
      layer: ``(N, k)`` index into ``fit.layers``; filter: ``(N, k)`` channel within it.
      scores: ``(N, k)`` their weighted responses ``(w_ĵ ∘ x_i)``.
      heatmaps: ``(N, k, H, W)`` one heatmap per feature (unnormalised, ≥ 0).
    """

    target: Array
    features: Array
    layer: Array
    filter: Array
    scores: Array
    heatmaps: Array


def _filter_heatmaps(model: Model, x: Array, fit: RelevantFilters, layer: Array, filt: Array,
                     feedback: str) -> Array:
    """``(B, H, W)`` heatmap of filter ``filt[b]`` of layer ``layer[b]`` on image ``x[b]``."""
    taps = fit.taps
    if feedback == "upsampled":
        _, acts = model.forward(x, capture=list(taps))
        hw = x.shape[1:3]
        out = jnp.zeros(x.shape[:3], x.dtype)
        for k, t in enumerate(taps):
            a = acts[t]
            if a.ndim != 4:      # a Dense unit has no spatial map: not applicable (§4.2)
                continue
            ch = jnp.take_along_axis(a, filt[:, None, None, None].clip(0, a.shape[-1] - 1),
                                     axis=-1)[..., 0]
            up = jax.image.resize(ch, (ch.shape[0], *hw), "bilinear")
            out = jnp.where((layer == k)[:, None, None], jnp.maximum(up, 0.0), out)
        return out
    rules = guided_backprop_rules()
    if feedback == "stride_fix":
        rules = chain(rules, stride_fix_rules())

    def act(z):
        return model.forward(z, capture=list(taps), rules=rules, require=(L.ReLU, L.ReLU6))[1]

    acts, vjp = jax.vjp(act, x)
    cot = {}
    for k, t in enumerate(taps):
        a = acts[t]
        f = filt.clip(0, a.shape[-1] - 1)
        sel = (layer == k).astype(a.dtype).reshape((-1,) + (1,) * (a.ndim - 1))
        cot[t] = start_cotangent(a, f, "activation") * sel
    return heatmap_maxabs(vjp(cot)[0])


def explain_by_interpretation(model: Model, x: Array, fit: RelevantFilters, k: int = 3, *,
                              feedback: str = "stride_fix",
                              target: Optional[Array] = None) -> Interpretation:
    """Explain the prediction ĵ = F(I) by the top-k relevant filters of ĵ and their heatmaps.

    The weighted response ``r = w_ĵ ∘ x_i`` ranks the features; the ``k`` largest are visualised
    by DeconvNet with guided backpropagation started from the filter's response map
    (Springenberg et al. 2015 via Grün et al. 2016), with the stride fix (§3.3) by default. All
    ``N·k`` heatmaps come from one backward pass: the cotangent is the filter's map at its own
    layer and zero at every other descriptor layer.

    Args:
      model: a zoo Model with taps and ReLU layers.
      x: ``(N, H, W, C)`` normalised batch.
      fit: :func:`fit_relevant_filters`'s result for this model.
      k: how many features per image (static).
      feedback: ``"stride_fix"`` (Deconv+GB with the stride fix: the paper's method),
        ``"deconv_gb"`` (Deconv+GB) or ``"upsampled"`` (the filter's activation map, bilinearly
        upsampled; zero for a Dense feature, where it is not applicable) — static.
      target: ``(N,)`` classes to explain instead of the prediction (optional).

    Returns:
      an :class:`Interpretation`.

    References:
      Oramas et al. 2019, §3.2 (visual feedback), §3.3 (stride fix), §4.2–4.3 (the three
      feedbacks compared).
    """
    model = require_model(model, "explain_by_interpretation", "taps")
    if feedback not in FEEDBACKS:
        raise ValueError(f"feedback must be one of {FEEDBACKS}; got {feedback!r}")
    m = int(fit.weights.shape[0])
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m} (the number of features of fit); got {k}")
    table = descriptor_layers(model, fit.layers)
    if tuple(t[1] for t in table) != fit.taps:
        raise ValueError(f"fit was made for layers {fit.layers} with responses {fit.taps}, which "
                         f"this model does not have; refit it on this model")
    return _explain(model, x, fit, target, k, feedback)


@functools.partial(jax.jit, static_argnames=("k", "feedback"))
def _explain(model, x, fit, target, k, feedback):
    logits, acts = model.forward(x, capture=list(fit.taps))
    table = tuple(zip(fit.layers, fit.taps, ("",) * len(fit.taps)))
    desc = _descr_from_acts(acts, table)
    tgt = jnp.argmax(logits, axis=1) if target is None else jnp.asarray(target, jnp.int32)
    r = desc * fit.weights.T[tgt]                                   # (N, m): w_ĵ ∘ x_i
    scores, rows = jax.lax.top_k(r, k)
    layer = jnp.asarray(fit.layer_index, jnp.int32)[rows]
    filt = jnp.asarray(fit.filter_index, jnp.int32)[rows]
    n = x.shape[0]
    xk = jnp.repeat(x, k, axis=0)
    hm = _filter_heatmaps(model, xk, fit, layer.reshape(-1), filt.reshape(-1), feedback)
    return Interpretation(target=tgt, features=rows, layer=layer, filter=filt, scores=scores,
                          heatmaps=hm.reshape(n, k, *hm.shape[1:]))


# ---- ablation (§4.1, Fig. 4) --------------------------------------------------------------------
Selection = Union[Mapping[str, Sequence[int]], Iterable[Tuple[str, int]]]


def _keep_masks(model: Model, filters: Selection, hw) -> Dict[str, Array]:
    table = {t[0]: t for t in _layer_table(tuple(model.spec.taps), tuple(model.spec.tap_types))}
    if isinstance(filters, Mapping):
        pairs = [(ly, int(f)) for ly, fs in filters.items() for f in np.atleast_1d(fs)]
    else:
        pairs = [(ly, int(f)) for ly, f in filters]
    shapes = model.tap_shapes(hw)
    # a mask for every response tap (ones where nothing is ablated): one compile for any selection
    masks = {t[1]: np.ones(shapes[t[1]][-1], np.float32) for t in table.values()}
    for ly, f in pairs:
        name = model.resolve(ly)
        if name not in table:
            raise ValueError(f"{ly!r} is not a descriptor layer of {model.spec.name!r}; choose "
                             f"among {list(table)}")
        resp = table[name][1]
        c = shapes[resp][-1]
        if not 0 <= f < c:
            raise ValueError(f"filter {f} of layer {name!r} is out of range 0..{c - 1}")
        masks[resp][f] = 0.0
    return {t: jnp.asarray(v) for t, v in masks.items()}


@jax.jit
def _ablated_correct(model, x, y, masks):
    edits = {t: (lambda a, m=m: a * m) for t, m in masks.items()}
    logits, _ = model.forward(x, edits=edits)
    return jnp.argmax(logits, axis=1) == y


def ablate_filters(model: Model, x: Array, labels: Array, filters: Selection, *,
                   batch_size: int = 256) -> float:
    """Classification accuracy with the given filters set to zero (Oramas §4.1, Fig. 4).

    A filter is removed by zeroing its response map (see the module docstring) in every image;
    the rest of the network is unchanged.

    Args:
      model: a zoo Model with taps.
      x: ``(N, H, W, C)`` normalised test images.
      labels: ``(N,)`` int classes.
      filters: ``{layer: filter indices}`` (e.g. ``fit.selection()``) or ``(layer, filter)``
        pairs; an empty selection gives the original accuracy.
      batch_size: images per forward pass.

    Returns:
      the accuracy in [0, 1].

    References:
      Oramas et al. 2019, §4.1, Fig. 4.
    """
    model = require_model(model, "ablate_filters", "taps")
    x = np.asarray(x, np.float32)
    labels = np.asarray(labels)
    masks = _keep_masks(model, filters, x.shape[1:3])
    n = len(x)
    bs = min(batch_size, n)
    correct = 0
    for i in range(0, n, bs):
        xb, yb = x[i:i + bs], labels[i:i + bs]
        pad = bs - len(xb)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, 0)])
            yb = np.concatenate([yb, np.repeat(yb[-1:], pad, 0)])
        ok = np.asarray(_ablated_correct(model, jnp.asarray(xb), jnp.asarray(yb), masks))
        correct += int(ok[:bs - pad].sum())
    return correct / n


def random_filters(fit: RelevantFilters, key: Array, *, per_layer: bool = False,
                   tol: float = 0.0) -> Dict[str, np.ndarray]:
    """As many random filters as ``fit.selection(tol)`` holds, from the same layers (Fig. 4's
    *Random* baseline).

    Args:
      fit: the fit whose selection is matched.
      key: a PRNG key.
      per_layer: draw the same number from every layer as the selection does (a stricter
        control); else draw the total uniformly from all filters of ``fit.layers`` (the paper's
        "selected from the layers indicated in the sets").
      tol: relevance threshold of the selection.

    Returns:
      ``{layer: filters}``.
    """
    sel = fit.selection(tol)
    # a random subset is the k smallest of i.i.d. uniform keys: one draw of shape (m,) serves
    # both modes and every selection size (one compilation per m)
    u = np.asarray(jax.random.uniform(key, (int(sum(fit.sizes)),)))
    li, fi = fit.layer_index, fit.filter_index
    if per_layer:
        out = {}
        for ly, fs in sel.items():
            rows = np.nonzero(li == fit.layers.index(ly))[0]
            out[ly] = np.sort(fi[rows[np.argsort(u[rows], kind="stable")[:len(fs)]]])
        return out
    rows = np.argsort(u, kind="stable")[:sum(len(v) for v in sel.values())]
    return {name: np.sort(fi[rows][li[rows] == k]) for k, name in enumerate(fit.layers)
            if np.any(li[rows] == k)}


# ---- average images (§4.1, Fig. 5) --------------------------------------------------------------
def receptive_fields(model: Model) -> Dict[str, Tuple[int, int, float]]:
    """``{tap: (size, jump, start)}`` along one spatial axis for every tap of a sequential
    model: unit ``i`` of the tap sees input pixels centred at ``start + i·jump`` over ``size``
    pixels. ``size = 0`` marks a tap that sees the whole image (after global pooling / Dense).

    Only models built from :class:`xaijax.models.vgg.Sequential` items (the small CNN, VGG,
    AlexNet) are supported: for those the geometry follows from each layer's kernel, stride,
    padding and dilation (square kernels assumed)."""
    items = getattr(model.module, "items", None)
    if items is None:
        raise ValueError(f"receptive fields are computed for sequential models (a module with "
                         f"`items`); {model.spec.name!r} is not one")
    rf, jump, start, out = 1, 1.0, 0.0, {}
    whole = False
    for name, kind, kw in items:
        if kind in ("Conv", "MaxPool", "AvgPool") and not whole:
            k = kw.get("kernel_size", kw.get("window", 1))
            k = k[0] if isinstance(k, (tuple, list)) else k
            s = kw.get("strides") or (1 if kind == "Conv" else k)
            s = s[0] if isinstance(s, (tuple, list)) else s
            p = kw.get("padding", 0)
            if isinstance(p, str):
                raise ValueError(f"layer {name!r} has padding {p!r}; only integer padding is "
                                 f"supported by receptive_fields")
            p = p[0] if isinstance(p, (tuple, list)) else p
            p = p[0] if isinstance(p, (tuple, list)) else p
            d = kw.get("dilation", 1)
            d = d[0] if isinstance(d, (tuple, list)) else d
            ke = d * (k - 1) + 1
            rf += (ke - 1) * jump
            start += ((ke - 1) / 2 - p) * jump
            jump *= s
        elif kind in ("AdaptiveAvgPool", "Dense", "Flatten"):
            whole = True
        elif kind not in ("ReLU", "ReLU6", "BatchNorm", "Identity", "Dropout") and not whole:
            raise ValueError(f"receptive_fields does not know layer type {kind!r} ({name!r})")
        out[name] = (0, 0.0, 0.0) if whole else (int(rf), float(jump), float(start))
    return out


@functools.partial(jax.jit, static_argnames=("tap",))
def _max_responses(model, x, tap):
    a = model.forward(x, capture=[tap])[1][tap]
    if a.ndim == 2:
        return a, jnp.zeros(a.shape, jnp.int32)
    flat = a.reshape(a.shape[0], -1, a.shape[-1])
    return jnp.max(flat, axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("size",))
def _mean_crop(images, idx, ci, cj, size):
    """Mean of the ``size × size`` crops with top-left ``(ci, cj)`` of ``images[idx]`` (padded by
    ``size``), averaging only pixels inside the image."""
    h, w, c = images.shape[1:]
    pad = jnp.pad(images, ((0, 0), (size, size), (size, size), (0, 0)))
    valid = jnp.pad(jnp.ones((1, h, w, 1), images.dtype), ((0, 0), (size, size), (size, size),
                                                           (0, 0)))[0]

    def crop(i, a, b):
        im = jax.lax.dynamic_slice(pad[i], (a + size, b + size, 0), (size, size, c))
        v = jax.lax.dynamic_slice(valid, (a + size, b + size, 0), (size, size, 1))
        return im * v, v

    ims, vs = jax.vmap(crop)(idx, ci, cj)
    return jnp.sum(ims, 0) / jnp.maximum(jnp.sum(vs, 0), 1.0)


def average_images(model: Model, images: Array, fit: RelevantFilters, *,
                   inputs: Optional[Array] = None, top: int = 100, cls: Optional[int] = None,
                   tol: float = 0.0, batch_size: int = 256) -> Dict[Tuple[str, int], np.ndarray]:
    """Average image of every relevant filter: the mean of the receptive-field patches, centred
    on the filter's maximum response, of the ``top`` images where it responds most (Oramas
    §4.1, Fig. 5).

    Args:
      model: a zoo Model built from sequential items (see :func:`receptive_fields`).
      images: ``(N, H, W, 3)`` images to crop (e.g. in [0, 1] for display).
      fit: the relevant filters.
      inputs: the same images as the model takes them (normalised); default ``images``.
      top: patches per filter (the paper uses 100; fewer if ``N`` is smaller).
      cls: only the filters relevant to this class (default: all relevant filters).
      tol: relevance threshold.
      batch_size: images per forward pass.

    Returns:
      ``{(layer, filter): (s, s, 3) mean patch}``, ``s`` the layer's receptive field clipped to
      the image size (the whole image for a layer after global pooling or a Dense layer); pixels
      of a patch outside the image are left out of the mean.

    References:
      Oramas et al. 2019, §4.1 ("But... does it make sense?"), Fig. 5.
    """
    model = require_model(model, "average_images", "taps")
    images = np.asarray(images, np.float32)
    inputs = images if inputs is None else np.asarray(inputs, np.float32)
    if inputs.shape[:3] != images.shape[:3]:
        raise ValueError(f"inputs {inputs.shape} and images {images.shape} must be the same "
                         f"images (same N, H, W)")
    rfs = receptive_fields(model)
    feats = fit.relevant(cls, tol)
    h, w = images.shape[1:3]
    top = min(top, len(images))
    out = {}
    tap_of = dict(zip(fit.layers, fit.taps))
    cache = {}
    for layer, f, _ in feats:
        tap = tap_of[layer]
        if tap not in cache:
            fn = functools.partial(_max_responses, model, tap=tap)
            res = _batched(lambda b: np.stack(fn(b), axis=1), inputs, batch_size)   # (N, 2, C)
            cache[tap] = (res[:, 0], res[:, 1].astype(np.int64), model.tap_shapes((h, w))[tap])
        val, pos, shape = cache[tap]
        idx = np.argsort(-val[:, f], kind="stable")[:top]
        size, jump, start = rfs[tap]
        if size == 0 or len(shape) == 1:
            out[(layer, f)] = images[idx].mean(0)
            continue
        size = min(size, h, w)
        pi, pj = np.divmod(pos[idx, f], shape[1])
        ci = np.round(start + pi * jump - (size - 1) / 2).astype(np.int32)
        cj = np.round(start + pj * jump - (size - 1) / 2).astype(np.int32)
        out[(layer, f)] = np.asarray(_mean_crop(jnp.asarray(images), jnp.asarray(idx), jnp.asarray(ci),
                                                jnp.asarray(cj), size))
    return out
