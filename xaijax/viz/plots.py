"""Figures with matplotlib (an optional extra: ``pip install xaijax[viz]``).

matplotlib is imported inside each function, never when :mod:`xaijax` is imported, so the rest
of the library works without it. Figures are built as ``matplotlib.figure.Figure`` objects
(no pyplot, no global state, no display needed) and returned; :func:`save_figure` writes one
atomically, :func:`figure_image` renders it to an RGB array.

Colour maps: signed maps (LRP, DeepLIFT, IG, ×Input, occlusion, ...; the registry's
``signed``) in a diverging map centred at 0 (``RdBu_r``: red positive, blue negative, white 0)
with symmetric limits; unsigned maps in a perceptually uniform map (``viridis``), or any
matplotlib name, e.g. ``jet``, the peers' default. Each map is scaled on its own, to its 99.5th
percentile (:func:`display_map`; a non-negative map from 0), so a colour bar reads "fraction of
this map's maximum".
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional

import numpy as np

from xaijax.io.files import atomic_path
from xaijax.viz.overlay import normalize

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "viridis"


def _figure_cls():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # tests/viz: test_compare_runs_without_matplotlib_...
        raise ImportError("plotting needs matplotlib: pip install 'xaijax[viz]' (or pip "
                          "install matplotlib)") from e
    return Figure


def check_cmap(name: Optional[str]) -> None:
    """Fail early (before any method runs) when matplotlib is missing or ``name`` is not one of
    its colour maps."""
    _figure_cls()
    if name is None:
        return
    import matplotlib

    if name not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {name!r}; e.g. viridis, inferno, jet, RdBu_r "
                         f"(any of matplotlib.colormaps)")


def display_map(heatmap: np.ndarray, signed: bool) -> np.ndarray:
    """One ``(H, W)`` map scaled for display: [-1, 1] with 0 kept at 0 when signed (divided by
    the 99.5th percentile of ``|h|``); [0, 1] otherwise, from ``min(0, h.min())`` (0 for the usual
    non-negative map, so a colour says "this fraction of the map's maximum") to the 99.5th
    percentile."""
    if signed:
        return 2.0 * normalize(heatmap, signed=True) - 1.0
    h = np.asarray(heatmap, np.float64)
    if not np.isfinite(h).all():
        raise ValueError("heatmap contains NaN or inf")
    lo, hi = min(0.0, float(h.min())), float(np.percentile(h, 99.5))
    return np.clip((h - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(h)


def _imshow_map(ax, heatmap, signed, *, cmap, signed_cmap, photo=None, alpha=None):
    ax.set_xticks([])
    ax.set_yticks([])
    if photo is not None and alpha is not None:
        ax.imshow(np.asarray(photo).mean(-1), cmap="gray", vmin=0, vmax=1)
    lo = -1.0 if signed else 0.0
    return ax.imshow(display_map(heatmap, signed), cmap=signed_cmap if signed else cmap,
                     vmin=lo, vmax=1.0, alpha=alpha, interpolation="nearest")


def _colorbar(fig, mappable, ax, signed, low="0"):
    """A horizontal colour bar under the axes ``ax``, 80 % of its width."""
    cax = ax.inset_axes([0.1, -0.13, 0.8, 0.06])
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    if signed:
        cb.set_ticks([-1, 0, 1], labels=["−max", "0", "+max"])
    else:
        cb.set_ticks([0, 1], labels=[low, "max"])
    cb.ax.tick_params(labelsize=6, length=2, pad=1)
    return cb


def _short(text: str, width: int = 18) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def compare_figure(comparison, *, cmap: str = UNSIGNED_CMAP, signed_cmap: str = SIGNED_CMAP,
                   alpha: Optional[float] = None, cell: float = 2.0):
    """The comparison grid: rows are images, columns the photo then one column per method.

    Each map cell is titled with the method, the class explained with its probability, and
    the seconds the method took on that image (after compilation, which the footnote lists
    per method); each method column ends in its colour bar.

    Args:
      comparison: a :class:`xaijax.viz.compare.Comparison`.
      cmap: colour map of unsigned maps (``"viridis"``; ``"jet"`` as the peers).
      signed_cmap: diverging colour map of signed maps, centred at 0.
      alpha: blend the maps over the greyscale photo with this opacity (default: maps only).
      cell: inches per cell.

    Returns:
      a ``matplotlib.figure.Figure``.
    """
    c = comparison
    m, n = c.heatmaps.shape[:2]
    fig = _figure_cls()(figsize=(cell * (m + 1), cell * (n + 0.4) + 0.45),
                        layout="constrained")
    axes = fig.subplots(n, m + 1, squeeze=False)
    for j in range(n):
        ax = axes[j, 0]
        ax.imshow(c.photos[j])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{_short(c.image_names[j], 24)}\n{_short(c.class_names[j], 20)} "
                     f"{c.probability[j]:.2f}\n", fontsize=7)
        for i in range(m):
            ax = axes[j, i + 1]
            im = _imshow_map(ax, c.heatmaps[i, j], c.signed[i], cmap=cmap,
                             signed_cmap=signed_cmap, photo=c.photos[j], alpha=alpha)
            ax.set_title(f"{_short(c.labels[i], 24)}\n{_short(c.class_names[j], 20)} "
                         f"{c.probability[j]:.2f}\n{c.seconds[i, j]:.3g} s", fontsize=7)
            if j == n - 1:
                low = "0" if (c.heatmaps[i] >= 0).all() else "min"
                _colorbar(fig, im, ax, c.signed[i], low)
    compile_s = ", ".join(f"{lb} {s:.1f} s" for lb, s in zip(c.labels, c.compile_seconds))
    fig.supxlabel(f"seconds: per image, after compiling once (compile: {compile_s}); each map "
                  f"scaled to its own 99.5th percentile", fontsize=6)
    return fig


_FGVIS_PANELS = (("image", "a) input"), ("mask", "b) mask"), ("explanation", "c) explanation"),
                 ("complement_mask", "d) complementary mask"), ("evidence", "e) evidence"),
                 ("mean_mask", "f) mean mask"))


def fgvis_figure(model: Any, x: Any, ex, *, cell: float = 1.6, **kw):
    """FGVis' visualisation types (Wagner et al. 2019, Fig. 2 a–f) for each image: a) input,
    b) mask, c) explanation ``m·x``, and for the deletion / repression games d) complementary
    mask ``1 - m`` and e) evidence ``x·(1 - m)``; f) mean mask (the mask averaged over colours).

    Args:
      model, x, ex: as :func:`xaijax.viz.fgvis_images` (``ex`` a ``fgvis`` Explanation).
      cell: inches per panel; ``**kw`` go to :func:`fgvis_images` (``mean``, ``std``).

    Returns:
      a ``matplotlib.figure.Figure``, one row per image, one column per type.

    References:
      Wagner et al. 2019, Fig. 2 and §3 (the games, ``ẽ = x·(1 - m)``).
    """
    from xaijax.viz.fgvis import fgvis_images

    pics = fgvis_images(model, x, ex, **kw)
    panels = [(k, t) for k, t in _FGVIS_PANELS if k in pics]
    n = pics["image"].shape[0]
    fig = _figure_cls()(figsize=(cell * len(panels), cell * n + 0.3), layout="constrained")
    axes = fig.subplots(n, len(panels), squeeze=False)
    for j in range(n):
        for k, (name, title) in enumerate(panels):
            ax = axes[j, k]
            ax.imshow(pics[name][j], vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(title, fontsize=8)
    return fig


def sise_figure(model: Any, x: Any, ex, *, cmap: str = UNSIGNED_CMAP, cell: float = 1.6):
    """SISE's per-block visualization maps (Eq. 12, one per selected layer, shallow to deep)
    and their fusion (Fig. 5), next to the photo.

    Args:
      model: the Model explained (its normalisation recovers the photo).
      x: the normalised batch explained.
      ex: the ``sise`` Explanation (``extras["visualization_maps"]``, ``extras["layers"]``).
      cmap: colour map (maps are unsigned).

    Returns:
      a ``matplotlib.figure.Figure``: rows are images, columns the photo, each block's map
      (titled with its layer) and the fused map.

    References:
      Sattarzadeh et al. 2021, Methodology: Eq. 12 and the fusion module (Fig. 5); the
      paper's Fig. 2 shows the same layout.
    """
    from xaijax.models.base import images_from_normalised

    maps = np.asarray(ex.extras["visualization_maps"], np.float32)
    names = list(ex.extras["layers"].names)
    fused = np.asarray(ex.heatmap, np.float32)
    photos = images_from_normalised(model, x)
    n, b = maps.shape[:2]
    fig = _figure_cls()(figsize=(cell * (b + 2), cell * (n + 0.3) + 0.4), layout="constrained")
    axes = fig.subplots(n, b + 2, squeeze=False)
    for j in range(n):
        ax = axes[j, 0]
        ax.imshow(photos[j])
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_title("input\n", fontsize=8)
        for k in range(b + 1):
            ax = axes[j, k + 1]
            im = _imshow_map(ax, fused[j] if k == b else maps[j, k], False, cmap=cmap,
                             signed_cmap=SIGNED_CMAP)
            if j == 0:
                ax.set_title("fused\n" if k == b else f"block {k + 1}\n{_short(names[k], 14)}",
                             fontsize=8)
    _colorbar(fig, im, axes[-1, -1], False)
    return fig


def curves_figure(curves: Any, metric: str = "deletion", *, size=(4.0, 3.0)):
    """Deletion or insertion curves: the mean score of the explained class over images against
    the fraction of pixels removed (inserted), a band of ± one standard error, and the mean
    AUC in the legend.

    Args:
      curves: ``{label: CausalCurve}`` (``xj.metrics.deletion(...)`` results) or an
        :class:`~xaijax.evaluation.EvaluationTable` that kept its curves.
      metric: ``"deletion"`` or ``"insertion"`` (titles and axis labels; picks the table's
        curves).

    Returns:
      a ``matplotlib.figure.Figure``.

    References:
      Petsiuk et al. 2018 (RISE), the causal metrics; Wagner et al. 2019, §5.1, Table 2.
    """
    if metric not in ("deletion", "insertion"):
        raise ValueError(f"metric must be 'deletion' or 'insertion'; got {metric!r}")
    if hasattr(curves, "curves") and hasattr(curves, "methods"):
        curves = {m: curves.curves[(m, metric)] for m in curves.methods
                  if (m, metric) in curves.curves}
    if not curves:
        raise ValueError(f"no {metric} curves to plot (evaluate with metrics=[{metric!r}])")
    fig = _figure_cls()(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    for label, r in curves.items():
        y = np.asarray(r.curve, np.float64)
        frac = np.asarray(r.fraction, np.float64)
        mu = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mu)
        line, = ax.plot(frac, mu, lw=1.5,
                        label=f"{label} (AUC {float(np.mean(np.asarray(r.auc))):.3f})")
        ax.fill_between(frac, mu - se, mu + se, color=line.get_color(), alpha=0.2, lw=0)
    verb = "removed" if metric == "deletion" else "inserted"
    ax.set_xlabel(f"fraction of pixels {verb}")
    ax.set_ylabel("score of the explained class")
    ax.set_xlim(0, 1)
    ax.set_title(f"{metric} ({'lower' if metric == 'deletion' else 'higher'} AUC is better)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def maps_figure(comparison, index: int, *, cmap: str = UNSIGNED_CMAP,
                signed_cmap: str = SIGNED_CMAP, cell: float = 2.4):
    """One method's maps for every image of a comparison, larger, each with a colour bar in the
    map's own units (limits at the 99.5th percentile, symmetric about 0 for signed maps)."""
    c = comparison
    n = c.heatmaps.shape[1]
    signed = c.signed[index]
    fig = _figure_cls()(figsize=(cell * n, cell + 0.7), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for j, ax in enumerate(axes):
        h = np.asarray(c.heatmaps[index, j], np.float64)
        if signed:
            hi = float(np.percentile(np.abs(h), 99.5)) or 1.0
            lo = -hi
        else:
            lo, hi = min(0.0, float(h.min())), float(np.percentile(h, 99.5))
            hi = hi if hi > lo else lo + 1.0
        im = ax.imshow(h, cmap=signed_cmap if signed else cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{_short(c.image_names[j])}: {_short(c.class_names[j], 14)}", fontsize=7)
        cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.8, aspect=15, pad=0.02,
                          format="%.2g")
        cb.ax.locator_params(nbins=3)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle(c.labels[index], fontsize=9)
    return fig


def interpretation_figure(images: Any, interpretation: Any, average_images: Any = None,
                          masks: Any = None, *, fit: Any = None, class_names: Any = None,
                          cmap: str = "inferno", cell: float = 1.5):
    """The pictures of explanation by interpretation (Oramas et al. 2019): per image the photo,
    the ground-truth mask of the discriminative part if given, and the heatmap of each of its
    top-k relevant features, titled with (layer, filter) and the feature's score
    ``(w_ĵ ∘ x_i)``; below, the average image of each relevant filter given.

    Args:
      images: ``(N, H, W, 3)`` photos in [0, 1] (the images explained, unnormalised).
      interpretation: :func:`xaijax.interpretation.explain_by_interpretation`'s result for
        ``images``, or ``{label: result}`` (e.g. one per feedback of Fig. 7–9) for side-by-side
        groups of ``k`` columns, each titled with its label.
      average_images: :func:`xaijax.interpretation.average_images`'s ``{(layer, filter): patch}``
        (optional): one row of patches in the given order, titled ``layer/filter``.
      masks: ``(N, H, W)`` ground-truth masks (optional; shown in grey).
      fit: the :class:`~xaijax.interpretation.RelevantFilters` explained with; names the layers
        (without it a title reads ``L<index>/<filter>``).
      class_names: names of the classes (default ``class <j>``) for the predicted class ĵ.
      cmap: colour map of the heatmaps (non-negative; each scaled to its own 99.5th percentile,
        as :func:`display_map`).
      cell: inches per panel.

    Returns:
      a ``matplotlib.figure.Figure``; :func:`xaijax.viz.report`'s ``figures`` takes it.

    References:
      Oramas et al. 2019, §3.2 (visual feedback; Fig. 1, 7–9) and §4.1 (average images, Fig. 5).
    """
    Figure = _figure_cls()
    groups = dict(interpretation) if isinstance(interpretation, dict) else {"": interpretation}
    if not groups:
        raise ValueError("interpretation is empty: give an Interpretation or {label: one}")
    photos = np.asarray(images, np.float32)
    first = next(iter(groups.values()))
    n = int(np.asarray(first.target).shape[0])
    if photos.ndim != 4 or photos.shape[0] != n:
        raise ValueError(f"images must be the (N, H, W, 3) photos explained, N = {n}; got "
                         f"{photos.shape}")
    if masks is not None and np.asarray(masks).shape[:1] != (n,):
        raise ValueError(f"masks must be (N, H, W) with N = {n}; got {np.asarray(masks).shape}")
    for label, it in groups.items():
        if np.asarray(it.heatmaps).shape[0] != n:
            raise ValueError(f"interpretation {label!r} explains "
                             f"{np.asarray(it.heatmaps).shape[0]} images, not {n}")

    def name(layer: int, filt: int) -> str:
        ly = fit.layers[layer] if fit is not None else f"L{layer}"
        return f"{_short(str(ly), 10)}/{filt}"

    lead = 1 + (masks is not None)
    ks = [int(np.asarray(it.heatmaps).shape[1]) for it in groups.values()]
    cols = lead + sum(ks)
    avg = list((average_images or {}).items())
    top_h = cell * n + 0.35 * n + 0.2
    fig = Figure(figsize=(cell * cols, top_h + (cell + 0.5 if avg else 0.0)),
                 layout="constrained")
    top, bottom = (fig.subfigures(2, 1, height_ratios=[top_h, cell + 0.5]) if avg
                   else (fig, None))
    axes = top.subplots(n, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(n):
        tgt = int(np.asarray(first.target)[j])
        axes[j, 0].imshow(np.clip(photos[j], 0, 1), interpolation="nearest")
        cname = class_names[tgt] if class_names is not None else f"class {tgt}"
        axes[j, 0].set_title(f"ĵ = {_short(str(cname), 14)}", fontsize=7)
        if masks is not None:
            axes[j, 1].imshow(np.asarray(masks[j], np.float32), cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
            axes[j, 1].set_title("ground truth", fontsize=7)
        col = lead
        for label, it in groups.items():
            hm = np.asarray(it.heatmaps[j], np.float32)
            lay, flt, sc = (np.asarray(a)[j] for a in (it.layer, it.filter, it.scores))
            for r in range(hm.shape[0]):
                ax = axes[j, col]
                im = ax.imshow(display_map(hm[r], False), cmap=cmap, vmin=0, vmax=1,
                               interpolation="nearest")
                head = f"{_short(label, 12)} #{r + 1}\n" if label else f"#{r + 1} "
                ax.set_title(f"{head}{name(int(lay[r]), int(flt[r]))}\nscore {float(sc[r]):.3g}",
                             fontsize=6)
                col += 1
    if sum(ks):
        top.colorbar(im, ax=axes[-1, lead:], location="bottom", shrink=0.5, aspect=30,
                     pad=0.01).ax.tick_params(labelsize=6)
    if avg:
        bax = bottom.subplots(1, len(avg), squeeze=False)[0]
        for ax, ((ly, f), patch) in zip(bax, avg):
            ax.imshow(np.clip(np.asarray(patch, np.float32), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_short(str(ly), 10)}/{f}", fontsize=6)
        bottom.suptitle("average images of relevant filters", fontsize=8)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_image(fig, dpi: int = 100) -> np.ndarray:
    """A figure rendered to an ``(H, W, 3)`` float32 RGB array in [0, 1]."""
    from PIL import Image

    rgb = Image.open(io.BytesIO(figure_png(fig, dpi))).convert("RGB")
    return np.asarray(rgb, np.float32) / 255.0


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Write a figure atomically (temp file + rename); the format follows the extension."""
    ext = os.path.splitext(path)[1].lower() or ".png"
    kw = {"pil_kwargs": {"optimize": True}} if ext == ".png" else {}  # smaller files
    with atomic_path(path, ext) as tmp:
        fig.savefig(tmp, format=ext[1:], dpi=dpi, **kw)
    return path
