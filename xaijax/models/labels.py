"""Class names of the zoo's label sets (ImageNet-1k ships with the package).

``imagenet_classes.txt`` holds the 1000 ILSVRC-2012 class names in the standard index order (the
order of the sorted WordNet ids, which every ImageNet checkpoint uses), one per line, in the
short unique form torchvision uses (``"Egyptian cat"``, ``"espresso"``, ``"crane bird"`` for
class 134 and ``"crane"`` for 517, ...), so each name maps to exactly one index.

Examples:
  >>> from xaijax.models.labels import class_index, class_name
  >>> class_index("Egyptian Cat"), class_name(967)
  (285, 'espresso')
"""

from __future__ import annotations

import difflib
import functools
import os
from typing import Dict, Tuple

_FILES = {"imagenet": "imagenet_classes.txt"}


@functools.lru_cache(maxsize=None)
def labels(name: str = "imagenet") -> Tuple[str, ...]:
    """All class names of a label set, in index order."""
    if name not in _FILES:
        raise ValueError(f"unknown label set {name!r}; available: {sorted(_FILES)}")
    path = os.path.join(os.path.dirname(__file__), _FILES[name])
    with open(path, encoding="utf-8") as f:
        out = tuple(line.strip() for line in f if line.strip())
    return out


@functools.lru_cache(maxsize=None)
def _index(name: str) -> Dict[str, int]:
    return {lab.casefold(): i for i, lab in enumerate(labels(name))}


def class_name(i: int, name: str = "imagenet") -> str:
    """The name of class ``i``."""
    labs = labels(name)
    if isinstance(i, bool) or not isinstance(i, (int,)) and not hasattr(i, "__index__"):
        raise TypeError(f"class index must be an int; got {type(i).__name__}")
    i = int(i)
    if not 0 <= i < len(labs):
        raise ValueError(f"class index {i} out of range for {name} (0..{len(labs) - 1})")
    return labs[i]


def class_index(label: str, name: str = "imagenet") -> int:
    """The index of a class name (case-insensitive, surrounding spaces ignored).

    Raises:
      ValueError: unknown name; the message lists the closest names.
    """
    key = " ".join(str(label).split()).casefold()
    idx = _index(name)
    if key in idx:
        return idx[key]
    labs = labels(name)
    close = difflib.get_close_matches(key, list(idx), n=5, cutoff=0.6)
    close += [k for k in idx if key and key in k and k not in close]
    shown = [f"{labs[idx[k]]!r} ({idx[k]})" for k in close[:8]]
    raise ValueError(f"unknown {name} class name {label!r}"
                     + (f"; did you mean {', '.join(shown)}?" if shown else
                        f"; see xaijax.models.labels.labels({name!r}) for all "
                        f"{len(labs)} names"))
