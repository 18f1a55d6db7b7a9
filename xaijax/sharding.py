"""Running a method with its batch sharded over a device mesh.

``xj.explain(model, x, target, method=..., mesh=...)`` and ``bind(...)(..., mesh=...)`` come
here: the batch (images and targets) is padded to a multiple of the mesh's data axis, laid out
with ``NamedSharding(mesh, P(data))``, the model's variables and every traced option are
replicated, and the method's own compiled program runs on the sharded arrays (GSPMD partitions
it; every method works per image along the batch axis, so each device computes its images with
no communication). The result is cut back to the caller's batch.

A mesh is either a :class:`jax.sharding.Mesh` (the data axis is the one named ``"data"``, else
its first axis; other axes replicate) or ``"auto"``: all local devices on one ``"data"`` axis.
Mesh axes are used as ``AxisType.Auto`` (GSPMD propagation): ``jax.make_mesh`` gives
``Explicit`` axes by default in current JAX, so such a mesh is rebuilt with ``Auto`` axes over
the same devices.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MeshLike = Union[None, str, Mesh]

DATA_AXIS = "data"


def resolve_mesh(mesh: MeshLike) -> Optional[Mesh]:
    """``None`` -> ``None``; ``"auto"`` -> all local devices on one ``"data"`` axis; a
    :class:`~jax.sharding.Mesh` -> the same devices with ``Auto`` axis types."""
    if mesh is None:
        return None
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be None, 'auto' or a jax.sharding.Mesh; got {mesh!r}")
        return _auto_mesh(tuple(jax.local_devices()))
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be None, 'auto' or a jax.sharding.Mesh; got "
                        f"{type(mesh).__name__} — build one with jax.sharding.Mesh(devices, "
                        f"('data',))")
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


_AUTO: Dict[Tuple[Any, ...], Mesh] = {}


def _auto_mesh(devices: Tuple[Any, ...]) -> Mesh:
    if devices not in _AUTO:
        _AUTO[devices] = Mesh(np.array(devices), (DATA_AXIS,),
                              axis_types=(jax.sharding.AxisType.Auto,))
    return _AUTO[devices]


def data_axis(mesh: Mesh) -> str:
    """The axis the batch is split over: ``"data"`` if the mesh has it, else its first."""
    return DATA_AXIS if DATA_AXIS in mesh.axis_names else mesh.axis_names[0]


def data_size(mesh: Mesh) -> int:
    """How many ways the batch is split."""
    return int(mesh.shape[data_axis(mesh)])


def pad_batch(a: Any, n: int) -> Any:
    """``a`` with its leading axis padded to ``n`` by repeating its last row (a real input, so
    no method meets an image it would refuse, e.g. an all-zero one)."""
    extra = n - a.shape[0]
    if extra <= 0:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)


# the replicated copy of a Model's variables per (model, mesh), so a repeated call does not
# copy the weights to every device again; dropped when the model is garbage-collected
_REPLICATED: Dict[Tuple[int, Mesh], Tuple[Any, Any]] = {}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array leaf of ``tree`` replicated over ``mesh`` (non-array leaves unchanged)."""
    rep = NamedSharding(mesh, P())

    def put(a):
        if isinstance(a, (jax.Array, np.ndarray)):
            return jax.device_put(a, rep)
        return a

    return jax.tree_util.tree_map(put, tree)


def replicated_model(model: Any, mesh: Mesh) -> Any:
    """``model`` with its variables replicated over ``mesh``, cached per live model object
    (a plain callable passes through: its closed-over constants are the compiler's)."""
    if not jax.tree_util.tree_leaves(model):
        return model
    key = (id(model), mesh)
    hit = _REPLICATED.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1]
    rep = replicate(model, mesh)
    try:
        ref = weakref.ref(model, lambda _, k=key: _REPLICATED.pop(k, None))
    except TypeError:  # not weak-referenceable: do not cache
        return rep
    _REPLICATED[key] = (ref, rep)
    return rep


