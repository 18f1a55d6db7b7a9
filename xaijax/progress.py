"""Progress bars for long work, on the host and from inside compiled programs.

Long work shows a tqdm bar on stderr: host loops (:func:`xaijax.evaluate`,
:func:`xaijax.viz.compare`, the data sets, the CLI) through :func:`bar`, and the inner loops of
a compiled method (the optimisation steps of FGVis, DSSR, meaningful and extremal perturbation;
the chunks of model calls of RISE, LIME, SISE, Kernel SHAP, Shapley sampling and occlusion)
through :func:`tick`, a :func:`jax.debug.callback` that the method adds only when
its static option ``progress=True``: with ``progress=False`` (every method's default) the
compiled program is exactly the one without progress, and nothing is printed. The CLI turns
progress on when stderr is a terminal and ``--quiet`` is not given; :func:`shown` is that rule
for a ``progress=None`` argument.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

_BARS: Dict[str, Any] = {}


def shown(progress: Optional[bool]) -> bool:
    """``progress`` as given, or when ``None`` whether stderr is a terminal (an interactive
    run; a pipe, a file, CI or a notebook's captured stderr stay quiet)."""
    return sys.stderr.isatty() if progress is None else bool(progress)


def bar(total: int, show: bool, unit: str = "batch", desc: str = ""
        ) -> Callable[[Optional[str]], None]:
    """A host-side bar: ``step(description)`` advances it by one (``step(None)`` closes it);
    when ``show`` is false a no-op that prints nothing.

    Args:
      total: number of steps.
      show: draw the bar (see :func:`shown`).
      unit, desc: tqdm's unit and initial description.
    """
    if not show:
        return lambda desc=None: None
    from tqdm import tqdm

    b = tqdm(total=total, unit=unit, desc=desc or None, file=sys.stderr)

    def step(description: Optional[str] = "") -> None:
        if description is None:
            b.close()
            return
        if description:
            b.set_description(description)
        b.update(1)

    return step


def tick(step: Any, total: Any, desc: str, enabled: bool) -> None:
    """Inside a traced loop: report that step ``step`` (0-based, traced) of ``total`` (an int,
    or traced where the number of steps depends on the data) is done.

    Adds a :func:`jax.debug.callback` to the program only when ``enabled`` (a static, Python
    bool); otherwise adds nothing. On the host the callback advances the tqdm bar named
    ``desc`` and closes it after the last step; under :func:`jax.vmap` every image reports and
    the bar follows the furthest one. A new run (a step lower than the bar's) starts a new bar.
    """
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False (a static option); got {enabled!r}")
    if not enabled:
        return
    jax.debug.callback(functools.partial(_advance, desc=desc), step, total)


def _advance(step: Any, total: Any, *, desc: str) -> None:
    from tqdm import tqdm

    done = int(np.max(np.asarray(step))) + 1
    total = int(np.max(np.asarray(total)))
    b = _BARS.get(desc)
    if b is not None and done < b.n:
        b.close()
        b = None
    if b is None:
        b = _BARS[desc] = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
    if done > b.n:
        b.update(done - b.n)
    if done >= total:
        b.close()
        _BARS.pop(desc, None)
