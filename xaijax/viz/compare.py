"""``xj.viz.compare``: several methods on the same images, timed, for one comparison grid.

The methods run here (numpy/JAX only); drawing the grid needs matplotlib (``pip install
xaijax[viz]``) and happens in :meth:`Comparison.figure`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.methods import base
from xaijax.models.base import Model, images_from_normalised

Array = jax.Array
MethodSpec = Union[str, Tuple[str, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """Methods × images: the maps, the class each explains, its probability and the time.

    Attributes:
      labels: ``(M,)`` column labels (method names; with options where a method is listed
        twice).
      methods: ``(M,)`` registry names.
      signed: ``(M,)`` whether each method's maps keep a sign (the registry's ``signed``).
      photos: ``(N, H, W, 3)`` the images in [0, 1] (the model's input, normalisation undone).
      heatmaps: ``(M, N, H, W)`` float32 maps.
      target: ``(N,)`` the class explained (the same for every method).
      class_names: ``(N,)`` names of those classes (``"class K"`` without labels).
      probability: ``(N,)`` the model's softmax probability of ``target``.
      seconds: ``(M, N)`` seconds each method took on each image, after compilation.
      compile_seconds: ``(M,)`` seconds spent tracing and compiling each method once.
      image_names: ``(N,)`` names of the images (row labels).
      explanations: ``[method][image]`` the one-image :class:`~xaijax.methods.Explanation`
        of each cell, extras included (e.g. for :func:`xaijax.viz.sise_figure` /
        :func:`xaijax.viz.fgvis_figure` with ``x[j:j + 1]``).
    """

    labels: Tuple[str, ...]
    methods: Tuple[str, ...]
    signed: Tuple[bool, ...]
    photos: np.ndarray
    heatmaps: np.ndarray
    target: np.ndarray
    class_names: Tuple[str, ...]
    probability: np.ndarray
    seconds: np.ndarray
    compile_seconds: np.ndarray
    image_names: Tuple[str, ...]
    explanations: Tuple[Tuple[Any, ...], ...] = ()

    def figure(self, **kw):
        """The grid as a matplotlib Figure; options as :func:`xaijax.viz.plots.compare_figure`
        (``cmap``, ``signed_cmap``, ``alpha``, ``cell``)."""
        from xaijax.viz.plots import compare_figure

        return compare_figure(self, **kw)

    def image(self, **kw) -> np.ndarray:
        """The grid as an ``(H, W, 3)`` float32 RGB array in [0, 1]."""
        from xaijax.viz.plots import figure_image

        return figure_image(self.figure(**kw))

    def save(self, path: str, **kw) -> str:
        """Write the grid as PNG (or any format matplotlib writes) atomically."""
        from xaijax.viz.plots import save_figure

        return save_figure(self.figure(**kw), path)

    def _repr_png_(self) -> bytes:  # a notebook shows the grid
        from xaijax.viz.plots import figure_png

        return figure_png(self.figure())


def _distribute(rows, options: Mapping[str, Any]):
    """Options given once go to every listed method that has them."""
    out = []
    for label, name, opts in rows:
        opts = dict(opts)
        for k, v in options.items():
            if k in base.info(name).options:
                opts.setdefault(k, v)
        out.append((label, name, opts))
    unused = sorted(k for k in options if not any(k in base.info(n).options for _, n, _ in rows))
    if unused:
        raise TypeError(f"option(s) {unused} belong to none of the methods "
                        f"{[n for _, n, _ in rows]}; pass per-method options as (name, "
                        f"{{option: value}}) pairs in methods=")
    return out


def as_batch(model: Model, images: Any) -> Array:
    """The normalised batch: a float array is taken as already normalised (the library's
    convention); names of bundled photos, file paths, PIL images and uint8 arrays are
    preprocessed for ``model``."""
    from xaijax.models.base import preprocess

    if isinstance(images, str):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, str) for i in images):
        from PIL import Image

        from xaijax.data.images import SAMPLE_NAMES, image_path

        images = [Image.open(image_path(i) if i in SAMPLE_NAMES else i).convert("RGB")
                  for i in images]
    if hasattr(images, "dtype") and np.dtype(images.dtype).kind == "f":
        return jnp.asarray(images, jnp.float32)
    return preprocess(model, images)


def class_names(model: Any, target: np.ndarray) -> Tuple[str, ...]:
    """ImageNet names for an ImageNet model, ``"class K"`` otherwise."""
    if isinstance(model, Model) and getattr(model.spec, "labels", None) == "imagenet":
        from xaijax.models.labels import class_name

        return tuple(class_name(int(t)) for t in target)
    return tuple(f"class {int(t)}" for t in target)


def compare(model: Model, images: Any,
            methods: Union[Sequence[MethodSpec], Mapping[str, Mapping[str, Any]]] = (
                "gradient", "gradcam"),
            target: base.Target = "top1", *, key: Optional[Array] = None,
            image_names: Optional[Sequence[str]] = None, progress: Optional[bool] = None,
            **options) -> Comparison:
    """Run several methods on the same images and keep what a comparison grid shows.

    Every method explains the same class per image (``"top1"`` is resolved once). Each method
    is compiled once for one image (the compile time is kept apart), then run image by image,
    so each cell's seconds are that method's time on that image (the first image's also hold
    the program's one-off start-up, a few milliseconds).

    Args:
      model: an xaijax :class:`~xaijax.models.Model` (its normalisation gives the photos).
      images: the normalised ``(N, H, W, 3)`` float batch, or photos to preprocess: names of
        bundled photos or file paths, PIL images, uint8 arrays.
      methods: method names, ``(name, options)`` pairs or ``{name: options}`` (as
        :func:`xaijax.evaluate`).
      target: int, ints ``(N,)``, ``"top1"`` or a class name.
      key: PRNG key of the stochastic methods (default ``PRNGKey(0)``); method ``i`` gets
        ``fold_in(key, i)``, image ``j`` ``fold_in`` of that with ``j``.
      image_names: row labels (default ``image 0``, ...; the file names or photo names when
        ``images`` are names).
      progress: show a progress bar (default: when stderr is a terminal), and the methods'
        own bars where they have a ``progress`` option (:mod:`xaijax.progress`).
      **options: options given to every listed method that has them (e.g. ``steps=16``).

    Returns:
      a :class:`Comparison`; ``.figure()`` draws the grid (matplotlib), ``.save(path)``
      writes it.

    Examples:
      >>> import xaijax as xj, jax
      >>> m = xj.models.get("small_cnn", num_classes=10)
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
      >>> c = xj.viz.compare(m, x, methods=["input_x_gradient"])
      >>> c.heatmaps.shape, c.signed, c.seconds.shape
      ((1, 2, 32, 32), (True,), (1, 2))
    """
    from xaijax.evaluation import _methods, _progress

    if not isinstance(model, Model):
        raise TypeError(f"compare needs an xaijax Model (its normalisation recovers the "
                        f"photos); got {type(model).__name__} — wrap a linen module with "
                        f"xj.models.wrap(module, variables, ...)")
    names = None
    if isinstance(images, str) or (isinstance(images, (list, tuple)) and images
                                   and all(isinstance(i, str) for i in images)):
        names = [os.path.basename(n) for n in ([images] if isinstance(images, str)
                                               else images)]
    rows = _distribute(_methods(methods), options)
    x = as_batch(model, images)
    n = x.shape[0]
    names = list(image_names) if image_names is not None else (
        names or [f"image {i}" for i in range(n)])
    if len(names) != n:
        raise ValueError(f"image_names has {len(names)} names for {n} images")
    probs = np.asarray(jax.nn.softmax(model(x), axis=-1))
    t = base.target_array(model, x, target)
    if t is None:
        t = np.argmax(probs, axis=-1).astype(np.int32)
    key = jax.random.PRNGKey(0) if key is None else key
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress(len(rows) * n, show)
    heat = np.zeros((len(rows), n) + tuple(x.shape[1:3]), np.float32)
    seconds = np.zeros((len(rows), n))
    compile_s = np.zeros(len(rows))
    kept = []
    for i, (label, name, opts) in enumerate(rows):
        opts = dict(opts)
        if show and "progress" in base.info(name).options:
            opts.setdefault("progress", True)  # the method's own bar (FGVis, RISE, SISE, LIME)
        stochastic = "key" in base.info(name).options and "key" not in opts
        static, traced = base.split_options(name, opts)
        bm = base.bind(name, **static)
        program = None
        kept.append([])
        for j in range(n):
            if stochastic:
                traced["key"] = jax.random.fold_in(jax.random.fold_in(key, i), j)
            xj_, tj, _, tr = bm.prepare(model, x[j:j + 1], t[j:j + 1], **traced)
            if program is None:
                t0 = time.perf_counter()
                program = jax.jit(bm.body, static_argnums=(3,)).lower(
                    model, xj_, tj, False, tr).compile()
                compile_s[i] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ex = jax.block_until_ready(program(model, xj_, tj, tr))
            seconds[i, j] = time.perf_counter() - t0
            heat[i, j] = np.asarray(ex.heatmap[0], np.float32)
            kept[-1].append(ex)
            bar(label)
    bar(None)
    return Comparison(
        labels=tuple(r[0] for r in rows), methods=tuple(r[1] for r in rows),
        signed=tuple(bool(base.info(r[1]).signed) for r in rows),
        photos=images_from_normalised(model, x), heatmaps=heat, target=t,
        class_names=class_names(model, t),
        probability=probs[np.arange(n), t].astype(np.float64), seconds=seconds,
        compile_seconds=compile_s, image_names=tuple(str(s) for s in names),
        explanations=tuple(tuple(k) for k in kept))
