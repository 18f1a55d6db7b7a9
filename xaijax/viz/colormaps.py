"""Colour maps as pure numpy (no matplotlib needed)."""

from __future__ import annotations

import numpy as np

# piecewise-linear control points (position, r, g, b), as in matplotlib's definitions
_JET = np.array([
    [0.0, 0.0, 0.0, 0.5], [0.11, 0.0, 0.0, 1.0], [0.125, 0.0, 0.0, 1.0],
    [0.34, 0.0, 0.86, 1.0], [0.35, 0.0, 0.9, 1.0], [0.375, 0.0, 1.0, 1.0],
    [0.64, 1.0, 1.0, 0.0], [0.65, 1.0, 0.96, 0.0], [0.66, 1.0, 0.91, 0.0],
    [0.89, 1.0, 0.0, 0.0], [0.91, 0.9, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]])
_BWR = np.array([[0.0, 0.0, 0.0, 1.0], [0.5, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
_GRAY = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
_HOT = np.array([[0.0, 0.04, 0.0, 0.0], [0.365, 1.0, 0.0, 0.0], [0.746, 1.0, 1.0, 0.0],
                 [1.0, 1.0, 1.0, 1.0]])
_TABLES = {"jet": _JET, "bwr": _BWR, "gray": _GRAY, "hot": _HOT}
COLORMAPS = tuple(_TABLES)


def apply_colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB in [0, 1] (shape + (3,))."""
    if name not in _TABLES:
        raise ValueError(f"unknown colormap {name!r}; available: {list(COLORMAPS)}")
    t = _TABLES[name]
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    rgb = np.stack([np.interp(v, t[:, 0], t[:, c]) for c in (1, 2, 3)], axis=-1)
    return rgb.astype(np.float32)
