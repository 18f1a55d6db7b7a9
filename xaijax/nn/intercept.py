"""The intervention layer: run a model while recording taps, editing taps and swapping rules.

Everything here acts at trace time through :func:`flax.linen.intercept_methods`, *inside* the
function being traced, so it composes with ``jit``, ``vmap`` and ``grad`` (see STYLE.md's note
on interceptors and jit caches).

A **rule** is a function ``rule(layer, params, *inputs) -> output`` that must compute the same
forward value as ``layer.forward(params, *inputs)`` and typically gives it a different backward
pass with ``jax.custom_vjp``. A **composite** maps a layer to its rule (or ``None`` for the
ordinary gradient). An **edit** maps a tap's activation to a new activation (``a + delta`` for
gradients with respect to a tap, ``a * mask`` for ablation, an identity with a filtered
backward pass for the FGVis defense).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax

from xaijax.nn.layers import Layer

Array = jax.Array
Rule = Callable[..., Array]
Composite = Callable[[Layer], Optional[Rule]]
Edit = Callable[[Array], Array]


def by_type(mapping: Mapping[type, Rule], default: Optional[Rule] = None) -> Composite:
    """Composite choosing a rule by layer type (first matching entry in insertion order)."""
    items = tuple(mapping.items())

    def composite(layer: Layer) -> Optional[Rule]:
        for typ, rule in items:
            if isinstance(layer, typ):
                return rule
        return default

    return composite


def by_name(mapping: Mapping[str, Rule], fallback: Optional[Composite] = None) -> Composite:
    """Composite choosing a rule by tap name, falling back to another composite."""
    table = dict(mapping)

    def composite(layer: Layer) -> Optional[Rule]:
        if layer.tap is not None and layer.tap in table:
            return table[layer.tap]
        return fallback(layer) if fallback is not None else None

    return composite


def chain(*composites: Composite) -> Composite:
    """First composite that returns a rule wins."""

    def composite(layer: Layer) -> Optional[Rule]:
        for c in composites:
            r = c(layer)
            if r is not None:
                return r
        return None

    return composite


class _Interceptor:
    def __init__(self, capture, edits, rules, record_all):
        self.capture = capture
        self.edits = edits
        self.rules = rules
        self.record_all = record_all
        self.acts: Dict[str, Array] = {}
        self.layers: Dict[str, Layer] = {}
        self.seen: set = set()
        self.active = False

    def __call__(self, next_fun, args, kwargs, context):
        mod = context.module
        if self.active or context.method_name != "__call__" or not isinstance(mod, Layer):
            return next_fun(*args, **kwargs)
        rule = self.rules(mod) if self.rules is not None else None
        if rule is None and mod.tap is None:
            return next_fun(*args, **kwargs)
        if rule is None:
            y = next_fun(*args, **kwargs)
        else:
            self.active = True  # guard: the rule runs the layer's pure math, never the module
            try:
                params = mod.variables.get("params", {}) if mod.has_variable else {}
                y = rule(mod, dict(params), *args)
            finally:
                self.active = False
        name = mod.tap
        if name is not None:
            self.seen.add(name)
            if self.record_all or name in self.capture:
                self.acts[name] = y
                self.layers[name] = mod
            if name in self.edits:
                y = self.edits[name](y)
        return y


def forward(apply_fn: Callable[[Array], Array], x: Array, *,
            capture: Union[Iterable[str], bool] = (),
            edits: Optional[Mapping[str, Edit]] = None,
            rules: Optional[Composite] = None) -> Tuple[Array, Dict[str, Array]]:
    """Run ``apply_fn(x)`` (a linen ``apply``) with taps recorded/edited and rules swapped in.

    Args:
      apply_fn: function of ``x`` that applies a linen model built from :mod:`xaijax.nn.layers`.
      x: the input batch.
      capture: tap names to record, or ``True`` for every tap.
      edits: ``{tap: fn}``; ``fn`` maps the recorded activation to the one passed on.
      rules: a composite choosing a backward rule per layer.

    Returns:
      ``(output, {tap: activation})`` with activations as computed *before* any edit.
    """
    record_all = capture is True
    cap = frozenset() if capture is True or capture is False else frozenset(capture)
    icpt = _Interceptor(cap, dict(edits or {}), rules, record_all)
    with nn.intercept_methods(icpt):
        out = apply_fn(x)
    if not record_all:
        missing = [n for n in cap if n not in icpt.acts]
        if missing:
            raise ValueError(f"tap(s) {sorted(missing)} were not reached in the forward pass")
    if edits:
        unused = [n for n in edits if n not in icpt.seen]
        if unused:
            raise ValueError(f"edit(s) for unknown tap(s) {sorted(unused)}")
    return out, icpt.acts


def list_taps(apply_fn: Callable[[Array], Array], x_shape: Sequence[int]) -> Dict[str, Tuple]:
    """Ordered ``{tap: (shape, layer type name)}`` found by tracing ``apply_fn`` abstractly."""
    found: Dict[str, Tuple] = {}

    def run(x):
        _, acts = _forward_all(apply_fn, x, found)
        return acts

    jax.eval_shape(run, jax.ShapeDtypeStruct(tuple(x_shape), jax.numpy.float32))
    return found


def _forward_all(apply_fn, x, found):
    icpt = _Interceptor(frozenset(), {}, None, True)
    with nn.intercept_methods(icpt):
        out = apply_fn(x)
    for name, a in icpt.acts.items():
        found[name] = (tuple(a.shape), type(icpt.layers[name]).__name__)
    return out, icpt.acts
