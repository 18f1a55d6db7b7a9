"""The adversarial explainer of Charachon et al. (survey §6, Eq. 27): two image-to-image
generators trained against a fixed binary classifier ``f``,

* the **similar** generator ``g_s``: ``f(g_s(x))`` keeps the decision ``f(x)``;
* the **adversarial** generator ``g_a``: ``f(g_a(x))`` takes the opposite decision,

kept close to each other, and the explanation is their difference (Eq. 27)::

    R(x) = |g_s(x) − g_a(x)|

:func:`train_adversarial_explainer` trains both with optax, in two stages (the survey's
description: the generators "sample from the same adversarial space" and "have minimal
differences in their learnt parameters"):

1. ``g_s`` minimises ``‖g_s(x) − x‖₁ + α·H(f(g_s(x)), ŷ)`` (reconstruct ``x`` and keep its
   decision ``ŷ = argmax f(x)``);
2. ``g_a`` starts from ``g_s``'s parameters and minimises
   ``‖g_a(x) − g_s(x)‖₁ + α·H(f(g_a(x)), 1 − ŷ) + β·‖θ_a − θ_s‖²`` (stay close to the similar
   image, in image and in parameters, while flipping the decision).

``‖·‖₁`` is the mean absolute difference over pixels and channels, in the classifier's
normalised input space; ``H(z, c) = max(0, m − (z_c − z_other))`` is a hinge on the logit
margin ``m``. :func:`adversarial_explainer` (registered as ``adversarial_explainer``) explains
with the trained pair, passed as the option ``explainer``; :func:`save_adversarial_explainer` /
:func:`load_adversarial_explainer` store them with orbax.

Generator: a small U-Net (two 2× down- and up-sampling levels, skip connections, 3×3 convs with
leaky ReLUs, ``width`` channels at full resolution) whose output is added to the input's logit
in pixel space, ``g(x) = normalise(σ(logit(p) + h(x)))`` with ``p`` the input's pixels in
[0, 1]: every generated image is a valid image, and the zero-initialised last layer (no bias)
makes both generators start as the identity. ``h`` has zero spatial mean per image and channel,
so a generator cannot recolour the whole image at once (see below).

Deviations from the paper (Charachon et al. 2020, arXiv:2012.07332; its text is not in
../shared/papers, the survey's §6 is the specification here): the paper's generators are
larger U-Nets on 224-px chest X-rays and start from scratch; here they start from the identity
(the residual logit output above) so that a few hundred optax steps on this CPU suffice; the
two stages are trained one after the other, without the paper's random geometric augmentations;
and the classification terms are hinges instead of cross-entropies. A first version (ReLUs,
cross-entropies, Adam 2e-3, 200 + 600 steps, 32 px flowers) flipped only 26 % of the held-out
decisions and spread the change outside the discriminative part (IoU of R with the centre mask
0.00 against the gradient's 0.70): a cross-entropy keeps pushing after the flip, a hinge stops
at the margin and leaves the L1 term to remove what the flip does not need. With ReLUs and
hinges, the L1 term of stage 1 silenced every unit, so ``g_a`` started from a constant ``h = 0``
without gradient and never moved (16 px); leaky ReLUs keep a gradient. Without the zero-mean
``h`` the adversarial generator first shifted every pixel (mean change 0.6-0.9) into a
collapse where all images got the same class (flips ~50 %); whether and when it escaped
depended on rounding: two runs of the same 32-px setting gave 99.6 % and 48.2 % flips.
With it: 99.2 % flipped, 100 % kept, IoU 0.703 vs the gradient's 0.696
(``benchmarks/adversarial_explainer.py``, seed 0).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from xaijax.methods.base import Explanation, logits_fn, num_classes_of, register
from xaijax.models.base import Model, check_finite, check_input

Array = jax.Array
_EPS = 1e-3
SAVE_NAME = "adversarial_explainer"


class Generator(nn.Module):
    """A small U-Net image-to-image generator in the classifier's normalised input space.

    Attributes:
      width: channels at full resolution (``2·width`` at 1/2, ``4·width`` at 1/4).
      mean, std: the classifier's per-channel normalisation (pixels ``p = x·std + mean``).
    """

    width: int = 8
    mean: Tuple[float, ...] = (0.5, 0.5, 0.5)
    std: Tuple[float, ...] = (0.5, 0.5, 0.5)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.width
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)

        def conv(h, f, name):
            return nn.leaky_relu(nn.Conv(f, (3, 3), padding="SAME", name=name)(h), 0.2)

        def down(h):
            return nn.avg_pool(h, (2, 2), (2, 2))

        def up(h):
            return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)

        s1 = conv(x, w, "enc1")
        s2 = conv(down(s1), 2 * w, "enc2")
        b = conv(conv(down(s2), 4 * w, "mid1"), 4 * w, "mid2")
        u2 = conv(jnp.concatenate([up(b), s2], -1), 2 * w, "dec2")
        u1 = conv(jnp.concatenate([up(u2), s1], -1), w, "dec1")
        h = nn.Conv(x.shape[-1], (1, 1), use_bias=False, kernel_init=nn.initializers.zeros,
                    name="out")(u1)
        h = h - jnp.mean(h, axis=(1, 2), keepdims=True)  # no change of the whole image
        p = jnp.clip(x * std + mean, _EPS, 1.0 - _EPS)
        return (jax.nn.sigmoid(jnp.log(p) - jnp.log1p(-p) + h) - mean) / std


@struct.dataclass
class AdversarialExplainer:
    """A trained pair of generators (a pytree: the variables are leaves, the module static).

    Attributes:
      generator: the :class:`Generator` module both use.
      similar: the variables of ``g_s`` (same decision).
      adversarial: the variables of ``g_a`` (opposite decision).
    """

    generator: Generator = struct.field(pytree_node=False)
    similar: Any
    adversarial: Any

    def similar_images(self, x: Array) -> Array:
        """``g_s(x)``, normalised like ``x``."""
        return self.generator.apply(self.similar, x)

    def adversarial_images(self, x: Array) -> Array:
        """``g_a(x)``, normalised like ``x``."""
        return self.generator.apply(self.adversarial, x)


def _validate(model, x, options: Mapping[str, Any]) -> None:
    e = options.get("explainer")
    if e is None:
        raise ValueError("method 'adversarial_explainer' needs explainer=: the trained generators "
                         "(xj.methods.train_adversarial_explainer(model, images) or "
                         "xj.methods.load_adversarial_explainer(path))")
    if not isinstance(e, AdversarialExplainer):
        raise TypeError(f"method 'adversarial_explainer': explainer must be an "
                        f"AdversarialExplainer (from xj.methods.train_adversarial_explainer or "
                        f"load_adversarial_explainer); got {type(e).__name__}")
    _check_binary(model, x, "adversarial_explainer")
    c = len(e.generator.mean)
    if x.shape[-1] != c:
        raise ValueError(f"method 'adversarial_explainer': the generators take {c}-channel "
                         f"images; x has shape {tuple(x.shape)}")
    if x.shape[1] % 4 or x.shape[2] % 4:
        raise ValueError(f"method 'adversarial_explainer': the generators need H and W divisible "
                         f"by 4; got {x.shape[1]}x{x.shape[2]}")


def _check_binary(model, x, who: str) -> None:
    k = num_classes_of(logits_fn(model) if not isinstance(model, Model) else model, x)
    if k != 2:
        raise ValueError(f"{who}: the classifier must take a binary decision (2 logits; the "
                         f"adversarial generator flips it); it has {k} — train one on "
                         f"two classes, e.g. xj.train.train_classifier(..., classes=(0, 2))")


@register("adversarial_explainer", needs="function", validate=_validate,
          paper="Charachon et al. 2020 (survey §6, Eq. 27)", peer="")
def adversarial_explainer(model: Any, x: Array, target: Array,
                          explainer: Optional[AdversarialExplainer] = None) -> Explanation:
    """Explanation by a similar and an adversarial generator: ``R(x) = |g_s(x) − g_a(x)|``.

    The generators were trained against ``model``'s binary decision (see
    :func:`train_adversarial_explainer`), so the map explains the decision for whichever class
    ``target`` names: in a binary task "why class 0 rather than 1" and "why 1 rather than 0" are
    the same question, and ``target`` does not change ``R``.

    Args:
      model: the binary classifier (any ``f(x) -> logits`` with 2 logits, or a Model).
      x: ``(N, H, W, C)`` in the model's normalised space, ``H`` and ``W`` divisible by 4.
      target: recorded in the result (see above).
      explainer: the trained :class:`AdversarialExplainer`.

    Returns:
      an :class:`Explanation`: ``attribution`` ``R(x)`` ``(N, H, W, C)``, ``heatmap`` its sum over
      channels; ``extras``: ``similar`` and ``adversarial`` images (normalised), the model's
      ``decision`` on ``x`` and its classes on them, ``similar_class`` and
      ``adversarial_class``.

    References:
      Charachon, Hudelot, Cournède, Ruppli, Ardon, "Combining similarity and adversarial
      learning to generate visual explanation: application to medical image classification",
      ICPR 2020 (arXiv:2012.07332); survey (Ayyar et al. 2021) §6, Eq. 27.
    """
    f = logits_fn(model)
    xs = explainer.similar_images(x)
    xa = explainer.adversarial_images(x)
    r = jnp.abs(xs - xa)
    cls = jnp.argmax(f(jnp.concatenate([x, xs, xa])), axis=-1).astype(jnp.int32)
    n = x.shape[0]
    extras = {"similar": xs, "adversarial": xa, "decision": cls[:n],
              "similar_class": cls[n:2 * n], "adversarial_class": cls[2 * n:]}
    return Explanation(heatmap=jnp.sum(r, axis=-1), attribution=r, extras=extras,
                       target=jnp.asarray(target, jnp.int32), method="adversarial_explainer")


# ------------------------------------------------------------------------------------------------
# training


def _l1(a: Array, b: Array) -> Array:
    return jnp.mean(jnp.abs(a - b))


def _hinge(logits: Array, labels: Array, margin: Array) -> Array:
    """``mean(max(0, margin − (z_label − z_other)))`` for two logits."""
    z = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    other = jnp.take_along_axis(logits, (1 - labels)[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.relu(margin - (z - other)))


def _loss(params, gen: Generator, f, x, y, flip, ref_params, alpha, beta, margin):
    """Stage 1 (``flip = 0``; ``ref_params`` are not used): ``‖g(x) − x‖₁ + α·H(f(g(x)), y)``.
    Stage 2 (``flip = 1``): ``‖g(x) − g_ref(x)‖₁ + α·H(f(g(x)), 1 − y) + β·‖θ − θ_ref‖²``.
    ``flip`` is traced, so both stages run one compiled step."""
    gx = gen.apply(params, x)
    ref = jnp.where(flip, jax.lax.stop_gradient(gen.apply(ref_params, x)), x)
    prox = sum(jnp.sum((a - jax.lax.stop_gradient(b)) ** 2) for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)))
    labels = jnp.where(flip, 1 - y, y)
    logits = f(gx)
    dist = _l1(gx, ref)
    loss = dist + alpha * _hinge(logits, labels, margin) + flip * beta * prox
    return loss, (dist, jnp.mean(jnp.argmax(logits, -1) == labels))


@functools.partial(jax.jit, static_argnames=("gen", "f"), donate_argnums=(0, 1))
def _step(params, opt_state, gen, f, x, y, flip, ref_params, alpha, beta, margin, lr):
    """One Adam step (a Python loop dispatches the steps: convolutions inside a ``lax.scan``
    body ran ~70x slower on XLA:CPU, see :mod:`xaijax.train`)."""
    (loss, (dist, hit)), grads = jax.value_and_grad(_loss, has_aux=True)(
        params, gen, f, x, y, flip, ref_params, alpha, beta, margin)
    updates, opt_state = _ADAM.update(grads, opt_state)
    params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state, loss, dist, hit


_ADAM = optax.scale_by_adam()


class _Fn:
    """A model's logits function, hashable by identity of the model's module and variables
    (a static argument of the compiled step)."""

    def __init__(self, model):
        self.f = logits_fn(model)

    def __call__(self, x):
        return self.f(x)


def train_adversarial_explainer(model: Any, images: Array, *, steps_similar: int = 100,
                                steps_adversarial: int = 600, batch_size: int = 32,
                                learning_rate: float = 3e-3, alpha: float = 1.0,
                                beta: float = 1e-3, margin: float = 1.0, width: int = 8,
                                seed: int = 0,
                                mean: Optional[Tuple[float, ...]] = None,
                                std: Optional[Tuple[float, ...]] = None, log_every: int = 100,
                                log: Optional[Callable[[str, int, float, float, float],
                                                       None]] = None) -> AdversarialExplainer:
    """Train the similar and the adversarial generator against a fixed binary classifier.

    Args:
      model: the classifier (a Model or any ``f(x) -> logits`` with 2 logits); not trained.
      images: ``(N, H, W, C)`` training images in the model's normalised space (``H``, ``W``
        divisible by 4); their decisions ``ŷ = argmax f(x)`` are the labels.
      steps_similar, steps_adversarial: Adam steps of stage 1 (``g_s``) and stage 2 (``g_a``).
      batch_size: images per step.
      learning_rate: Adam's learning rate (constant).
      alpha: weight of the classification terms (keep / flip the decision).
      beta: weight of the parameter proximity ``‖θ_a − θ_s‖²`` of stage 2.
      margin: the logit margin of the classification hinge (see the module notes).
      width: the generators' channels at full resolution.
      seed: initial weights and mini-batch order.
      mean, std: the model's normalisation (default: a Model's spec; else 0.5).
      log_every: ``log`` is called every ``log_every`` steps of each stage (and after its last).
      log: ``log(stage, step, loss, L1 distance, fraction of the batch with the wanted class)``;
        ``stage`` is ``"similar"`` or ``"adversarial"``.

    Returns:
      an :class:`AdversarialExplainer` for :func:`adversarial_explainer`.

    References:
      Charachon et al. 2020; survey (Ayyar et al. 2021) §6 (see the module notes).
    """
    who = "train_adversarial_explainer"
    check_input(model if isinstance(model, Model) else None, images, name="images")
    check_finite(images, name="images")
    for what, v in (("steps_similar", steps_similar), ("steps_adversarial", steps_adversarial),
                    ("batch_size", batch_size), ("width", width), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{who}: {what} must be a positive int; got {v!r}")
    for what, v in (("learning_rate", learning_rate), ("alpha", alpha)):
        if not v > 0:
            raise ValueError(f"{who}: {what} must be > 0; got {v!r}")
    if not beta >= 0:
        raise ValueError(f"{who}: beta must be >= 0; got {beta!r}")
    if images.shape[1] % 4 or images.shape[2] % 4:
        raise ValueError(f"{who}: the generators need H and W divisible by 4; got "
                         f"{images.shape[1]}x{images.shape[2]}")
    _check_binary(model, images, who)
    c = images.shape[-1]
    if isinstance(model, Model):
        mean = model.spec.mean if mean is None else mean
        std = model.spec.std if std is None else std
    mean = tuple(float(v) for v in (mean if mean is not None else (0.5,) * c))
    std = tuple(float(v) for v in (std if std is not None else (0.5,) * c))
    gen = Generator(width=int(width), mean=mean, std=std)
    f = _Fn(model)
    x_all = jnp.asarray(images, jnp.float32)
    decide = jax.jit(lambda z: jnp.argmax(f(z), -1).astype(jnp.int32))
    y_all = jnp.concatenate([decide(x_all[i:i + 256]) for i in range(0, len(x_all), 256)])
    init = jax.jit(gen.init)(jax.random.PRNGKey(seed), x_all[:1])
    from xaijax.train import _batches
    batch_size = min(batch_size, len(x_all))
    hyper = (jnp.float32(alpha), jnp.float32(beta), jnp.float32(margin),
             jnp.float32(learning_rate))

    def stage(name, steps, params, ref, flip, batch_seed):
        params = jax.tree_util.tree_map(jnp.array, params)  # a copy: the steps donate it
        opt_state = _ADAM.init(params)
        idx = _batches(len(x_all), batch_size, steps, batch_seed)
        hist = []
        for i in range(steps):
            ids = jnp.asarray(idx[i])
            params, opt_state, loss, dist, hit = _step(
                params, opt_state, gen, f, x_all[ids], y_all[ids], jnp.float32(flip), ref,
                *hyper)
            hist.append((loss, dist, hit))
            if log is not None and ((i + 1) % log_every == 0 or i + 1 == steps):
                k = (i % log_every) + 1
                m = np.mean(np.asarray(hist[-k:], np.float64), axis=0)
                log(name, i + 1, float(m[0]), float(m[1]), float(m[2]))
        return params

    similar = stage("similar", steps_similar, init, init, 0.0, seed)
    adversarial = stage("adversarial", steps_adversarial, similar, similar, 1.0, seed + 1)
    return AdversarialExplainer(generator=gen, similar=similar, adversarial=adversarial)


# ------------------------------------------------------------------------------------------------
# save / load


def save_adversarial_explainer(explainer: AdversarialExplainer, path: str, *,
                               overwrite: bool = False) -> str:
    """Save both generators with orbax (:func:`xaijax.io.save_variables`) and the generator's
    configuration. Returns the absolute path written."""
    from xaijax.io.checkpoint import save_variables

    g = explainer.generator
    tree = {"similar": explainer.similar, "adversarial": explainer.adversarial}
    return save_variables(os.fspath(path), tree, SAVE_NAME, overwrite=overwrite,
                          extra={"generator": {"width": g.width, "mean": list(g.mean),
                                               "std": list(g.std)}})


def load_adversarial_explainer(path: str) -> AdversarialExplainer:
    """The generators saved by :func:`save_adversarial_explainer`."""
    from xaijax.io.checkpoint import load_tree, read_metadata

    meta = read_metadata(path)
    if meta.get("model") != SAVE_NAME or "generator" not in meta:
        raise ValueError(f"{path} holds {meta.get('model')!r}, not generators saved by "
                         f"save_adversarial_explainer")
    cfg = meta["generator"]
    gen = Generator(width=int(cfg["width"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    shapes = jax.eval_shape(gen.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 8, 8, len(gen.mean)), jnp.float32))
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    tree = load_tree(path, SAVE_NAME, {"similar": template, "adversarial": template})
    tree = jax.tree_util.tree_map(jnp.asarray, tree)
    return AdversarialExplainer(generator=gen, similar=tree["similar"],
                                adversarial=tree["adversarial"])
