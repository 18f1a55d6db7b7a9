"""Canonizers: pure rewrites of a model's variables that put it in a form rules expect.

:func:`merge_batchnorm` folds every BatchNorm that directly follows a convolution (or dense
layer) into that layer's kernel and bias, and turns the BatchNorm into an exact identity, so
LRP's linear-layer rules see the whole affine map ``z = W' a + b'`` (zennit's
``SequentialMergeBatchNorm`` / ``ResNetCanonizer``). The model's structure is unchanged: the
BatchNorm layer stays in place with ``scale = 1``, ``bias = 0``, ``mean = 0`` and
``var = 1 − eps`` (so ``(x − 0)·1/sqrt(var + eps) + 0 = x``). zennit leaves ``var = 1`` instead,
which scales by ``1/sqrt(1 + eps)``; the difference is a factor ``1 − 5·10⁻⁶`` per BatchNorm.
A convolution without bias (ResNet) gains a ``bias`` variable; :class:`~xaijax.nn.layers.Conv`
and :class:`~xaijax.nn.layers.Dense` use a ``bias`` variable whenever one is present.

The adjacency is read from the traced forward pass (:func:`layer_graph`): a BatchNorm is folded
when its input is exactly the output of a ``Conv``/``Dense`` that feeds nothing else, so the
rewrite never changes what any other layer sees. The logits of the canonized model equal the
original's to float32 rounding.

Examples:
  >>> import xaijax as xj, jax.numpy as jnp
  >>> m = xj.models.get("small_cnn", num_classes=10)
  >>> c, folded = merge_batchnorm(m)
  >>> bool(jnp.allclose(c(jnp.ones((1, 32, 32, 3))), m(jnp.ones((1, 32, 32, 3))), atol=1e-4))
  True

References:
  Montavon et al. 2019 (LRP overview, §10.3: fold BatchNorm before applying rules); zennit
  ``canonizers.SequentialMergeBatchNorm`` and ``torchvision.ResNetCanonizer``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xaijax.nn import layers as L

Array = jax.Array
Path = Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer call in forward order.

    Attributes:
      path: the flax module path (unique per layer module).
      tap: the layer's tap name (or ``None``).
      layer: the layer module (for its static configuration and pure ``forward``).
      inputs: for each input, the index of the node that produced it, or ``-1`` when it did not
        come from a layer (the model input or a non-layer op).
      consumers: indices of nodes that take this node's output as an input.
    """

    path: Path
    tap: Optional[str]
    layer: Any
    inputs: Tuple[int, ...]
    consumers: Tuple[int, ...]


def layer_graph(model, input_shape: Optional[Sequence[int]] = None) -> List[Node]:
    """The data flow between layers, found by tracing the model abstractly.

    Args:
      model: an xaijax :class:`~xaijax.models.Model`.
      input_shape: ``(N, H, W, C)``; default one image at the model's input size.

    Returns:
      the list of :class:`Node` in forward order.
    """
    if input_shape is None:
        input_shape = (1, *model.spec.input_size, model.spec.in_channels)
    records: List[Tuple[Path, Any, List[int], int]] = []
    keep: List[Any] = []  # hold the traced values so their ids stay unique during the trace

    def icpt(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name != "__call__" or not isinstance(mod, L.Layer):
            return next_fun(*args, **kwargs)
        y = next_fun(*args, **kwargs)
        keep.extend(args)
        keep.append(y)
        records.append((tuple(mod.path), mod, [id(a) for a in args], id(y)))
        return y

    def run(variables, x):
        with nn.intercept_methods(icpt):
            return model.module.apply(variables, x)

    leaves = jax.tree_util.tree_leaves(model.variables)
    dtype = jnp.result_type(leaves[0]) if leaves else jnp.float32  # float64 copies trace in float64
    jax.eval_shape(run, model.variables, jax.ShapeDtypeStruct(tuple(input_shape), dtype))
    producer = {out: i for i, (_, _, _, out) in enumerate(records)}
    inputs = [tuple(producer.get(a, -1) for a in ins) for _, _, ins, _ in records]
    consumers: List[List[int]] = [[] for _ in records]
    for i, ins in enumerate(inputs):
        for j in ins:
            if j >= 0:
                consumers[j].append(i)
    return [Node(path=p, tap=m.tap, layer=m, inputs=inputs[i], consumers=tuple(consumers[i]))
            for i, (p, m, _, _) in enumerate(records)]


def _get(tree: Dict, path: Path) -> Dict:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: Dict, path: Path, value: Dict) -> Dict:
    """Copy of nested dict ``tree`` with ``tree[path] = value`` (no mutation)."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set(tree[path[0]], path[1:], value)
    return out


def foldable_batchnorms(graph: Sequence[Node]) -> List[Tuple[int, int]]:
    """``(linear node, batchnorm node)`` pairs where the BatchNorm's only input is the output of
    a Conv/Dense whose only consumer is that BatchNorm."""
    pairs = []
    for i, n in enumerate(graph):
        if isinstance(n.layer, L.BatchNorm) and len(n.inputs) == 1 and n.inputs[0] >= 0:
            j = n.inputs[0]
            lin = graph[j]
            if isinstance(lin.layer, L.LINEAR_TYPES) and lin.consumers == (i,):
                pairs.append((j, i))
    return pairs


def merge_batchnorm(model, graph: Optional[Sequence[Node]] = None):
    """Fold each BatchNorm into the Conv/Dense that feeds it (a pure rewrite of the variables).

    Args:
      model: an xaijax :class:`~xaijax.models.Model`.
      graph: its :func:`layer_graph` (computed when not given).

    Returns:
      ``(canonized model, folded)`` where ``folded`` is the tuple of BatchNorm module paths that
      are now identities. The input model is not modified.
    """
    if graph is None:
        graph = layer_graph(model)
    params = model.variables["params"]
    folded = []
    for j, i in foldable_batchnorms(graph):
        lin, bn = graph[j], graph[i]
        lp = _get(params, lin.path)
        bp = _get(params, bn.path)
        eps = bn.layer.epsilon
        scale = bp["scale"] / jnp.sqrt(bp["var"] + eps)
        kernel = lp["kernel"] * scale  # output features are the last axis (HWIO / (in, out))
        bias = lp.get("bias", jnp.zeros_like(bp["bias"]))
        new_lin = dict(lp, kernel=kernel, bias=(bias - bp["mean"]) * scale + bp["bias"])
        one = np.float32(1.0)
        new_bn = {"scale": jnp.ones_like(bp["scale"]), "bias": jnp.zeros_like(bp["bias"]),
                  "mean": jnp.zeros_like(bp["mean"]),
                  "var": jnp.full_like(bp["var"], one - np.float32(eps))}
        params = _set(params, lin.path, new_lin)
        params = _set(params, bn.path, new_bn)
        folded.append(bn.path)
    variables = dict(model.variables)
    variables["params"] = params
    return model.replace_variables(variables), tuple(folded)
