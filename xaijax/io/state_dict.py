"""Generic torch ``state_dict`` -> xaijax variables mapping.

Every parameter-bearing zoo layer has a tap name equal to its torch module path, so the mapping
is mechanical: ``{tap}.weight`` / ``{tap}.bias`` (+ BatchNorm running statistics) go to that
layer's flax parameters, transposed to JAX layouts (conv OIHW -> HWIO, linear (out, in) ->
(in, out)). Any key that is missing, unexpected or mis-shaped is an error naming the key.

Examples:
  >>> import numpy as np
  >>> import xaijax as xj
  >>> from xaijax.io import state_dict_to_variables
  >>> model = xj.models.build("small_cnn", random_init=False)
  >>> conv1 = np.zeros((16, 3, 3, 3), np.float32)  # torch layout (out, in, kh, kw)
  >>> state_dict_to_variables(model, {"conv1.weight": conv1})
  Traceback (most recent call last):
  ValueError: checkpoint does not fit small_cnn: missing key 'conv1.bias' (expected shape (16,))
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))


def _dense(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (1, 0))


# layer type -> {flax param name: (torch suffix, transform)}
_MAPPING = {
    "Conv": {"kernel": ("weight", _conv), "bias": ("bias", None)},
    "Dense": {"kernel": ("weight", _dense), "bias": ("bias", None)},
    "BatchNorm": {"scale": ("weight", None), "bias": ("bias", None),
                  "mean": ("running_mean", None), "var": ("running_var", None)},
}


def state_dict_to_variables(model, state_dict: Mapping[str, Any], *, strict: bool = True,
                            key_map=None) -> Dict[str, Any]:
    """Map a torch-layout ``state_dict`` (name -> array-like) onto ``model``'s variables.

    Args:
      model: a :class:`xaijax.models.Model` whose variables give the expected shapes.
      state_dict: parameter name -> array (numpy, or anything ``np.asarray`` takes; a torch
        tensor must be converted by the caller with ``.detach().cpu().numpy()``).
      strict: refuse keys the model does not use.
      key_map: optional function renaming checkpoint keys before matching (e.g. strip a
        ``module.`` prefix written by DataParallel).

    Returns:
      a new variables dict (numpy float32 leaves) with the model's tree structure.

    Raises:
      ValueError: naming the first missing, unexpected or mis-shaped key.
    """
    sd = {}
    for k, v in state_dict.items():
        k2 = key_map(k) if key_map is not None else k
        sd[k2] = v
    table = model.layers()
    params = model.variables["params"]
    used = set()
    new_params: Dict[str, Any] = {}
    for tap, (path, typ) in table.items():
        if typ not in _MAPPING:
            continue
        node = params
        for p in path:
            node = node[p]
        out = {}
        for pname, target in node.items():
            suffix, fn = _MAPPING[typ][pname]
            key = f"{tap}.{suffix}"
            if key not in sd:
                raise ValueError(f"checkpoint does not fit {model.spec.name}: missing key "
                                 f"{key!r} (expected shape {_torch_shape(typ, pname, target)})")
            arr = np.asarray(sd[key], dtype=np.float32)
            if fn is not None:
                if arr.ndim != np.ndim(target):
                    raise ValueError(f"checkpoint does not fit {model.spec.name}: key {key!r} "
                                     f"has shape {arr.shape}, expected "
                                     f"{_torch_shape(typ, pname, target)}")
                arr = fn(arr)
            if arr.shape != tuple(np.shape(target)):
                raise ValueError(f"checkpoint does not fit {model.spec.name}: key {key!r} has "
                                 f"shape {_inv_shape(typ, pname, arr.shape)}, expected "
                                 f"{_torch_shape(typ, pname, target)}"
                                 + _head_hint(model, typ, arr, target))
            out[pname] = np.ascontiguousarray(arr)
            used.add(key)
        _set_path(new_params, path, out)
    if strict:
        extra = sorted(k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES))
        if extra:
            raise ValueError(f"checkpoint does not fit {model.spec.name}: unexpected key "
                             f"{extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1
                                                else ""))
    variables = dict(model.variables)
    variables["params"] = new_params
    return variables


def _head_hint(model, typ, arr, target) -> str:
    """Suggest ``num_classes`` when only the classifier's output size differs."""
    n = model.spec.num_classes
    if typ != "Dense" or np.shape(target)[-1] != n or arr.shape[:-1] != np.shape(target)[:-1]:
        return ""
    return f" — the checkpoint has {arr.shape[-1]} classes: pass num_classes={arr.shape[-1]}"


def _set_path(tree: Dict[str, Any], path, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _torch_shape(typ, pname, target):
    return _inv_shape(typ, pname, tuple(np.shape(target)))


def _inv_shape(typ, pname, shape):
    shape = tuple(shape)
    if pname == "kernel" and typ == "Conv" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if pname == "kernel" and typ == "Dense" and len(shape) == 2:
        return (shape[1], shape[0])
    return shape
