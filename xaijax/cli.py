"""The ``xaijax`` command.

``xaijax explain IMAGE... --model NAME [--weights FILE] --method NAME [--target K|top1]
--out FILE.png`` writes an overlay of the explanation over each photo (several images go into
one grid). IMAGE is a file path or the name of a bundled photo (``chelsea``, ``coffee``, ...).
``xaijax explain DIR_OR_GLOB --out OUT_DIR ...`` is a resumable data-set run
(:func:`xaijax.run_dataset`): OUT_DIR/heatmaps.zarr (the heatmaps), OUT_DIR/targets.zarr (the
class each heatmap explains, -1 for failed images) and OUT_DIR/manifest.json.
``xaijax evaluate IMAGE_OR_DIR... --methods a,b --metrics deletion,insertion,pointing_game
--boxes boxes.json [--csv out.csv]`` scores methods with metrics and prints the table.
``xaijax compare IMAGE... --methods a,b,c --out grid.png [--html report.html]`` draws the methods
side by side; ``xaijax report IMAGE... --html report.html`` writes one self-contained HTML file
with the grid, each method's maps, the metric table and the curves.
``xaijax methods`` and ``xaijax models`` list what is available; ``xaijax convert`` converts a
checkpoint. ``xaijax train --data single6|double12|digits --arch small_cnn|small_vgg --out DIR``
trains a small classifier (:mod:`xaijax.train`), prints its progress and held-out accuracy and
saves it with orbax.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_opts(items: Sequence[str]) -> Dict[str, Any]:
    opts = {}
    for it in items or ():
        if "=" not in it:
            raise SystemExit(f"xaijax: --opt expects KEY=VALUE; got {it!r}")
        k, v = it.split("=", 1)
        opts[k.strip()] = _parse_value(v.strip())
    return opts


def _load_images(paths: Sequence[str]) -> List[Any]:
    from PIL import Image

    from xaijax.data.images import SAMPLE_NAMES, image_path

    out = []
    for p in paths:
        if os.path.exists(p):
            try:
                out.append(Image.open(p).convert("RGB"))
            except OSError as e:
                raise SystemExit(f"xaijax: cannot read image {p!r}: {e}")
        elif p in SAMPLE_NAMES:
            out.append(Image.open(image_path(p)).convert("RGB"))
        else:
            raise SystemExit(f"xaijax: no such image file {p!r} (bundled photos: "
                             f"{', '.join(SAMPLE_NAMES)})")
    return out


def _target(text: str):
    if text == "top1":
        return "top1"
    v = _parse_value(text)
    if isinstance(v, int):
        return v
    return text  # a class name


def cmd_explain(args) -> int:
    import jax
    import numpy as np

    import xaijax as xj

    t0 = time.time()
    if args.distributed:
        jax.distributed.initialize()
    if _is_dataset_input(args.images):
        return _explain_dataset(args, t0)
    model = _load_model(args)
    images = _load_images(args.images)
    x = xj.models.preprocess(model, images)
    opts = _parse_opts(args.opt)
    info = xj.methods.info(args.method)
    if "key" in info.options and "key" not in opts:
        opts["key"] = jax.random.PRNGKey(args.seed)
    show = not args.quiet and sys.stderr.isatty()
    if "progress" in info.options and "progress" not in opts:
        opts["progress"] = show  # the method's own bar (FGVis steps, RISE/SISE/LIME chunks)
    if "tap" in opts and isinstance(opts["tap"], (int, float)):
        opts["tap"] = str(opts["tap"])
    static, traced = xj.methods.split_options(args.method, opts)
    fn = xj.methods.bind(args.method, **static)
    target = _target(args.target)
    heatmaps, targets = [], []
    bs = max(1, args.batch_size)
    try:
        from tqdm import tqdm
        it = tqdm(range(0, x.shape[0], bs), desc=f"{args.method}", unit="batch",
                  disable=x.shape[0] <= bs or not show)
    except ImportError:  # pragma: no cover
        it = range(0, x.shape[0], bs)
    for s in it:
        ex = fn(model, x[s:s + bs], target, dtype=args.dtype, **traced)
        heatmaps.append(np.asarray(ex.heatmap))
        targets.append(np.asarray(ex.target))
    heat = np.concatenate(heatmaps)
    tgt = np.concatenate(targets)
    photos = xj.models.images_from_normalised(model, x)
    names = _class_names(model, tgt)
    panels = [xj.viz.caption(xj.viz.overlay(photos[i], heat[i], alpha=args.alpha,
                                            cmap=args.cmap),
                             f"{args.method}: {names[i] or 'class'} ({int(tgt[i])})")
              for i in range(len(images))]
    img = panels[0] if len(panels) == 1 else xj.viz.grid(panels, cols=min(4, len(panels)))
    xj.viz.save_image(args.out, img)
    for p, t, n in zip(args.images, tgt, names):
        print(f"{p}: target {int(t)}{' (' + n + ')' if n else ''}")
    print(f"wrote {args.out} ({args.method}, {args.model}, {time.time() - t0:.1f}s)")
    return 0


def _is_dataset_input(images: Sequence[str]) -> bool:
    """One directory or one glob pattern (not an existing file) is a data-set run."""
    from xaijax.dataset import is_glob

    return len(images) == 1 and (os.path.isdir(images[0]) or (
        is_glob(images[0]) and not os.path.exists(images[0])))


def _explain_dataset(args, t0: float) -> int:
    """``xaijax explain DIR_OR_GLOB --out OUT_DIR``: :func:`xaijax.run_dataset`."""
    import jax

    import xaijax as xj

    if os.path.splitext(args.out)[1].lower() in (".png", ".jpg", ".jpeg"):
        raise SystemExit(f"xaijax: a directory or glob input is a data-set run: --out names "
                         f"the output folder (heatmaps.zarr, targets.zarr, manifest.json), "
                         f"not an image; got {args.out!r}")
    model = _load_model(args)
    opts = _parse_opts(args.opt)
    info = xj.methods.info(args.method)
    if "key" in info.options and "key" not in opts:
        opts["key"] = jax.random.PRNGKey(args.seed)
    target = _target(args.target)
    try:
        r = xj.run_dataset(model, args.images[0], method=args.method, out=args.out,
                           batch_size=max(1, args.batch_size), target=target,
                           mesh=args.mesh, dtype=args.dtype, overlays=args.overlays,
                           progress=False if args.quiet else None, **opts)  # None: a terminal
    except OSError as e:
        raise SystemExit(f"xaijax: {e}")
    for p, why in r.failed.items():
        print(f"failed: {p}: {why}")
    print(f"{len(r.done)} of {len(r.images)} image(s) done ({len(r.computed)} computed now, "
          f"{len(r.failed)} failed); wrote {os.path.join(args.out, 'heatmaps.zarr')}, "
          f"targets.zarr and manifest.json ({args.method}, {args.model}, "
          f"{time.time() - t0:.1f}s)")
    return 0


def _class_names(model, targets) -> List[str]:
    if getattr(model.spec, "labels", None) != "imagenet":
        return [""] * len(targets)
    try:
        from xaijax.models.labels import class_name
    except ImportError:  # labels not available
        return [""] * len(targets)
    return [class_name(int(t)) for t in targets]


def _expand(inputs: Sequence[str]) -> List[str]:
    """Image arguments with every directory replaced by its image files (sorted)."""
    from xaijax.dataset import list_images

    out: List[str] = []
    for p in inputs:
        if os.path.isdir(p):
            try:
                out.extend(list_images(p))
            except ValueError as e:
                raise SystemExit(f"xaijax: {e}")
        else:
            out.append(p)
    return out


def _load_model(args):
    import xaijax as xj

    if args.weights and args.random:
        raise SystemExit("xaijax: give --weights FILE or --random, not both")
    pretrained = not args.weights and not args.random
    try:
        return xj.models.get(args.model, pretrained=pretrained, weights=args.weights,
                             seed=args.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"xaijax: {e}")


def _box_masks(path: Optional[str], names: Sequence[str], images, model, resize: str):
    """Object masks ``(N, H, W)`` at the model's input. Boxes come from a JSON file ``{image:
    [[x0, y0, x1, y1], ...]}`` (pixels of the original image, half-open; keys are the arguments
    as given, or their file names), or for a bundled photo without an entry from the shipped
    hand-drawn boxes (:func:`xaijax.data.object_boxes`); they are mapped through the same
    resize/crop as the photo (:func:`xaijax.data.preprocess_boxes`)."""
    import json

    import numpy as np

    import xaijax as xj
    from xaijax.data.images import SAMPLE_NAMES

    table: Dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as f:
                table = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"xaijax: cannot read boxes file {path!r}: {e}")
        if not isinstance(table, dict):
            raise SystemExit(f"xaijax: {path!r} must hold a JSON object {{image: [[x0, y0, x1, "
                             f"y1], ...]}}")
    masks = []
    size = tuple(model.spec.input_size)
    for name, im in zip(names, images):
        key = next((k for k in (name, os.path.basename(name)) if k in table), None)
        if key is not None:
            boxes = np.asarray(table[key], np.float32).reshape(-1, 4) if len(table[key]) else \
                np.zeros((0, 4), np.float32)
        elif name in SAMPLE_NAMES and not os.path.exists(name):
            boxes = xj.data.object_boxes(name).boxes
        else:
            where = f"{path!r} has no boxes for image {name!r}" if path else \
                f"no boxes for image {name!r} (boxes ship for the bundled photos only)"
            raise SystemExit(f"xaijax: {where}; pass --boxes FILE with {{image: [[x0, y0, x1, "
                             f"y1], ...]}}")
        w, h = im.size
        b = xj.data.preprocess_boxes(None, boxes, (h, w), size=size, resize=resize)
        m = np.asarray(xj.metrics.boxes_to_masks(b, size)).any(axis=0) if len(b) else \
            np.zeros(size, bool)
        if not m.any():
            raise SystemExit(f"xaijax: the boxes of {name!r} cover no pixel of the model's "
                             f"{size[0]}x{size[1]} input (after --resize {resize})")
        masks.append(m)
    return np.stack(masks)


def _names(text: str) -> List[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _method_options(args) -> Dict[str, Dict[str, Any]]:
    """``{method: options}`` from ``--methods`` and ``--opt [METHOD.]KEY=VALUE``: without
    ``METHOD.`` an option goes to every listed method that has it."""
    import xaijax as xj

    methods = _names(args.methods)
    opts: Dict[str, Dict[str, Any]] = {m: {} for m in methods}
    for k, v in _parse_opts(args.opt).items():
        meth, _, key = k.rpartition(".")
        if meth and meth not in opts:
            raise SystemExit(f"xaijax: --opt {k}: {meth!r} is not one of --methods {methods}")
        targets = [meth] if meth else [m for m in methods if key in xj.methods.info(m).options]
        if not targets:
            raise SystemExit(f"xaijax: --opt {k}: none of {methods} has an option {key!r}")
        for t in targets:
            opts[t][key] = v
    return opts


def cmd_evaluate(args) -> int:
    import jax

    import xaijax as xj

    if args.html:
        xj.viz.plots.check_cmap(None)  # matplotlib is there, before any work
    model = _load_model(args)
    names = _expand(args.images)
    images = _load_images(names)
    x = xj.models.preprocess(model, images, resize=args.resize)
    opts = _method_options(args)
    metrics = _names(args.metrics)
    local = {"pointing_game", "energy_pointing_game", "miou", "bbox_score"}
    masks = _box_masks(args.boxes, names, images, model, args.resize) if args.boxes or (
        local & set(metrics)) else None
    table = xj.evaluate(model, x, _target(args.target), methods=list(opts.items()),
                        metrics=metrics, masks=masks, key=jax.random.PRNGKey(args.seed),
                        batch_size=max(1, args.batch_size),
                        progress=None if not args.quiet else False)
    print(f"{args.model}, {len(names)} image(s)")
    print(table)
    if args.csv:
        table.to_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.html:
        xj.viz.report(table=table, title=f"xaijax evaluate: {args.model}",
                      model_name=args.model,
                      notes=[f"images: {', '.join(names)}"]).save(args.html)
        print(f"wrote {args.html}")
    return 0


def _compare(args, names: List[str]):
    """The Comparison of ``--methods`` on the images (shared by compare and report)."""
    import jax

    import xaijax as xj

    xj.viz.plots.check_cmap(args.cmap)  # matplotlib and the colour map, before any work
    model = _load_model(args)
    images = _load_images(names)
    x = xj.models.preprocess(model, images, resize=args.resize)
    comp = xj.viz.compare(model, x, list(_method_options(args).items()), _target(args.target),
                          key=jax.random.PRNGKey(args.seed),
                          image_names=[os.path.basename(n) for n in names],
                          progress=False if args.quiet else None)
    return model, images, x, comp


def _print_comparison(comp) -> None:
    for j, name in enumerate(comp.image_names):
        cells = ", ".join(f"{lb} {comp.seconds[i, j]:.3g}s" for i, lb in enumerate(comp.labels))
        print(f"{name}: {comp.class_names[j]} ({int(comp.target[j])}, p={comp.probability[j]:.3f})"
              f"; {cells}")
    print("compile: " + ", ".join(f"{lb} {s:.1f}s" for lb, s in
                                  zip(comp.labels, comp.compile_seconds)))


def _extra_figures(model, x, comp) -> Dict[str, Any]:
    """The papers' own pictures for the methods that have them: FGVis' Fig. 2 types and SISE's
    per-block maps."""
    import xaijax as xj

    out: Dict[str, Any] = {}
    for i, name in enumerate(comp.methods):
        for j, ex in enumerate(comp.explanations[i]):
            where = f"{comp.labels[i]} on {comp.image_names[j]}"
            if name == "fgvis":
                out[f"FGVis visualisation types (Fig. 2): {where}"] = xj.viz.fgvis_figure(
                    model, x[j:j + 1], ex)
            elif name == "sise":
                out[f"SISE per-block maps and fusion: {where}"] = xj.viz.sise_figure(
                    model, x[j:j + 1], ex)
    return out


def _plot_kw(args) -> Dict[str, Any]:
    return {k: v for k, v in (("cmap", args.cmap), ("alpha", args.alpha)) if v is not None}


def cmd_compare(args) -> int:
    import xaijax as xj

    if not args.out and not args.html:
        raise SystemExit("xaijax: compare writes --out GRID.png and/or --html REPORT.html; "
                         "give at least one")
    names = _expand(args.images)
    model, _, x, comp = _compare(args, names)
    _print_comparison(comp)
    if args.out:
        comp.save(args.out, **_plot_kw(args))
        print(f"wrote {args.out}")
    if args.html:
        xj.viz.report(comp, title=f"xaijax compare: {args.model}", model_name=args.model,
                      cmap=args.cmap, alpha=args.alpha,
                      figures=_extra_figures(model, x, comp)).save(args.html)
        print(f"wrote {args.html}")
    return 0


def cmd_report(args) -> int:
    import dataclasses

    import jax

    import xaijax as xj

    names = _expand(args.images)
    model, images, x, comp = _compare(args, names)
    _print_comparison(comp)
    metrics = _names(args.metrics)
    local = {"pointing_game", "energy_pointing_game", "miou", "bbox_score"}
    masks = _box_masks(args.boxes, names, images, model, args.resize) if args.boxes or (
        local & set(metrics)) else None
    table = xj.evaluate(model, x, comp.target, methods=list(_method_options(args).items()),
                        metrics=metrics, masks=masks, key=jax.random.PRNGKey(args.seed),
                        batch_size=max(1, args.batch_size), progress=False if args.quiet
                        else None, heatmaps=dict(zip(comp.labels, comp.heatmaps)))
    # the maps were made by compare: its compile + run seconds are the methods' times
    table = dataclasses.replace(table, seconds={
        lb: float(comp.compile_seconds[i] + comp.seconds[i].sum())
        for i, lb in enumerate(comp.labels)})
    print(table)
    xj.viz.report(comp, table, title=f"xaijax report: {args.model}", model_name=args.model,
                  cmap=args.cmap, alpha=args.alpha,
                  figures=_extra_figures(model, x, comp)).save(args.html)
    print(f"wrote {args.html}")
    return 0


def cmd_methods(args) -> int:
    import xaijax as xj

    for name in xj.methods.available():
        inf = xj.methods.info(name)
        print(f"{name:24s} [{inf.needs}] {inf.summary}")
        print(f"{'':24s}   paper: {inf.paper}")
        print(f"{'':24s}   peer:  {inf.peer or 'none (tested on its paper properties)'}")
    return 0


def cmd_models(args) -> int:
    import xaijax as xj

    for name in xj.models.available():
        print(name)
    return 0


def _grid_arguments(p) -> None:
    p.add_argument("images", nargs="+", help="image files, directories of images, or bundled "
                   "photo names")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default=None, help="checkpoint (.pth/.safetensors/orbax dir)")
    p.add_argument("--random", action="store_true", help="random weights (no pretrained)")
    p.add_argument("--methods", default="gradcam,integrated_gradients,lrp",
                   help="comma-separated method names")
    p.add_argument("--target", default="top1", help="class index, class name or top1")
    p.add_argument("--opt", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="method option (repeatable); without METHOD. it goes to every listed "
                   "method that has it")
    p.add_argument("--resize", default="crop", choices=("crop", "stretch"))
    p.add_argument("--cmap", default=None, help="colour map of unsigned maps (default viridis; "
                   "jet as the peers); signed maps use a diverging map centred at 0")
    p.add_argument("--alpha", type=float, default=None, help="blend the maps over the photo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args) -> int:
    import xaijax as xj

    t0 = time.time()
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise SystemExit(f"xaijax: --classes expects comma-separated class indices, e.g. "
                             f"0,2; got {args.classes!r}")
    if os.path.lexists(args.out) and not args.force:
        raise SystemExit(f"xaijax: {args.out} exists; choose another --out or pass --force")

    def log(step, loss, acc):
        print(f"step {step:5d}/{args.steps}  loss {loss:.4f}  batch accuracy {acc:.3f}  "
              f"{time.time() - t0:6.1f}s", flush=True)

    print(f"training {args.arch} on {args.data} ({args.steps} steps, batch {args.batch_size}, "
          f"{args.size}px, seed {args.seed})", flush=True)
    r = xj.train.train_classifier(args.data, args.arch, steps=args.steps,
                                  batch_size=args.batch_size, learning_rate=args.lr,
                                  seed=args.seed, size=args.size, width=args.width,
                                  n_train=args.n_train, n_test=args.n_test, classes=classes,
                                  log_every=args.log_every, log=log)
    path = xj.train.save(r, args.out, overwrite=args.force)
    print(f"held-out accuracy {r.accuracy:.4f} ({r.config['n_test']} images), training "
          f"accuracy {r.train_accuracy:.4f}")
    print(f"wrote {path} ({time.time() - t0:.1f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaijax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="explain images and write an overlay PNG")
    e.add_argument("images", nargs="+", help="image files or bundled photo names (chelsea, "
                   "...); one directory or glob pattern is a data-set run (--out is then a "
                   "folder: heatmaps.zarr, targets.zarr (the class each heatmap explains, "
                   "-1 for failed images), manifest.json; rerun to resume)")
    e.add_argument("--model", default="efficientnet_lite0")
    e.add_argument("--weights", default=None, help="checkpoint (.pth/.safetensors/orbax dir)")
    e.add_argument("--random", action="store_true", help="random weights (no pretrained)")
    e.add_argument("--method", default="gradient")
    e.add_argument("--target", default="top1", help="class index, class name or top1")
    e.add_argument("--out", required=True, help="output .png/.jpg (a data-set run: the output "
                   "folder)")
    e.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method option (repeatable), e.g. --opt steps=64")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true",
                   help="no progress bars, the data-set run's included (also off when stderr "
                   "is not a terminal)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute precision (bfloat16: float32 accumulation and output; the "
                        "measured error per method is in xj.explain's docstring)")
    e.add_argument("--alpha", type=float, default=0.5)
    e.add_argument("--cmap", default=None)
    e.add_argument("--overlays", action="store_true",
                   help="data-set run: also write OUT_DIR/overlays/<row>_<name>.png")
    e.add_argument("--mesh", default=None, choices=("auto",),
                   help="shard each batch over all local devices")
    e.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (one process per host of a "
                   "TPU slice or cluster; run the same command on every host)")
    e.set_defaults(func=cmd_explain)

    ev = sub.add_parser("evaluate", help="score methods with metrics (deletion, insertion, "
                        "pointing game, ...) and print the table")
    ev.add_argument("images", nargs="+", help="image files, directories of images, or bundled "
                    "photo names")
    ev.add_argument("--model", default="efficientnet_lite0")
    ev.add_argument("--weights", default=None, help="checkpoint (.pth/.safetensors/orbax dir)")
    ev.add_argument("--random", action="store_true", help="random weights (no pretrained)")
    ev.add_argument("--methods", required=True, help="comma-separated, e.g. gradcam,rise")
    ev.add_argument("--metrics", default="deletion,insertion",
                    help="comma-separated: deletion, insertion, drop, increase, average_drop, "
                    "max_sensitivity, and with boxes pointing_game, energy_pointing_game, miou, "
                    "bbox_score")
    ev.add_argument("--boxes", default=None, help="JSON {image: [[x0, y0, x1, y1], ...]} in "
                    "the original images' pixels (the localisation metrics' ground truth; the "
                    "bundled photos have shipped boxes)")
    ev.add_argument("--target", default="top1", help="class index, class name or top1")
    ev.add_argument("--opt", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                    help="method option (repeatable); without METHOD. it goes to every listed "
                    "method that has it")
    ev.add_argument("--resize", default="crop", choices=("crop", "stretch"),
                    help="how photos are brought to the model's input size")
    ev.add_argument("--csv", default=None, help="also write the table (and per-image values)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--html", default=None, help="also write a self-contained HTML report "
                    "(the table and the deletion / insertion curves)")
    ev.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="a grid of methods (columns) on images (rows), each "
                       "cell with its class, probability and seconds (needs matplotlib)")
    _grid_arguments(c)
    c.add_argument("--out", default=None, help="the grid as .png (or .pdf/.svg)")
    c.add_argument("--html", default=None, help="a self-contained HTML report: the grid and "
                   "each method's maps")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="one self-contained HTML file: the comparison grid, "
                       "each method's maps, the metric table and the deletion / insertion "
                       "curves (needs matplotlib)")
    _grid_arguments(r)
    r.add_argument("--html", required=True, help="output .html")
    r.add_argument("--metrics", default="deletion,insertion", help="as for evaluate")
    r.add_argument("--boxes", default=None, help="as for evaluate")
    r.add_argument("--batch-size", type=int, default=8)
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("methods", help="list explanation methods")
    m.set_defaults(func=cmd_methods)
    mo = sub.add_parser("models", help="list zoo models")
    mo.set_defaults(func=cmd_models)
    tr = sub.add_parser("train", help="train a small classifier on synthetic flowers or "
                        "digits and save it (orbax)")
    tr.add_argument("--data", required=True, choices=("single6", "double12", "digits"))
    tr.add_argument("--arch", default="small_cnn", choices=("small_cnn", "small_vgg"))
    tr.add_argument("--out", required=True, help="output directory")
    tr.add_argument("--steps", type=int, default=1000)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--lr", type=float, default=3e-3, help="Adam's peak learning rate")
    tr.add_argument("--size", type=int, default=32, help="image side in pixels")
    tr.add_argument("--width", type=int, default=16, help="channels of the first conv layer")
    tr.add_argument("--n-train", type=int, default=None,
                    help="training images (default 4000 flowers; digits: all 1347)")
    tr.add_argument("--n-test", type=int, default=None,
                    help="held-out images (default 1000 flowers; digits: all 450)")
    tr.add_argument("--classes", default=None, help="train on these classes only, e.g. 0,2")
    tr.add_argument("--log-every", type=int, default=100)
    tr.add_argument("--force", action="store_true", help="overwrite --out")
    tr.set_defaults(func=cmd_train)
    from xaijax.io.convert import add_convert_parser

    add_convert_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, ImportError) as e:  # ImportError: an optional extra
        print(f"xaijax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
