"""Data-set runs: explain a folder (or glob, or list) of images into a resumable output folder.

``xj.run_dataset(model, "photos/", method="gradcam", out="out/")`` writes

* ``out/heatmaps.zarr``: a zarr v3 array ``(number of images, H, W)`` float32 (H, W: the
  model's input size), row ``i`` the heatmap of ``manifest["images"][i]``; rows of failed
  images are NaN. It is chunked by batch: chunk ``b`` holds rows ``[b·B, (b+1)·B)`` (B the
  batch size) and is written by ``tensorstore`` in one piece (temporary file + rename), so a
  batch's rows are either all on disk or none are.
* ``out/targets.zarr``: a zarr v3 array ``(number of images,)`` int32, row ``i`` the class
  heatmap ``i`` explains: ``Explanation.target``, i.e. with ``target="top1"`` the image's
  predicted class, with an int or a class name that class; ``-1`` for failed images. Chunked
  like ``heatmaps.zarr`` and written the same way, each batch's targets chunk before its
  heatmap chunk, so a committed heatmap chunk implies its targets chunk (rows of batches not
  committed yet read as ``-1``). Read it with :func:`read_targets` or
  :meth:`RunResult.targets`.
* ``out/manifest.json`` (replaced atomically, every few seconds and at the end): ``model``,
  ``weights`` (SHA-256 of the variables), ``method``, ``options``, ``versions``, ``images``
  (input paths in row order), ``done`` (paths finished), ``failed`` (path -> reason), plus
  ``target``, ``batch_size``, ``resize``, ``dtype``, ``process_count`` and ``state`` (the
  ``grain`` iterator state of each process).
* ``out/overlays/<row>_<name>.png`` with ``overlays=True``.

The input pipeline is a ``grain`` ``MapDataset`` of batches (row groups), sharded by JAX
process (batch ``b`` belongs to process ``b mod process_count``), read in order by prefetching
threads. A batch's composition depends only on its rows, so a method's result for an image is
the same in an uninterrupted run and in a resumed one (stochastic methods draw their noise per
position in the batch; a failed image keeps its slot).

Resuming: the committed chunks on disk are the truth. A rerun restores the iterator state
from the manifest, then skips every batch whose chunk exists (those committed after the last
manifest write); nothing is computed twice and nothing is lost. The
failure reasons of such a batch are found again by re-reading its NaN rows' images. A rerun
with another number of JAX processes splits the batches otherwise: it starts every iterator
from the beginning (the saved positions belong to the old split) and still skips the
committed batches; process 0 merges the old processes' ``manifest.process-<k>.json`` into
``manifest.json`` and removes them. A committed batch without a targets chunk (a folder
written before ``targets.zarr`` existed) gets one on resume: the run's int target, or each
image's top-1 class computed again (one forward pass).
"""

from __future__ import annotations

import dataclasses
import functools
import glob as globlib
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import jax
import numpy as np

from xaijax.io.files import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# the manifest is rewritten at most this often during a run (and at its end): it lists every
# image, so rewriting it after every batch would cost O(N²) bytes over a large run; what it
# has not recorded yet is found again from the committed chunks on resume
MANIFEST_EVERY_S = 5.0
# test hook: exit the process (as a kill would) right after this many batches were committed
# to heatmaps.zarr, before the manifest records them
EXIT_AFTER_ENV = "XAIJAX_DATASET_EXIT_AFTER"


@dataclasses.dataclass
class RunResult:
    """What :func:`run_dataset` did.

    Attributes:
      out: the output folder.
      images: every input path, in row order.
      computed: rows this call (this process) computed.
      done: paths finished (this call and earlier ones).
      failed: path -> reason for images that could not be explained.
    """

    out: str
    images: List[str]
    computed: List[int]
    done: List[str]
    failed: Dict[str, str]

    def heatmaps(self) -> np.ndarray:
        """The whole ``(N, H, W)`` heatmap array (read from ``heatmaps.zarr``)."""
        return read_heatmaps(self.out)

    def targets(self) -> np.ndarray:
        """The ``(N,)`` int32 class each heatmap explains (read from ``targets.zarr``)."""
        return read_targets(self.out)


