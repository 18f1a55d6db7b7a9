"""Train zoo classifiers on the synthetic flowers and on sklearn's digits, with optax.

The trained models the interpretation (Oramas et al. 2019) and the adversarial explainer
(Charachon et al. 2020) need: :func:`train_classifier` trains ``small_cnn`` or ``small_vgg``
(:mod:`xaijax.models`) on

* ``"single6"`` / ``"double12"``: :func:`xaijax.data.flowers` (6 / 12 classes, with the
  ground-truth mask of the discriminative part), a training set drawn from ``seed`` and a
  held-out set drawn from ``test_seed``;
* ``"digits"``: sklearn's 8×8 digits (1,797 images, 10 classes), bilinearly upsampled to
  ``size`` and repeated over 3 channels; a fixed 75 / 25 split (independent of ``seed``).

Training is softmax cross-entropy with Adam and a cosine learning-rate decay, one compiled step
per mini-batch (compiled once for the run). Everything — the initial weights (:func:`xaijax.models.get`), the data and the
order of the mini-batches — is a function of ``seed``: the same call gives the same variables.

:func:`save` writes the model with orbax (:func:`xaijax.io.save_variables`) plus what
:func:`load` needs to rebuild it (architecture options, data, held-out accuracy).
``xaijax train`` is the command line for it.

Examples:
  >>> import xaijax as xj
  >>> d = xj.train.load_dataset("single6", size=16, n_train=12, n_test=6, classes=(0, 2))
  >>> d.x_train.shape, d.num_classes, sorted(set(d.y_train.tolist()))
  ((12, 16, 16, 3), 2, [0, 1])

  Training (minutes at full size; see ``benchmarks/train_models.py``)::

    r = xj.train.train_classifier("double12", "small_vgg", steps=1000, seed=0)
    r.accuracy                       # held-out accuracy
    xj.train.save(r, "d12_vgg")      # orbax; xj.train.load("d12_vgg") -> Model
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xaijax.models.base import Model, build

DATASETS = ("single6", "double12", "digits")
ARCHITECTURES = ("small_cnn", "small_vgg")
#: the held-out flowers are drawn from this seed unless ``test_seed`` says otherwise
TEST_SEED = 1_000_003
_DIGITS = 1797
_DIGITS_TEST = 450


class Dataset(NamedTuple):
    """Images in [0, 1] (``(n, size, size, 3)`` float32), labels ``(n,)`` int32 and, for the
    flowers, the masks ``(n, size, size)`` bool of the discriminative part (``None`` for
    digits), for training and held-out evaluation."""

    name: str
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    masks_train: Optional[np.ndarray]
    masks_test: Optional[np.ndarray]


class TrainResult(NamedTuple):
    """What :func:`train_classifier` returns.

    Attributes:
      model: the trained :class:`~xaijax.models.Model` (inputs normalised with its spec's
        mean/std: ``(images - 0.5) / 0.5``; :func:`normalise` does it).
      accuracy: held-out accuracy.
      train_accuracy: accuracy on the training set.
      losses: ``(steps,)`` training loss of each step's mini-batch.
      config: the options of the run (what :func:`save` stores and :func:`load` rebuilds from).
    """

    model: Model
    accuracy: float
    train_accuracy: float
    losses: np.ndarray
    config: Dict[str, Any]


def load_dataset(name: str, *, size: int = 32, n_train: Optional[int] = None,
                 n_test: Optional[int] = None,
                 seed: int = 0, test_seed: int = TEST_SEED,
                 classes: Optional[Sequence[int]] = None) -> Dataset:
    """Training and held-out images of ``name``.

    Args:
      name: ``"single6"``, ``"double12"`` (:func:`xaijax.data.flowers`) or ``"digits"``
        (sklearn's ``load_digits``; needs scikit-learn).
      size: image side (flowers are drawn at this size; digits are upsampled to it).
      n_train, n_test: number of training / held-out images (default 4,000 / 1,000 flowers).
        For digits they are taken from a fixed split of the 1,797 images (by default all:
        1,347 for training and 450 held out).
      seed: the training flowers' seed (digits: ignored; the split is fixed).
      test_seed: the held-out flowers' seed (must differ from ``seed``).
      classes: keep only these classes, relabelled ``0..len(classes)-1`` in the order given
        (e.g. ``(0, 2)`` for a binary task); the counts then refer to the kept images.

    Returns:
      a :class:`Dataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"data must be one of {DATASETS}; got {name!r}")
    if n_train is None:
        n_train = _DIGITS - _DIGITS_TEST if name == "digits" else 4000
    if n_test is None:
        n_test = _DIGITS_TEST if name == "digits" else 1000
    for what, v in (("n_train", n_train), ("n_test", n_test), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{what} must be a positive int; got {v!r}")
    if name == "digits":
        full = _digits(size)
        num_classes = 10
    else:
        if seed == test_seed:
            raise ValueError(f"seed {seed} is the held-out set's seed (test_seed); pick another "
                             f"seed or pass a different test_seed")
        from xaijax.data.flowers import VARIANTS
        num_classes = VARIANTS[name]
        full = None
    keep = _check_classes(classes, num_classes)
    frac = num_classes / len(keep)  # classes are equally frequent: draw enough to keep n
    if name == "digits":
        x, y, _ = full
        perm = np.random.default_rng(0).permutation(len(y))  # a fixed split
        tr, te = perm[:_DIGITS - _DIGITS_TEST], perm[_DIGITS - _DIGITS_TEST:]
        tr, te = tr[np.isin(y[tr], keep)], te[np.isin(y[te], keep)]
        if n_train > len(tr) or n_test > len(te):
            raise ValueError(f"digits has {len(tr)} training and {len(te)} held-out images of "
                             f"classes {list(keep)}; got n_train={n_train}, n_test={n_test}")
        tr, te = tr[:n_train], te[:n_test]
        xs, ys, ms = (x[tr], x[te]), (y[tr], y[te]), (None, None)
    else:
        from xaijax.data.flowers import flowers
        parts = []
        for n, s in ((n_train, seed), (n_test, test_seed)):
            d = flowers(int(math.ceil(n * frac)), variant=name, size=size, seed=s)
            sel = np.flatnonzero(np.isin(d["labels"], keep))[:n]
            parts.append((d["images"][sel], d["labels"][sel], d["masks"][sel]))
        xs, ys, ms = zip(*parts)
    relabel = np.full(num_classes, -1, np.int32)
    relabel[np.asarray(keep)] = np.arange(len(keep), dtype=np.int32)
    return Dataset(name, len(keep), xs[0], relabel[ys[0]], xs[1], relabel[ys[1]], ms[0], ms[1])


def _check_classes(classes, num_classes: int) -> Tuple[int, ...]:
    if classes is None:
        return tuple(range(num_classes))
    keep = tuple(int(c) for c in classes)
    if len(keep) < 2 or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= num_classes:
        raise ValueError(f"classes must be at least two distinct class indices in 0.."
                         f"{num_classes - 1}; got {tuple(classes)}")
    return keep


def _digits(size: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is in the test extra
        raise ImportError("data='digits' needs scikit-learn: pip install scikit-learn "
                          "(or pip install 'xaijax[train]')") from e
    d = load_digits()
    from xaijax.methods.base import interp_matrix

    img = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    r = interp_matrix(8, size, align_corners=False)  # bilinear, half-pixel centres
    img = np.clip(np.einsum("Hh,nhw,Ww->nHW", r, img, r), 0.0, 1.0).astype(np.float32)
    return np.repeat(img[..., None], 3, axis=-1), d.target.astype(np.int32), None


def normalise(model: Model, images: np.ndarray) -> jax.Array:
    """Images in [0, 1] ``(N, H, W, C)`` -> the model's normalised input (its spec's mean/std;
    no resizing: the images must already have the model's size)."""
    mean = np.asarray(model.spec.mean, np.float32)
    std = np.asarray(model.spec.std, np.float32)
    return jnp.asarray((np.asarray(images, np.float32) - mean) / std)


@jax.jit
def _predict(model: Model, x: jax.Array) -> jax.Array:
    return jnp.argmax(model.apply_fn(x), axis=-1)


def predict(model: Model, x: jax.Array, batch_size: int = 256) -> np.ndarray:
    """Predicted classes ``(N,)`` for a normalised batch, in chunks of ``batch_size``."""
    out = [np.asarray(_predict(model, x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.int32)


def accuracy(model: Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images`` (in [0, 1]) that ``model`` classifies as ``labels``."""
    return float(np.mean(predict(model, normalise(model, images)) == np.asarray(labels)))


def _batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` indices: consecutive epochs, each a fresh permutation."""
    rng = np.random.default_rng([seed, 7])
    epochs = -(-steps * batch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def train_classifier(data: str = "single6", arch: str = "small_cnn", *, steps: int = 1000,
                     batch_size: int = 64, learning_rate: float = 3e-3, seed: int = 0,
                     size: int = 32, width: int = 16, n_train: Optional[int] = None,
                     n_test: Optional[int] = None,
                     classes: Optional[Sequence[int]] = None, test_seed: int = TEST_SEED,
                     log_every: int = 100,
                     log: Optional[Callable[[int, float, float], None]] = None,
                     dataset: Optional[Dataset] = None) -> TrainResult:
    """Train a zoo classifier with optax; deterministic given ``seed``.

    Args:
      data: ``"single6"``, ``"double12"`` or ``"digits"`` (see :func:`load_dataset`).
      arch: ``"small_cnn"`` or ``"small_vgg"``.
      steps: optimisation steps (mini-batches).
      batch_size: images per step.
      learning_rate: Adam's peak learning rate (cosine-decayed to 0 over ``steps``).
      seed: initial weights, training flowers and mini-batch order.
      size: image side (the model's ``input_size``).
      width: channels of the first conv layer (the architectures double it per block).
      n_train, n_test: training and held-out images (defaults: :func:`load_dataset`'s).
      classes: train on these classes only, relabelled ``0..k-1`` (e.g. ``(0, 2)``: a binary
        classifier for :func:`xaijax.methods.train_adversarial_explainer`).
      test_seed: seed of the held-out flowers.
      log_every: ``log`` is called every ``log_every`` steps (and after the last).
      log: ``log(step, mean loss, mean mini-batch accuracy)`` over the steps since the last
        call.
      dataset: train on this :class:`Dataset` instead of loading ``data`` (its name is kept
        in the config).

    Returns:
      a :class:`TrainResult` (``.model``, ``.accuracy`` held out, ...).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}; got {arch!r}")
    for what, v in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every),
                    ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{what} must be a positive int; got {v!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    if dataset is None:
        dataset = load_dataset(data, size=size, n_train=n_train, n_test=n_test, seed=seed,
                               test_seed=test_seed, classes=classes)
    size = int(dataset.x_train.shape[1])
    builder = dict(num_classes=dataset.num_classes, width=int(width), size=size)
    model = build(arch, seed=seed, **builder)
    x_train = normalise(model, dataset.x_train)
    y_train = jnp.asarray(dataset.y_train)
    batch_size = min(batch_size, len(y_train))
    idx = _batches(len(y_train), batch_size, steps, seed)
    # optax.cosine_decay_schedule(learning_rate, steps), evaluated on the host
    lrs = (0.5 * learning_rate * (1.0 + np.cos(np.pi * np.arange(steps) / steps))).astype(
        np.float32)
    opt_state = _ADAM.init(model.variables)
    losses, accs = [], []
    for i in range(steps):
        model, opt_state, loss, acc = _train_step(model, opt_state, x_train, y_train, idx[i],
                                                  lrs[i])
        losses.append(loss)
        accs.append(acc)
        if log is not None and ((i + 1) % log_every == 0 or i + 1 == steps):
            k = (i % log_every) + 1
            log(i + 1, float(np.mean(losses[-k:])), float(np.mean(accs[-k:])))
    config = dict(data=dataset.name, arch=arch, steps=int(steps), batch_size=int(batch_size),
                  learning_rate=float(learning_rate), seed=int(seed), n_train=len(y_train),
                  n_test=len(dataset.y_test), test_seed=int(test_seed),
                  classes=None if classes is None else [int(c) for c in classes],
                  builder=builder)
    acc_test = accuracy(model, dataset.x_test, dataset.y_test)
    acc_train = accuracy(model, dataset.x_train, dataset.y_train)
    return TrainResult(model, acc_test, acc_train, np.asarray(losses, np.float32), config)


_ADAM = optax.scale_by_adam()


def _loss(variables, model: Model, x, y):
    logits = model.module.apply(variables, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _train_step(model: Model, opt_state, x_all, y_all, ids, lr):
    """One Adam step on the mini-batch ``x_all[ids]`` with learning rate ``lr`` (traced, so the
    schedule never recompiles; compiled once per architecture and shapes).

    The steps are dispatched from a Python loop, not a ``lax.scan``: on XLA:CPU the
    convolutions inside a while loop's body ran ~70x slower (small_cnn, batch 64: 7 s per step
    in a scan, 0.09 s of CPU time as a jitted step)."""
    (loss, acc), grads = jax.value_and_grad(_loss, has_aux=True)(
        model.variables, model, x_all[ids], y_all[ids])
    updates, opt_state = _ADAM.update(grads, opt_state)
    variables = jax.tree_util.tree_map(lambda v, u: v - lr * u, model.variables, updates)
    return model.replace_variables(variables), opt_state, loss, acc


# ------------------------------------------------------------------------------------------------
# save / load


def save(result: TrainResult, path: str, *, overwrite: bool = False) -> str:
    """Save a trained model with orbax (:func:`xaijax.io.save_variables`), with its run's
    config and held-out accuracy in the metadata, so :func:`load` rebuilds it.

    Returns:
      the absolute path written.
    """
    from xaijax.io.checkpoint import save_variables

    extra = {"train": dict(result.config, accuracy=float(result.accuracy),
                           train_accuracy=float(result.train_accuracy))}
    return save_variables(path, result.model.variables, result.model.spec.name,
                          overwrite=overwrite, extra=extra)


def load(path: str) -> Model:
    """The model saved by :func:`save` (architecture options from its metadata).

    Raises:
      ValueError: ``path`` was not written by :func:`save`.
    """
    from xaijax.io.checkpoint import load_variables, read_metadata

    meta = read_metadata(path)
    if "train" not in meta:
        raise ValueError(f"{path} was not written by xaijax.train.save (no training metadata); "
                         f"load it with xj.models.get({meta.get('model')!r}, weights=...)")
    model = build(meta["model"], random_init=False, **meta["train"]["builder"])
    return model.replace_variables(load_variables(path, model))


def metadata(path: str) -> Dict[str, Any]:
    """The training config and accuracies stored by :func:`save`."""
    from xaijax.io.checkpoint import read_metadata

    return dict(read_metadata(path).get("train", {}))


__all__ = ["DATASETS", "ARCHITECTURES", "TEST_SEED", "Dataset", "TrainResult", "load_dataset",
           "normalise", "predict", "accuracy", "train_classifier", "save", "load", "metadata"]
