"""``xj.evaluate``: several methods scored by several metrics on the same images and targets.

Each method runs through :func:`xaijax.methods.bind` (one compiled program per method and batch
shape), each metric is a function of :mod:`xaijax.metrics` (one compiled program per shape);
images go in batches of ``batch_size``, so memory is bounded by one batch whatever the number of
images. Every method explains the same class per image: ``"top1"`` is resolved once, before the
first method runs.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax import metrics as M
from xaijax.methods import base
from xaijax.models.base import Model, check_finite, check_input

Array = jax.Array

# metric name -> (function of (model, x, heatmap, target, masks, method, options, key), needs
# masks, higher is better)
_METRICS: Dict[str, Tuple[Callable[..., Array], bool, bool]] = {
    # the causal metrics return the whole CausalCurve: its AUC is the value, the curve is kept
    "deletion": (lambda m, x, h, t, g, *_: M.deletion(m, x, h, t), False, False),
    "insertion": (lambda m, x, h, t, g, *_: M.insertion(m, x, h, t), False, True),
    "drop": (lambda m, x, h, t, g, *_: M.drop_increase(m, x, h, t).drop, False, False),
    "increase": (lambda m, x, h, t, g, *_: M.drop_increase(m, x, h, t).increase, False, True),
    "average_drop": (lambda m, x, h, t, g, *_: M.average_drop(m, x, h, t).drop, False, False),
    "pointing_game": (lambda m, x, h, t, g, *_: M.pointing_game(h, g), True, True),
    "energy_pointing_game": (lambda m, x, h, t, g, *_: M.energy_pointing_game(h, g), True,
                             True),
    "miou": (lambda m, x, h, t, g, *_: M.miou(h, g), True, True),
    "bbox_score": (lambda m, x, h, t, g, *_: M.bbox_score(h, g), True, True),
    "max_sensitivity": (lambda m, x, h, t, g, name, opts, key: M.max_sensitivity(
        m, x, t, name, key=key, method_options=opts), False, False),
}
METRICS = tuple(_METRICS)
"""Metric names :func:`evaluate` accepts."""

MethodSpec = Union[str, Tuple[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class EvaluationTable:
    """Methods × metrics on the same images.

    Attributes:
      methods: row labels (method names; ``name[i]`` when a method is listed twice).
      metrics: column names.
      values: ``{(method, metric): (N,) per-image values}``.
      mean: ``(methods, metrics)`` mean over images.
      sem: ``(methods, metrics)`` standard error of the mean (``std / sqrt(N)``, ``ddof=1``;
        0 for one image).
      seconds: ``{method: seconds}`` explaining all images (compilation included).
      target: ``(N,)`` the class explained per image.
      higher_is_better: ``{metric: bool}``.
      curves: ``{(method, metric): CausalCurve}`` for ``deletion`` / ``insertion``: the
        per-image curves ``(N, steps + 1)`` (``xj.viz.curves_figure`` plots them).
    """

    methods: Tuple[str, ...]
    metrics: Tuple[str, ...]
    values: Dict[Tuple[str, str], np.ndarray]
    mean: np.ndarray
    sem: np.ndarray
    seconds: Dict[str, float]
    target: np.ndarray
    higher_is_better: Dict[str, bool]
    curves: Dict[Tuple[str, str], M.CausalCurve] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        n = len(self.target)
        head = ["method"] + [f"{m} {'↑' if self.higher_is_better[m] else '↓'}"
                             for m in self.metrics] + ["seconds"]
        rows = [[meth] + [f"{self.mean[i, j]:.4f} ± {self.sem[i, j]:.4f}"
                          for j in range(len(self.metrics))] + [_secs(self.seconds[meth])]
                for i, meth in enumerate(self.methods)]
        widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
        return "\n".join([f"{n} image(s); mean ± standard error over images", line(head)]
                         + [line(r) for r in rows])

    def to_csv(self, path: str) -> str:
        """Write one row per (method, metric, image) plus the summary rows (``image`` empty,
        ``statistic`` mean / sem), atomically (temp file + rename)."""
        import csv

        from xaijax.io.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method", "metric", "statistic", "image", "value"])
            for i, meth in enumerate(self.methods):
                for j, met in enumerate(self.metrics):
                    w.writerow([meth, met, "mean", "", f"{self.mean[i, j]:.6g}"])
                    w.writerow([meth, met, "sem", "", f"{self.sem[i, j]:.6g}"])
                    for k, v in enumerate(self.values[(meth, met)]):
                        w.writerow([meth, met, "value", k, f"{float(v):.6g}"])
        return path


def _secs(s: float) -> str:
    return "—" if np.isnan(s) else f"{s:.1f}"


def _methods(methods: Union[Sequence[MethodSpec], Mapping[str, Mapping[str, Any]]]
             ) -> Tuple[Tuple[str, str, Dict[str, Any]], ...]:
    """``(label, name, options)`` per method; every name and option checked up front."""
    items = list(methods.items()) if isinstance(methods, Mapping) else list(methods)
    if not items:
        raise ValueError("methods is empty; give method names, e.g. methods=['gradcam', "
                         "'rise'], or (name, options) pairs")
    out = []
    for it in items:
        name, opts = (it, {}) if isinstance(it, str) else (it[0], dict(it[1]))
        base.split_options(name, opts)  # unknown method or option: a clear error now
        out.append((name, opts))
    names = [nm for nm, _ in out]
    labels = [nm if names.count(nm) == 1 or not o else
              f"{nm}({', '.join(f'{k}={v!r}' for k, v in sorted(o.items()))})" for nm, o in out]
    dup = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dup:
        raise ValueError(f"method(s) {dup} are listed twice with the same options")
    return tuple((lb, nm, o) for lb, (nm, o) in zip(labels, out))


def _metrics(metrics: Sequence[str], masks: Any) -> Tuple[str, ...]:
    ms = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not ms:
        raise ValueError(f"metrics is empty; choose from {list(METRICS)}")
    bad = [m for m in ms if m not in _METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; choose from {list(METRICS)}")
    need = [m for m in ms if _METRICS[m][1]]
    if need and masks is None:
        raise ValueError(f"metric(s) {need} compare with ground truth: pass masks=(N, H, W) "
                         f"bool object masks (xj.metrics.boxes_to_masks(boxes, (H, W)) makes "
                         f"them from boxes)")
    return ms


def evaluate(model: Any, x: Array, target: base.Target = "top1", *,
             methods: Union[Sequence[MethodSpec], Mapping[str, Mapping[str, Any]]],
             metrics: Sequence[str] = ("deletion", "insertion"), masks: Optional[Any] = None,
             key: Optional[Array] = None, batch_size: int = 16,
             progress: Optional[bool] = None,
             heatmaps: Optional[Mapping[str, Any]] = None) -> EvaluationTable:
    """Score ``methods`` with ``metrics`` on the images ``x``.

    Args:
      model: an xaijax :class:`~xaijax.models.Model` or (for function-level methods and
        metrics) any JAX callable ``f(x) -> logits``.
      x: ``(N, H, W, C)`` float32 in the model's normalised space.
      target: int, ints ``(N,)``, ``"top1"`` (resolved once: every method explains the model's
        prediction) or a class name.
      methods: method names, ``(name, options)`` pairs, or ``{name: options}``; a stochastic
        method without its own ``key`` gets ``fold_in(key, i)`` for the ``i``-th method (the
        method splits it per image of a batch, so its draws depend on ``batch_size``, as a
        direct call's depend on the batch it is given).
      metrics: names from :data:`METRICS`: ``deletion``, ``insertion`` (AUC), ``drop``,
        ``increase`` (SISE's Drop % / Increase %), ``average_drop``, ``max_sensitivity``
        (default radius 0.2, 10 samples), and with ``masks`` ``pointing_game``,
        ``energy_pointing_game``, ``miou``, ``bbox_score``.
      masks: ``(N, H, W)`` bool object masks (the localisation metrics' ground truth).
      key: PRNG key for stochastic methods (default ``PRNGKey(0)``).
      batch_size: images per method call (memory is one batch).
      progress: show a progress bar (default: when stderr is a terminal), and the methods'
        own bars where they have a ``progress`` option (:mod:`xaijax.progress`).
      heatmaps: ``{method label: (N, H, W)}`` maps already computed for these images and
        targets (e.g. ``dict(zip(c.labels, c.heatmaps))`` of a :func:`xaijax.viz.compare`
        result); those methods are scored without running them again, and their ``seconds``
        are NaN.

    Returns:
      an :class:`EvaluationTable` (``print(table)``, ``table.to_csv(path)``).

    Examples:
      >>> import xaijax as xj, jax
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
      >>> t = xj.evaluate(m, x, methods=["gradient", "gradcam"], metrics=["deletion"])
      >>> t.mean.shape, t.methods
      ((2, 1), ('gradient', 'gradcam'))
    """
    rows = _methods(methods)
    ms = _metrics(metrics, masks)
    check_input(model if isinstance(model, Model) else None, x)
    check_finite(x)
    bs = base.check_positive_int(batch_size, "batch_size", "evaluate", "images per call")
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    t = base.target_array(model, x, target)
    if t is None:
        logits = np.concatenate([np.asarray(_predict(model, x[s:s + bs]))
                                 for s in range(0, n, bs)])
        t = np.argmax(logits, axis=-1).astype(np.int32)
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != x.shape[:3]:
            raise ValueError(f"masks must have shape {tuple(x.shape[:3])} (one (H, W) mask per "
                             f"image); got {masks.shape}")
    given = _given_heatmaps(heatmaps, rows, x.shape[:3])
    key = jax.random.PRNGKey(0) if key is None else key
    show = sys.stderr.isatty() if progress is None else progress
    values: Dict[Tuple[str, str], list] = {(r[0], m): [] for r in rows for m in ms}
    curves: Dict[Tuple[str, str], list] = {}
    seconds: Dict[str, float] = {}
    bar = _progress(len(rows) * -(-n // bs), show)
    for i, (label, name, opts) in enumerate(rows):
        opts = dict(opts)
        if show and "progress" in base.info(name).options:
            opts.setdefault("progress", True)  # the method's own bar (FGVis, RISE, SISE, LIME)
        if "key" in base.info(name).options and "key" not in opts:
            opts["key"] = jax.random.fold_in(key, i)
        static, traced = base.split_options(name, opts)
        fn = base.bind(name, **static)
        spent = 0.0
        for s in range(0, n, bs):
            xb, tb = x[s:s + bs], t[s:s + bs]
            t0 = time.perf_counter()
            if label in given:
                heat, spent = jnp.asarray(given[label][s:s + bs]), float("nan")
            else:
                heat = jax.block_until_ready(fn(model, xb, tb, **traced).heatmap)
                spent += time.perf_counter() - t0
            gb = None if masks is None else masks[s:s + bs]
            kb = jax.random.fold_in(jax.random.fold_in(key, 1000 + i), s)
            for m in ms:
                v = _METRICS[m][0](model, xb, heat, tb, gb, name, opts, kb)
                if isinstance(v, M.CausalCurve):
                    curves.setdefault((label, m), []).append(v)
                    v = v.auc
                values[(label, m)].append(np.asarray(v))
            bar(f"{label}")
        seconds[label] = spent
    bar(None)
    vals = {k: np.concatenate(v).astype(np.float64) for k, v in values.items()}
    labels = tuple(r[0] for r in rows)
    mean = np.array([[vals[(r, m)].mean() for m in ms] for r in labels])
    sem = np.array([[vals[(r, m)].std(ddof=1) / np.sqrt(n) if n > 1 else 0.0 for m in ms]
                    for r in labels])
    kept = {k: M.CausalCurve(np.concatenate([np.asarray(c.auc) for c in v]),
                             np.concatenate([np.asarray(c.curve) for c in v]),
                             np.asarray(v[0].fraction)) for k, v in curves.items()}
    return EvaluationTable(labels, ms, vals, mean, sem, seconds, t,
                           {m: _METRICS[m][2] for m in ms}, kept)


def _given_heatmaps(heatmaps, rows, shape) -> Dict[str, np.ndarray]:
    if heatmaps is None:
        return {}
    labels = [r[0] for r in rows]
    out = {}
    for k, h in heatmaps.items():
        if k not in labels:
            raise ValueError(f"heatmaps has maps for {k!r}, which is not one of the methods "
                             f"{labels}")
        h = np.asarray(h, np.float32)
        if h.shape != tuple(shape):
            raise ValueError(f"heatmaps[{k!r}] must have shape {tuple(shape)} (one (H, W) map "
                             f"per image); got {h.shape}")
        out[k] = h
    return out


def _predict(model, x):
    return model(x) if isinstance(model, Model) else jax.jit(base.logits_fn(model))(x)


def _progress(total: int, show: bool) -> Callable[[Optional[str]], None]:
    """``step(description)`` advances a tqdm bar (``step(None)`` closes it); silent when not
    shown (:func:`xaijax.progress.bar`)."""
    from xaijax.progress import bar

    return bar(total, show)