def list_images(source: Union[str, Sequence[str]]) -> List[str]:
    """The image files of ``source``: a directory (its image files, sorted), a glob pattern
    (sorted matches) or a sequence of paths (kept in order)."""
    if not isinstance(source, (str, os.PathLike)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise ValueError("source is an empty list of images")
        return paths
    source = os.fspath(source)
    if os.path.isdir(source):
        paths = sorted(os.path.join(source, f) for f in os.listdir(source)
                       if f.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise ValueError(f"directory {source!r} holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return paths
    if is_glob(source):
        paths = sorted(p for p in globlib.glob(source, recursive=True) if os.path.isfile(p))
        if not paths:
            raise ValueError(f"no file matches {source!r}")
        return paths
    raise ValueError(f"source must be a directory, a glob pattern or a list of image paths; "
                     f"got {source!r}, which is none")


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def weights_hash(model: Any) -> str:
    """SHA-256 of a model's variables (paths, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(model.variables)[0]:
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(a) for k, a in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_jsonable(a) for a in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if hasattr(v, "dtype") and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
        v = jax.random.key_data(v)
    if hasattr(v, "shape"):
        return np.asarray(v).tolist()
    if callable(v):
        return f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(v))}"
    return repr(v)


def _versions() -> Dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("xaijax", "jax", "jaxlib", "flax", "grain", "tensorstore", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            import xaijax
            out[name] = xaijax.__version__ if name == "xaijax" else "?"
    return out


# ------------------------------------------------------------------------------------------------
# images


def load_image(model: Any, path: str, resize: str = "crop") -> np.ndarray:
    """One image file -> ``(H, W, C)`` float32 in the model's normalised space (OSError or
    ValueError if it cannot be read)."""
    from PIL import Image

    from xaijax.models.base import _resize_pil

    with Image.open(path) as im:
        im.load()
        arr = _resize_pil(im.convert("RGB"), tuple(model.spec.input_size), resize, 0.875)
    mean = np.asarray(model.spec.mean, np.float32)
    std = np.asarray(model.spec.std, np.float32)
    return ((arr - mean) / std).astype(np.float32)


def _reason(e: BaseException) -> str:
    return f"unreadable image: {type(e).__name__}: {e}"


class _LoadBatch:
    """grain map: batch index -> {"batch", "rows", "x", "errors"} (a failed image keeps its
    slot as zeros, with its reason in ``errors``)."""

    def __init__(self, model, paths, batch_size, resize):
        self.spec_model = model
        self.paths = paths
        self.bs = batch_size
        self.resize = resize

    def __call__(self, b):
        b = int(b)
        rows = list(range(b * self.bs, min((b + 1) * self.bs, len(self.paths))))
        h, w = self.spec_model.spec.input_size
        x = np.zeros((len(rows), h, w, self.spec_model.spec.in_channels), np.float32)
        errors: Dict[int, str] = {}
        for j, r in enumerate(rows):
            try:
                x[j] = load_image(self.spec_model, self.paths[r], self.resize)
            except Exception as e:  # noqa: BLE001 - any decoder failure is the image's
                errors[r] = _reason(e)
        return {"batch": b, "rows": rows, "x": x, "errors": errors}


# ------------------------------------------------------------------------------------------------
# the output folder


def _zarr_spec(out: str, name: str = "heatmaps.zarr") -> Dict[str, Any]:
    return {"driver": "zarr3", "kvstore": {"driver": "file",
                                           "path": os.path.join(os.path.abspath(out), name)}}


def _open_array(out: str, n: int, h: int, w: int, bs: int):
    import tensorstore as ts

    spec = dict(_zarr_spec(out))
    spec["metadata"] = {
        "shape": [n, h, w], "data_type": "float32", "fill_value": "NaN",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [bs, h, w]}},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                   {"name": "zstd", "configuration": {"level": 1}}],
    }
    spec["store_data_equal_to_fill_value"] = True  # a batch of failures is a chunk too
    return ts.open(spec, create=True, open=True).result()


def _open_targets(out: str, n: int, bs: int):
    import tensorstore as ts

    spec = dict(_zarr_spec(out, "targets.zarr"))
    spec["metadata"] = {
        "shape": [n], "data_type": "int32", "fill_value": -1,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [bs]}},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    spec["store_data_equal_to_fill_value"] = True  # a batch of failures is a chunk too
    return ts.open(spec, create=True, open=True).result()


def _chunks_on_disk(out: str, name: str, ndim: int) -> set:
    """Indices ``b`` of the chunks ``c/<b>/0/.../0`` of the array ``out/name`` on disk."""
    import tensorstore as ts

    root = os.path.join(os.path.abspath(out), name)
    if not os.path.isdir(root):
        return set()
    kv = ts.KvStore.open({"driver": "file", "path": root + "/"}).result()
    done = set()
    for key in kv.list().result():
        # exactly c/<b>/0/0: tensorstore writes a chunk to "<key>.__lock" and renames it, so
        # a write cut short leaves c/<b>/0/0.__lock, which is not a committed batch
        parts = key.decode().split("/")
        if len(parts) == ndim + 1 and parts[0] == "c" and parts[2:] == ["0"] * (ndim - 1) \
                and parts[1].isdigit():
            done.add(int(parts[1]))
    return done


def committed_batches(out: str) -> set:
    """Indices of the batches (chunks) of ``heatmaps.zarr`` that are on disk."""
    return _chunks_on_disk(out, "heatmaps.zarr", 3)


def read_heatmaps(out: str) -> np.ndarray:
    """``heatmaps.zarr`` of a run folder as a numpy array ``(N, H, W)`` (NaN rows: failed or
    not yet computed)."""
    import tensorstore as ts

    return ts.open(_zarr_spec(out), open=True).result().read().result()


def read_targets(out: str) -> np.ndarray:
    """``targets.zarr`` of a run folder as a numpy array ``(N,)`` int32: the class each row of
    ``heatmaps.zarr`` explains (``-1``: failed or not yet computed)."""
    import tensorstore as ts

    if not os.path.isdir(os.path.join(out, "targets.zarr")):
        raise FileNotFoundError(f"{out!r} holds no targets.zarr (not a run_dataset folder, or "
                                f"one no run_dataset call has resumed since targets.zarr was "
                                f"added; rerun the same run_dataset call to write it)")
    return ts.open(_zarr_spec(out, "targets.zarr"), open=True).result().read().result()


def read_manifest(out: str) -> Dict[str, Any]:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(out: str, manifest: Dict[str, Any]) -> None:
    _write_json(os.path.join(out, "manifest.json"), manifest)


_IDENTITY = ("model", "weights", "method", "options", "target", "images", "batch_size",
             "resize", "dtype")


# ------------------------------------------------------------------------------------------------
# the run


def run_dataset(model: Any, source: Union[str, Sequence[str]], *, method: str = "gradient",
                out: str, batch_size: int = 8, target: Any = "top1", mesh: Any = None,
                dtype: Optional[str] = None, overlays: bool = False, resize: str = "crop",
                progress: Optional[bool] = None, **options) -> RunResult:
    """Explain every image of ``source`` into the folder ``out``; rerun to resume.

    Args:
      model: an xaijax :class:`~xaijax.models.Model` (its input size, normalisation and
        weights define the run).
      source: a directory, a glob pattern (``"photos/**/*.jpg"``) or a list of image paths.
      method: a registered method name.
      out: output folder (created); see the module docstring for its layout.
      batch_size: images per compiled call (fixed for a folder: it sets the chunking).
      target: an int, an ImageNet class name or ``"top1"`` (each image's prediction).
      mesh: ``None``, ``"auto"`` or a :class:`jax.sharding.Mesh`: each batch is sharded over it
        (see :func:`xaijax.explain`).
      dtype: ``None``/``"float32"`` or ``"bfloat16"``: the compute precision (see
        :func:`xaijax.explain`); recorded in the manifest as ``dtype`` and part of the run's
        identity (a folder is resumed only in the same precision).
      overlays: also write ``out/overlays/<row>_<name>.png``.
      resize: ``"crop"`` or ``"stretch"`` (:func:`xaijax.models.preprocess`).
      progress: a progress bar with images/s and ETA (default: when stderr is a terminal).
      **options: the method's options.

    Returns:
      a :class:`RunResult`.

    Raises:
      ValueError: ``out`` holds a run of another configuration (model, weights, method,
        options, target, images, batch size or resize), or bad arguments.
    """
    import grain

    from xaijax import methods
    from xaijax.methods.base import check_choice, check_dtype, check_positive_int, target_array
    from xaijax.models.base import Model

    if not isinstance(model, Model):
        raise TypeError(f"run_dataset needs an xaijax Model (its input size and normalisation "
                        f"read the images); got {type(model).__name__} — wrap a linen model "
                        f"with xj.models.wrap(...)")
    bs = check_positive_int(batch_size, "batch_size")
    check_choice(resize, ("crop", "stretch", "none"), "resize")
    static, traced = methods.split_options(method, options)
    dtype = check_dtype(dtype, method, model)
    fn = methods.bind(method, **static)
    paths = list_images(source)
    n = len(paths)
    h, w = model.spec.input_size
    if isinstance(target, str) and target != "top1":
        target = int(target_array(model, np.zeros((1, h, w, 3), np.float32), target)[0])
    elif not isinstance(target, str):
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise TypeError(f"target must be an int, a class name or 'top1' for a data-set "
                            f"run; got {target!r}")
        target = int(target_array(model, np.zeros((1, h, w, 3), np.float32), target)[0])
    manifest = {
        "model": model.spec.name, "weights": weights_hash(model), "method": method,
        "options": _jsonable(options), "target": _jsonable(target), "batch_size": bs,
        "resize": resize, "dtype": dtype or "float32", "versions": _versions(),
        "images": paths,
    }
    nproc, proc = jax.process_count(), jax.process_index()
    _check_local(mesh)
    old = _previous(out, manifest, first=proc == 0)
    old_count = old.get("process_count", nproc)
    parts = _process_parts(out)  # left by other processes of a killed multi-host run
    # iterator positions only of the same split of the batches: another process count gives
    # them another meaning (the committed chunks still say what is done)
    states = dict(old.get("state", {})) if old_count == nproc else {}
    states.update({k: v["state"] for k, v in parts.items()
                   if v.get("process_count", old_count) == nproc})
    failed: Dict[str, str] = dict(old.get("failed", {}))
    for v in parts.values():
        failed.update(v["failed"])
    t_all = None if target == "top1" else int(target)
    if proc == 0:
        os.makedirs(out, exist_ok=True)
        arr = _open_array(out, n, h, w, bs)
        tarr = _open_targets(out, n, bs)
        _fill_targets(model, paths, bs, resize, arr, tarr,
                      committed_batches(out) - _chunks_on_disk(out, "targets.zarr", 1),
                      t_all, dtype)
        manifest.update(process_count=nproc, state=states, done=old.get("done", []),
                        failed=failed)
        _write_manifest(out, manifest)  # the run's identity is on disk before any chunk
        for k, v in parts.items():  # another split's: merged into manifest.json just now
            if v.get("process_count", old_count) != nproc:
                _remove(_part_path(out, int(k)))
    _barrier("xaijax.run_dataset.start", nproc)
    if proc != 0:
        arr = _open_array(out, n, h, w, bs)
        tarr = _open_targets(out, n, bs)

    num_batches = -(-n // bs)
    shard = grain.sharding.ShardByJaxProcess()
    ds = grain.MapDataset.range(num_batches)[shard.shard_index::shard.shard_count]
    ds = ds.map(_LoadBatch(model, paths, bs, resize))
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
    if str(proc) in states:
        it.set_state(states[str(proc)])

    committed = committed_batches(out)
    mine = [b for b in range(proc, num_batches, nproc)]
    _recover(model, paths, bs, resize, arr, committed, failed,
             {"done": old.get("done", []) + [p for v in parts.values() for p in v["done"]]})
    todo_rows = sum(len(range(b * bs, min((b + 1) * bs, n))) for b in mine
                    if b not in committed)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _bar(todo_rows, show, method)
    exit_after = int(os.environ.get(EXIT_AFTER_ENV, "0") or 0)
    computed: List[int] = []
    n_written = 0

    last = [time.monotonic()]

    def record():
        last[0] = time.monotonic()
        manifest["state"] = {**states, str(proc): it.get_state()}
        manifest["done"] = _done(paths, bs, committed, failed)
        manifest["failed"] = dict(sorted(failed.items()))
        if proc == 0:
            _write_manifest(out, manifest)
        else:  # merged into manifest.json by process 0 at the end (or on resume)
            _write_json(_part_path(out, proc), {"state": manifest["state"][str(proc)],
                                                "failed": manifest["failed"],
                                                "done": manifest["done"],
                                                "process_count": nproc})

    try:
        for item in it:
            b = item["batch"]
            if b in committed:  # committed after the manifest's last write: a kill's window
                continue
            rows, x, errors = item["rows"], item["x"], item["errors"]
            xs = jax.numpy.asarray(_pad(x, bs))
            tgt = "top1" if t_all is None else np.full((bs,), t_all, np.int32)
            ex = fn(model, xs, tgt, mesh=mesh, dtype=dtype, **traced)
            if ex.target is None:
                raise TypeError(f"method {method!r} returned no Explanation.target: a data-set "
                                f"run records the class each heatmap explains")
            heat = np.array(ex.heatmap, np.float32)[:len(rows)]
            classes = np.array(ex.target, np.int32)[:len(rows)]
            for j, r in enumerate(rows):
                if r in errors:
                    heat[j] = np.nan
                elif not np.isfinite(heat[j]).all():
                    errors[r] = "the method returned a non-finite heatmap"
                    heat[j] = np.nan
                if r in errors:
                    classes[j] = -1
            # one chunk each, one atomic file each; the targets first, so that a committed
            # heatmap chunk (what resuming trusts) implies its targets chunk
            wrote_targets = tarr[rows[0]:rows[-1] + 1].write(classes)
            if overlays:
                _write_overlays(out, model, x, heat, rows, paths, errors)
            wrote_targets.result()
            arr[rows[0]:rows[-1] + 1].write(heat).result()
            committed.add(b)
            computed.extend(rows)
            failed.update({paths[r]: e for r, e in errors.items()})
            n_written += 1
            if exit_after and n_written >= exit_after:
                os._exit(17)  # as a kill would: the manifest does not know this batch yet
            if time.monotonic() - last[0] >= MANIFEST_EVERY_S:
                record()
            bar(len(rows))
    finally:
        bar(None)
    record()
    if nproc > 1:
        _barrier("xaijax.run_dataset.end", nproc)
        if proc == 0:  # every process's batches and failures into manifest.json
            parts = _process_parts(out)
            for k, v in parts.items():
                states[k] = v["state"]
                failed.update(v["failed"])
            committed = committed_batches(out)
            known = {"done": [p for v in parts.values() for p in v.get("done", [])]
                     + manifest["done"]}  # rows read back: only batches no one recorded
            _recover(model, paths, bs, resize, arr, committed, failed, known)
            record()
            for k in parts:
                _remove(_part_path(out, int(k)))
        _barrier("xaijax.run_dataset.merged", nproc)
        manifest = read_manifest(out)
    return RunResult(out=out, images=paths, computed=computed, done=manifest["done"],
                     failed=manifest["failed"])


def _check_local(mesh: Any) -> None:
    from xaijax.sharding import resolve_mesh

    m = resolve_mesh(mesh)
    if m is not None and not set(m.devices.flat) <= set(jax.local_devices()):
        raise ValueError("run_dataset shards each process's batches over that process's own "
                         "devices (the processes read different images); pass mesh='auto' or "
                         "a Mesh of jax.local_devices()")


def _barrier(name: str, nproc: int) -> None:
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _part_path(out: str, proc: int) -> str:
    return os.path.join(out, f"manifest.process-{proc}.json")


def _process_parts(out: str) -> Dict[str, Dict[str, Any]]:
    """``{process: {"state", "failed", "done", "process_count"}}`` written by processes other
    than 0: every ``manifest.process-<k>.json`` in ``out``, those of a run with another
    process count included (``process_count`` is missing from files of older versions)."""
    parts = {}
    if not os.path.isdir(out):
        return parts
    for name in os.listdir(out):
        k = name[len("manifest.process-"):-len(".json")]
        if not (name.startswith("manifest.process-") and name.endswith(".json") and k.isdigit()):
            continue
        try:
            with open(os.path.join(out, name)) as f:
                parts[k] = json.load(f)
        except FileNotFoundError:  # another split's, removed by process 0 meanwhile
            continue
    return parts


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _write_json(path: str, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)


def _previous(out: str, manifest: Dict[str, Any], first: bool = True) -> Dict[str, Any]:
    """The manifest already in ``out`` ({} if none); a ValueError if it is another run's.
    ``first``: the process that creates the folder (the others may find it half made)."""
    p = os.path.join(out, "manifest.json")
    if not os.path.exists(p):
        if first and os.path.isdir(os.path.join(out, "heatmaps.zarr")):
            raise ValueError(f"{out!r} holds a heatmaps.zarr but no manifest.json (not a "
                             f"run_dataset folder, or its manifest was deleted); write to a "
                             f"new folder or delete {out!r}")
        return {}
    old = read_manifest(out)
    new = json.loads(json.dumps(manifest))
    old.setdefault("dtype", "float32")  # folders written before the dtype field
    diff = [k for k in _IDENTITY if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(f"{out!r} holds a run with another {', '.join(diff)}; resume it with "
                         f"the same arguments, or write to a new --out folder (or delete "
                         f"{out!r})")
    return old


def _recover(model, paths, bs, resize, arr, committed, failed, old) -> None:
    """Failure reasons of batches committed after the manifest's last write (a kill between
    the chunk and the manifest): their NaN rows are read back and their images re-read."""
    known = set(old.get("done", [])) | set(failed)
    n = len(paths)
    for b in sorted(committed):
        rows = range(b * bs, min((b + 1) * bs, n))
        if all(paths[r] in known for r in rows):
            continue
        heat = arr[rows[0]:rows[-1] + 1].read().result()
        for j, r in enumerate(rows):
            if np.isnan(heat[j]).all() and paths[r] not in known:
                try:
                    load_image(model, paths[r], resize)
                    failed[paths[r]] = "the method returned a non-finite heatmap"
                except Exception as e:  # noqa: BLE001
                    failed[paths[r]] = _reason(e)


def _fill_targets(model, paths, bs, resize, arr, tarr, batches, t_all, dtype) -> None:
    """Targets chunks of committed batches that have none (a folder written before
    ``targets.zarr`` existed, or whose ``targets.zarr`` was deleted): ``t_all``, or each
    image's top-1 class again (one forward pass in the run's precision); ``-1`` for the rows
    that are NaN in ``heatmaps.zarr``."""
    load = _LoadBatch(model, paths, bs, resize)
    for b in sorted(batches):
        item = load(b)
        rows = item["rows"]
        if t_all is None:
            classes = np.array(_top1(model, jax.numpy.asarray(_pad(item["x"], bs)), dtype),
                               np.int32)[:len(rows)]
        else:
            classes = np.full((len(rows),), t_all, np.int32)
        heat = arr[rows[0]:rows[-1] + 1].read().result()
        classes[np.isnan(heat).all(axis=(1, 2))] = -1
        tarr[rows[0]:rows[-1] + 1].write(classes).result()


@functools.partial(jax.jit, static_argnums=2)
def _top1(model, x, dtype):
    """``Explanation.target`` of ``target="top1"``: the model's prediction in ``dtype``."""
    from xaijax.methods.base import compute_in, logits_fn

    if dtype is not None:
        model, x = compute_in(dtype, model, x)
    return jax.numpy.argmax(logits_fn(model)(x), axis=-1).astype(jax.numpy.int32)


def _done(paths, bs, committed, failed) -> List[str]:
    n = len(paths)
    return [paths[r] for b in sorted(committed) for r in range(b * bs, min((b + 1) * bs, n))
            if paths[r] not in failed]


def _pad(x: np.ndarray, bs: int) -> np.ndarray:
    if x.shape[0] == bs:
        return x
    return np.concatenate([x, np.repeat(x[-1:], bs - x.shape[0], axis=0)])


def _write_overlays(out, model, x, heat, rows, paths, errors) -> None:
    from xaijax import viz
    from xaijax.models.base import images_from_normalised

    photos = images_from_normalised(model, x)
    for j, r in enumerate(rows):
        if r in errors:
            continue
        stem = os.path.splitext(os.path.basename(paths[r]))[0]
        viz.save_overlay(os.path.join(out, "overlays", f"{r:06d}_{stem}.png"), photos[j],
                         heat[j])


def _bar(total: int, show: bool, desc: str):
    """``update(k)`` advances a tqdm bar (images/s, ETA) by ``k`` images; ``update(None)``
    closes it."""
    if not show:
        return lambda k: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True)

    def update(k):
        if k is None:
            bar.close()
        else:
            bar.update(k)

    return update
