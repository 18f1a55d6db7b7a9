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

from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax

from xaijax.nn import layers as _layers
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

    composite.looks_for = tuple(t.__name__ for t, _ in items) + (("any layer",) if default
                                                                  else ())
    return composite


def by_name(mapping: Mapping[str, Rule], fallback: Optional[Composite] = None) -> Composite:
    """Composite choosing a rule by tap name, falling back to another composite."""
    table = dict(mapping)

    def composite(layer: Layer) -> Optional[Rule]:
        if layer.tap is not None and layer.tap in table:
            return table[layer.tap]
        return fallback(layer) if fallback is not None else None

    composite.looks_for = tuple(f"the layer tapped {t!r}" for t in table) + (
        looks_for(fallback) if fallback is not None else ())
    return composite


def chain(*composites: Composite) -> Composite:
    """First composite that returns a rule wins."""

    def composite(layer: Layer) -> Optional[Rule]:
        for c in composites:
            r = c(layer)
            if r is not None:
                return r
        return None

    composite.looks_for = tuple(dict.fromkeys(t for c in composites for t in looks_for(c)))
    return composite


def looks_for(composite: Composite) -> Tuple[str, ...]:
    """What a composite matches, as names (layer types, taps), for error messages."""
    return tuple(getattr(composite, "looks_for", ()))


class RulesMatchedNothing(ValueError):
    """A composite applied to no layer: the backward pass would silently be the gradient."""


def _fix_hint(wanted: Sequence[str]) -> str:
    types = [t for t in wanted if t.isidentifier() and hasattr(_layers, t)]
    if not types:
        return ("build the model from xaijax.nn.layers modules (a plain function such as "
                "flax.linen.relu cannot be intercepted)")
    return (f"build it from {', '.join('xaijax.nn.layers.' + t for t in types)} (a plain "
            f"function such as flax.linen.relu, or a flax.linen layer, cannot be intercepted)")


class _Interceptor:
    def __init__(self, capture, edits, rules, record_all, observe=None):
        self.capture = capture
        self.edits = edits
        self.rules = rules
        self.observe = observe
        self.record_all = record_all
        self.acts: Dict[str, Array] = {}
        self.layers: Dict[str, Layer] = {}
        self.seen: set = set()
        self.hits: Dict[type, int] = {}
        self.types: set = set()
        self.active = False

    def __call__(self, next_fun, args, kwargs, context):
        mod = context.module
        if self.active or context.method_name != "__call__" or not isinstance(mod, Layer):
            return next_fun(*args, **kwargs)
        self.types.add(type(mod).__name__)
        rule = self.rules(mod) if self.rules is not None else None
        if rule is None and mod.tap is None and self.observe is None:
            return next_fun(*args, **kwargs)
        if rule is None:
            y = next_fun(*args, **kwargs)
        else:
            self.hits[type(mod)] = self.hits.get(type(mod), 0) + 1
            self.active = True  # guard: the rule runs the layer's pure math, never the module
            try:
                y = rule(mod, _params(mod), *args)
            finally:
                self.active = False
        if self.observe is not None:
            self.active = True
            try:
                self.observe(mod, _params(mod), args, y)
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


def _params(mod: Layer) -> dict:
    return dict(mod.variables.get("params", {})) if mod.has_variable else {}


Observer = Callable[[Layer, dict, Tuple[Array, ...], Array], None]


def forward(apply_fn: Callable[[Array], Array], x: Array, *,
            capture: Union[Iterable[str], bool] = (),
            edits: Optional[Mapping[str, Edit]] = None,
            rules: Optional[Composite] = None,
            require: Optional[Sequence[type]] = None,
            observe: Optional[Observer] = None,
            model_name: str = "the model") -> Tuple[Array, Dict[str, Array]]:
    """Run ``apply_fn(x)`` (a linen ``apply``) with taps recorded/edited and rules swapped in.

    Args:
      apply_fn: function of ``x`` that applies a linen model built from :mod:`xaijax.nn.layers`.
      x: the input batch.
      capture: tap names to record, or ``True`` for every tap.
      edits: ``{tap: fn}``; ``fn`` maps the recorded activation to the one passed on.
      rules: a composite choosing a backward rule per layer. A composite that matches no layer
        is an error (:class:`RulesMatchedNothing`): the method would silently return the plain
        gradient.
      require: layer types of which at least one must have been given a rule (default: any
        layer), e.g. ``(ReLU, ReLU6)`` for guided backprop, whatever else the composite holds.
      observe: ``observe(layer, params, inputs, output)`` called for every xaijax layer the
        forward pass runs, without changing anything (read a layer's biases, count layers).
      model_name: named in the error messages.

    Returns:
      ``(output, {tap: activation})`` with activations as computed *before* any edit.
    """
    record_all = capture is True
    cap = frozenset() if capture is True or capture is False else frozenset(capture)
    icpt = _Interceptor(cap, dict(edits or {}), rules, record_all, observe)
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
    if rules is not None:
        wanted = tuple(s.__name__ for t in require for s in (t.__subclasses__() or [t])
                       ) if require else looks_for(rules)
        hit = any(issubclass(t, tuple(require)) for t in icpt.hits) if require else bool(
            icpt.hits)
        if not hit:
            what = ", ".join(wanted) if wanted else "its layers"
            found = sorted(icpt.types)
            raise RulesMatchedNothing(
                f"the backward rules look for {what}, but {model_name} has no such xaijax "
                f"layer, so the result would silently be the plain gradient"
                + (f" (xaijax layers it has: {found})" if found else
                   " (it runs no xaijax layer at all)")
                + f"; {_fix_hint(wanted)}")
    return out, icpt.acts


def list_taps(apply_fn: Callable[[Array], Array], x_shape: Sequence[int],
              dtype: Any = jax.numpy.float32) -> Dict[str, Tuple]:
    """Ordered ``{tap: (shape, layer type name)}`` found by tracing ``apply_fn`` abstractly
    on inputs of ``x_shape`` and ``dtype``."""
    found: Dict[str, Tuple] = {}

    def run(x):
        _, acts = _forward_all(apply_fn, x, found)
        return acts

    jax.eval_shape(run, jax.ShapeDtypeStruct(tuple(x_shape), dtype))
    return found


def _forward_all(apply_fn, x, found):
    icpt = _Interceptor(frozenset(), {}, None, True)
    with nn.intercept_methods(icpt):
        out = apply_fn(x)
    for name, a in icpt.acts.items():
        found[name] = (tuple(a.shape), type(icpt.layers[name]).__name__)
    return out, icpt.acts