def shard_batch(mesh: Mesh, *arrays: Any) -> Tuple[int, Tuple[Any, ...]]:
    """``(n, arrays)``: the batch size ``n`` and the arrays padded to a multiple of the data
    axis and sharded over it along their leading axis."""
    n = arrays[0].shape[0]
    k = data_size(mesh)
    padded = -(-n // k) * k
    spec = NamedSharding(mesh, P(data_axis(mesh)))
    return n, tuple(jax.device_put(pad_batch(a, padded), spec) for a in arrays)


def constrain_batch(mesh: Mesh, n: int, tree: Any) -> Any:
    """Inside a traced program: every array leaf of ``tree`` whose leading axis is the batch
    (``n`` rows) constrained to be split over the data axis, the others left to the
    compiler."""
    spec = NamedSharding(mesh, P(data_axis(mesh)))

    def con(a):
        if hasattr(a, "shape") and a.ndim and a.shape[0] == n:
            return jax.lax.with_sharding_constraint(a, spec)
        return a

    return jax.tree_util.tree_map(con, tree)


# the inner-axis mode and the split batch's mesh: set while a sharded program is being traced
# (never at run time, so a cached program is never affected); read by shard_inner and
# batch_blocks
_INNER = threading.local()


@contextlib.contextmanager
def _tracing(attr: str, mesh: Optional[Mesh]):
    prev = getattr(_INNER, attr, None)
    setattr(_INNER, attr, mesh)
    try:
        yield
    finally:
        setattr(_INNER, attr, prev)


def inner_axis(mesh: Optional[Mesh]):
    """Within the block, :func:`shard_inner` splits arrays over ``mesh``'s data axis (``None``:
    it does nothing). Used while tracing a method whose batch is smaller than the axis."""
    return _tracing("mesh", mesh)


def shard_inner(tree: Any) -> Any:
    """Split the leading axis of every array of ``tree`` over the data axis when a sharded
    program is traced in inner mode (:func:`inner_axis`), else return ``tree`` unchanged.

    Multi-pass methods call it on their inner batch so that a batch of fewer images than
    devices still uses every device. Through :func:`merge_inner`: IG, Blur IG, XRAI's IG,
    SmoothGrad, VarGrad, GradientSHAP and DeepLIFT-SHAP on each chunk of path points, noisy
    copies or references (:func:`xaijax.methods.gradient.per_item`); RISE (masks), occlusion
    (windows), LIME, Kernel SHAP, Shapley value sampling and feature ablation (coalitions),
    Score-CAM (channels) and SISE (selected feature maps) on each chunk's masked images.
    Directly: Ablation-CAM on its chunk of ablated activations. The split axis must be the outermost one of the model's batch: an
    inner axis nested inside the image axis (a ``vmap`` over images around the chunk loop)
    cannot be split without all-gathers.
    """
    mesh = getattr(_INNER, "mesh", None)
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, P(data_axis(mesh)))

    def con(a):
        if hasattr(a, "ndim") and a.ndim:
            return jax.lax.with_sharding_constraint(a, spec)
        return a

    return jax.tree_util.tree_map(con, tree)


def batch_axis(mesh: Optional[Mesh]):
    """Within the block, :func:`batch_blocks` is ``mesh``'s data-axis size. Used while tracing
    a method whose batch is split over the axis."""
    return _tracing("batch_mesh", mesh)


def batch_blocks() -> int:
    """How many contiguous blocks of the batch the devices hold in the program being traced:
    the data-axis size while a batch-split program is traced (:func:`batch_axis`), else 1.

    A method that stacks a second copy of its batch along the batch axis (DeepLIFT's
    references) lays it out per block, ``[x_block; x⁰_block]`` for each device's block, so
    that each device keeps its own rows; one block is the plain ``[x; x⁰]``."""
    mesh = getattr(_INNER, "batch_mesh", None)
    return 1 if mesh is None else data_size(mesh)


def inner_mode() -> bool:
    """Whether a sharded program is being traced in inner mode (:func:`inner_axis`)."""
    return getattr(_INNER, "mesh", None) is not None


def merge_inner(a: Any) -> Any:
    """``(K, N, ...)`` (``K`` inner items — masks, windows, samples, channels — of each of
    ``N`` images) as one model batch ``(K·N, ...)``.

    In inner mode the rows are item-major (item ``k`` of image ``n`` at row ``k·N + n``) and
    split over the data axis (:func:`shard_inner`); otherwise they are image-major (row
    ``n·K + k``), the order of a ``vmap`` over images, so that a batch sharded over its images
    stays split (an item-major merge of an image-sharded array is replicated by the compiler)
    and a one-device program sees the same batch as before. :func:`split_inner` inverts it.
    """
    k, n = a.shape[:2]
    if inner_mode():
        return shard_inner(a.reshape((k * n,) + a.shape[2:]))
    return jnp.swapaxes(a, 0, 1).reshape((k * n,) + a.shape[2:])


def split_inner(a: Any, k: int) -> Any:
    """``(K·N, ...)`` rows laid out by :func:`merge_inner` back to ``(K, N, ...)``."""
    n = a.shape[0] // k
    if inner_mode():
        return a.reshape((k, n) + a.shape[1:])
    return jnp.swapaxes(a.reshape((n, k) + a.shape[1:]), 0, 1)


def unpad(tree: Any, n: int, padded: int) -> Any:
    """Every array leaf whose leading axis is the padded batch cut back to ``n`` rows."""
    if n == padded:
        return tree

    def cut(a):
        if isinstance(a, jax.Array) and a.ndim and a.shape[0] == padded:
            return a[:n]
        return a

    return jax.tree_util.tree_map(cut, tree)
