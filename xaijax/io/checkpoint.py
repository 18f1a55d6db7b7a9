"""Read checkpoint files and save / load converted xaijax variables with orbax-checkpoint.

Inputs (:func:`read_state_dict`): a torch ``state_dict`` as ``.pth`` / ``.pt`` / ``.bin`` (read by
the torch-free whitelist reader :mod:`xaijax.io.pth`, which never executes code from the pickle)
or ``.safetensors`` (the ``safetensors`` package's numpy API). A ``module.`` prefix written by
``DataParallel`` (or ``_orig_mod.`` by ``torch.compile``) on every key is stripped, and a training
checkpoint that wraps the weights as ``{"state_dict": ...}`` / ``{"model": ...}`` is unwrapped.

Output (:func:`save_variables`): a directory holding

* ``variables/``: the variables pytree, written by orbax-checkpoint's ``PyTreeCheckpointer``;
* ``xaijax.json``: metadata: the architecture name, number of classes and the shape of every
  leaf, so that :func:`load_variables` refuses a checkpoint of another architecture with an error
  that says which one it holds.

Examples:
  >>> import os, tempfile
  >>> import xaijax as xj
  >>> from xaijax.io import describe, load_variables, save_variables
  >>> model = xj.models.get("small_cnn")
  >>> out = save_variables(os.path.join(tempfile.mkdtemp(), "small"), model.variables,
  ...                      "small_cnn")
  >>> describe(out)
  ('small_cnn', 10)
  >>> model = model.replace_variables(load_variables(out, model))
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np

from xaijax.io import pth
from xaijax.io.state_dict import state_dict_to_variables

METADATA_FILE = "xaijax.json"
VARIABLES_DIR = "variables"
FORMAT = "xaijax-variables"
FORMAT_VERSION = 1
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
_PREFIXES = ("module.", "_orig_mod.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


# ------------------------------------------------------------------------------------------------
# reading state_dicts


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """A checkpoint file as ``{torch parameter name: numpy array}``; torch is not needed.

    Args:
      path: ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (torch pickle, zip or legacy format) or
        ``.safetensors``.

    Returns:
      the state_dict with any ``module.`` / ``_orig_mod.`` prefix stripped.

    Raises:
      FileNotFoundError: no such file.
      ValueError: unknown file type, or the file does not hold a state_dict.
      xaijax.io.UnsafePickleError: the pickle asks for anything a state_dict does not need
        (nothing from it is executed).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; expected a .pth/.pt/.safetensors file "
                         f"(directories written by `xaijax convert` load with load_variables)")
    low = path.lower()
    if low.endswith(SAFETENSORS_SUFFIXES):
        sd = _read_safetensors(path)
    elif low.endswith(TORCH_SUFFIXES):
        sd = _read_torch(path)
    else:
        raise ValueError(f"unknown checkpoint type {os.path.basename(path)!r}: expected one of "
                         f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}")
    return strip_prefix(sd)


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - safetensors is a core dependency
        raise ImportError("reading .safetensors needs the safetensors package: "
                          "pip install safetensors") from e
    return dict(load_file(path))


def _read_torch(path: str) -> Dict[str, np.ndarray]:
    return _as_state_dict(pth.load(path), path)


def _as_state_dict(obj: Any, path: str) -> Dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state_dict (a mapping of "
                         f"names to tensors); save model.state_dict() instead of the model")
    if obj and not all(isinstance(v, np.ndarray) for v in obj.values()):
        for k in _WRAPPER_KEYS:  # training checkpoints: {"state_dict": {...}, "epoch": ...}
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, np.ndarray) for v in inner.values()):
                obj = inner
                break
        else:
            bad = next(k for k, v in obj.items() if not isinstance(v, np.ndarray))
            raise ValueError(f"{path!r}: entry {bad!r} is a {type(obj[bad]).__name__}, not a "
                             f"tensor, and no {'/'.join(_WRAPPER_KEYS)} entry holds the weights; "
                             "save model.state_dict() instead")
    return {str(k): v for k, v in obj.items()}


