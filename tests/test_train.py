"""xaijax.train: a tiny training run learns far above chance and is reproducible from its seed;
orbax save / load round trip; the ``xaijax train`` command (issue 19, trained models).

Tiny settings (16 px, 384 training images, one compiled step shared by every run here) keep this
within the suite's budget; the full-size runs and their held-out accuracies are in
benchmarks/train_models.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import xaijax as xj
from xaijax import cli

TINY = dict(size=16, width=16, n_train=384, n_test=192, batch_size=32, learning_rate=3e-3)


def _leaves(model):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(model.variables)]


@pytest.fixture(scope="module")
def trained():
    """single6 small_cnn, 300 steps (held-out accuracy 0.96 / 0.98 / 0.88 / 0.98 for seeds
    0-3 when written)."""
    logs = []
    r = xj.train.train_classifier("single6", "small_cnn", steps=300, seed=0, log_every=150,
                                  log=lambda *a: logs.append(a), **TINY)
    return r, logs


def test_tiny_training_run_learns_far_above_chance(trained):
    r, logs = trained
    untrained = xj.models.get("small_cnn", num_classes=6, width=16, size=16, seed=0)
    data = xj.train.load_dataset("single6", size=16, n_train=384, n_test=192)
    before = xj.train.accuracy(untrained, data.x_test, data.y_test)
    assert before < 0.35 and r.accuracy > 0.6, (before, r.accuracy)  # chance: 1/6
    assert r.losses.shape == (300,) and r.losses[-20:].mean() < 0.5 * r.losses[:20].mean()
    assert [a[0] for a in logs] == [150, 300]
    assert r.model.spec.input_size == (16, 16) and r.model.spec.num_classes == 6


def test_training_is_reproducible_from_the_seed():
    a, b, c = (xj.train.train_classifier("single6", "small_cnn", steps=20, seed=s, **TINY)
               for s in (0, 0, 1))
    for u, v in zip(_leaves(a.model), _leaves(b.model)):
        np.testing.assert_array_equal(u, v)
    assert a.accuracy == b.accuracy
    assert max(np.abs(u - v).max() for u, v in zip(_leaves(a.model), _leaves(c.model))) > 1e-3


def test_save_load_round_trip(trained, tmp_path):
    a = trained[0]
    path = xj.train.save(a, tmp_path / "m")
    m = xj.train.load(path)
    for u, v in zip(_leaves(a.model), _leaves(m)):
        np.testing.assert_array_equal(u, v)
    meta = xj.train.metadata(path)
    assert meta["accuracy"] == a.accuracy and meta["data"] == "single6" and meta["seed"] == 0
    # the zoo loader reads it too, given the architecture options
    z = xj.models.get("small_cnn", weights=path, **meta["builder"])
    np.testing.assert_array_equal(_leaves(z)[0], _leaves(m)[0])
    with pytest.raises(FileExistsError, match="exists"):
        xj.train.save(a, path)


def test_dataset_options_and_errors():
    d = xj.train.load_dataset("double12", size=16, n_train=40, n_test=20, classes=(3, 0))
    assert d.num_classes == 2 and set(d.y_train.tolist()) == {0, 1} and len(d.y_test) == 20
    assert d.masks_test.shape == (20, 16, 16) and d.masks_test.any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="data must be one of"):
        xj.train.load_dataset("mnist")
    with pytest.raises(ValueError, match="classes must be at least two distinct"):
        xj.train.load_dataset("single6", classes=(1, 1))
    with pytest.raises(ValueError, match="held-out set's seed"):
        xj.train.load_dataset("single6", seed=xj.train.TEST_SEED)
    with pytest.raises(ValueError, match="arch must be one of"):
        xj.train.train_classifier("single6", "resnet50")


def test_cli_train_prints_progress_and_accuracy_and_saves(tmp_path, capsys):
    out = tmp_path / "cnn"
    rc = cli.main(["train", "--data", "single6", "--arch", "small_cnn", "--out", str(out),
                   "--steps", "20", "--size", "16", "--width", "16", "--batch-size", "32",
                   "--log-every", "10", "--n-train", "384", "--n-test", "192", "--lr", "0.003",
                   "--seed", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "step    10/20" in text and "step    20/20" in text
    acc = float(text.split("held-out accuracy ")[1].split()[0])
    m = xj.train.load(out)
    assert m.spec.name == "small_cnn" and m.spec.input_size == (16, 16)
    data = xj.train.load_dataset("single6", size=16, n_train=384, n_test=192)
    assert abs(xj.train.accuracy(m, data.x_test, data.y_test) - acc) < 1e-4
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["train", "--data", "single6", "--out", str(out)])


def test_digits_are_upsampled_to_three_channels_with_a_fixed_split():
    d = xj.train.load_dataset("digits", size=16)
    assert d.x_train.shape == (1347, 16, 16, 3) and d.x_test.shape == (450, 16, 16, 3)
    assert d.masks_test is None and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    np.testing.assert_array_equal(d.x_train[..., 0], d.x_train[..., 2])
    e = xj.train.load_dataset("digits", size=16, seed=5, n_test=100)
    np.testing.assert_array_equal(d.x_test[:100], e.x_test)  # independent of the seed


def test_small_vgg_is_a_deeper_tapped_zoo_model():
    m = xj.models.get("small_vgg", num_classes=12, size=32)
    convs = [t for t in m.taps if m.tap_type(t) == "Conv"]
    dense = [t for t in m.taps if m.tap_type(t) == "Dense"]
    assert len(convs) == 6 and dense == ["fc1", "fc2"]
    assert m.block_taps == ("relu1_2", "relu2_2", "relu3_2")