def strip_prefix(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """Remove a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix carried by
    every key; other state_dicts come back unchanged."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in out):
                out = {k[len(p):]: v for k, v in out.items()}
                changed = True
    return out


def convert_file(model, path: str) -> Dict[str, Any]:
    """Read ``path`` (see :func:`read_state_dict`) and map it onto ``model``'s variables.

    Raises:
      ValueError: naming the first missing, unexpected or mis-shaped key.
    """
    try:
        return state_dict_to_variables(model, read_state_dict(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------------------
# orbax save / load


def is_variables_dir(path: str) -> bool:
    """True for a directory written by :func:`save_variables`."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE))


def _signature(tree: Any) -> Dict[str, List[int]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_keystr(p): [int(d) for d in np.shape(v)] for p, v in leaves}


def _keystr(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def save_variables(path: str, variables: Any, spec_name: str, *, overwrite: bool = False,
                   extra: Optional[Mapping[str, Any]] = None) -> str:
    """Save converted variables with orbax-checkpoint, plus metadata naming the architecture.

    The directory is written under a temporary name next to ``path`` and renamed into place, so
    an interrupted save never leaves a half-written checkpoint at ``path``.

    Args:
      path: output directory (created; must not exist unless ``overwrite``).
      variables: the variables pytree (``model.variables``).
      spec_name: the zoo name of the architecture (``model.spec.name``).
      overwrite: replace an existing directory written by this function.
      extra: more JSON-serialisable metadata (e.g. the source file).

    Returns:
      the absolute path written.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists; choose another output directory or "
                                  f"overwrite it (--force on the command line)")
        if not is_variables_dir(path):
            raise FileExistsError(f"{path} exists and was not written by xaijax (no "
                                  f"{METADATA_FILE}); refusing to overwrite it")
    variables = jax.tree_util.tree_map(lambda a: np.asarray(a), dict(variables))
    sig = _signature(variables)
    num_classes = None
    for k, shape in sig.items():
        if k.endswith("kernel") and len(shape) == 2:
            num_classes = shape[1]  # the last dense layer in flatten order
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "model": spec_name,
            "num_classes": num_classes, "shapes": sig, **dict(extra or {})}
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        os.makedirs(tmp)
        ocp.PyTreeCheckpointer().save(os.path.join(tmp, VARIABLES_DIR), variables)
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=1)
        if os.path.lexists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata of a directory written by :func:`save_variables`."""
    meta_path = os.path.join(os.fspath(path), METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise ValueError(f"{path!r} is not a directory written by `xaijax convert` / "
                         f"save_variables (no {METADATA_FILE})")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format version {meta.get('version')} is newer than this "
                         f"xaijax reads ({FORMAT_VERSION}); upgrade xaijax")
    return meta


def load_variables(path: str, model) -> Dict[str, Any]:
    """Variables saved by :func:`save_variables`, checked against ``model``.

    Args:
      path: the directory.
      model: the :class:`~xaijax.models.Model` they are for (its architecture name and variable
        shapes must match the checkpoint's).

    Returns:
      the variables pytree (numpy leaves), ready for ``model.replace_variables``.

    Raises:
      ValueError: the checkpoint holds another architecture, another number of classes or
        differently shaped variables (the message names which).
    """
    path = os.path.abspath(os.fspath(path))
    meta = read_metadata(path)
    name = model.spec.name
    if meta.get("model") != name:
        raise ValueError(f"{path} holds variables of {meta.get('model')!r}, not {name!r}: load it "
                         f"with xj.models.get({meta.get('model')!r}, weights=...)")
    nc = meta.get("num_classes")
    if meta.get("shapes", {}) != _signature(model.variables) and nc is not None and \
            nc != model.spec.num_classes:
        raise ValueError(f"{path} holds a {name} with {nc} classes; the model has "
                         f"{model.spec.num_classes}: pass num_classes={nc}")
    return load_tree(path, name, model.variables)


def load_tree(path: str, name: str, template: Any) -> Any:
    """A pytree saved by :func:`save_variables` under ``spec_name=name``, checked against
    ``template`` (same structure and leaf shapes) and returned with its structure.

    Raises:
      ValueError: the directory holds another ``name`` or differently shaped leaves (the
        message names the first).
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    meta = read_metadata(path)
    if meta.get("model") != name:
        raise ValueError(f"{path} holds {meta.get('model')!r}, not {name!r}")
    expected = _signature(template)
    saved = meta.get("shapes", {})
    if saved != expected:
        _raise_mismatch(path, saved, expected)
    restored = ocp.PyTreeCheckpointer().restore(os.path.join(path, VARIABLES_DIR))
    restored = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), restored)
    got = _signature(restored)
    if got != expected:
        _raise_mismatch(path, got, expected)
    # same tree structure as the template (orbax may restore mappings as plain dicts)
    treedef = jax.tree_util.tree_structure(template)
    flat = {_keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(restored)[0]}
    leaves = [flat[_keystr(p)] for p, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _raise_mismatch(path: str, saved: Mapping[str, List[int]],
                    expected: Mapping[str, List[int]]) -> None:
    for k in expected:
        if k not in saved:
            raise ValueError(f"{path}: missing variable {k!r} (shape {tuple(expected[k])})")
        if list(saved[k]) != list(expected[k]):
            raise ValueError(f"{path}: variable {k!r} has shape {tuple(saved[k])}, the model "
                             f"expects {tuple(expected[k])}")
    extra = sorted(set(saved) - set(expected))
    raise ValueError(f"{path}: unexpected variable {extra[0]!r}" if extra else
                     f"{path}: variables do not fit the model")


def describe(path: str) -> Tuple[str, Optional[int]]:
    """``(architecture name, number of classes)`` of a saved variables directory."""
    meta = read_metadata(path)
    return meta["model"], meta.get("num_classes")
