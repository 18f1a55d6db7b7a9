"""xj.evaluate and `xaijax evaluate`: the table equals the metrics called by hand."""

import csv

import jax
import numpy as np
import pytest

import xaijax as xj


@pytest.fixture(scope="module")
def setup():
    m = xj.models.get("small_cnn", num_classes=6)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 32, 32, 3))
    masks = np.zeros((5, 32, 32), bool)
    masks[:, 4:20, 6:30] = True
    return m, x, masks


def test_table_equals_the_metrics_called_by_hand(setup):
    m, x, masks = setup
    t = xj.evaluate(m, x, methods=["gradient", ("gradcam", {"tap": "relu3"})],
                    metrics=["deletion", "pointing_game", "drop"], masks=masks, batch_size=2)
    top = np.argmax(np.asarray(m(x)), -1)
    np.testing.assert_array_equal(t.target, top)
    ex = xj.explain(m, x, top, method="gradcam", tap="relu3")
    np.testing.assert_allclose(t.values[("gradcam", "deletion")],
                               xj.metrics.deletion(m, x, ex.heatmap, top).auc, rtol=1e-5)
    np.testing.assert_allclose(t.values[("gradcam", "pointing_game")],
                               xj.metrics.pointing_game(ex.heatmap, masks), rtol=1e-6)
    np.testing.assert_allclose(t.values[("gradcam", "drop")],
                               xj.metrics.drop_increase(m, x, ex.heatmap, top).drop, rtol=1e-5)
    v = t.values[("gradient", "drop")]
    assert t.mean[0, 2] == pytest.approx(v.mean())
    assert t.sem[0, 2] == pytest.approx(v.std(ddof=1) / np.sqrt(5))
    assert t.methods == ("gradient", "gradcam") and t.metrics == ("deletion", "pointing_game",
                                                                   "drop")
    text = str(t)
    assert "deletion ↓" in text and "pointing_game ↑" in text and "gradcam" in text


def test_batch_size_does_not_change_the_values_and_keys_are_per_method(setup):
    m, x, _ = setup
    kw = dict(methods=[("rise", {"num_masks": 16}), "gradient"], metrics=["insertion"])
    a = xj.evaluate(m, x, 1, batch_size=5, **kw)
    b = xj.evaluate(m, x, 1, batch_size=2, **kw)
    np.testing.assert_allclose(a.values[("gradient", "insertion")],
                               b.values[("gradient", "insertion")], rtol=1e-6)
    again = xj.evaluate(m, x, 1, batch_size=5, **kw)
    np.testing.assert_array_equal(a.values[("rise", "insertion")],
                                  again.values[("rise", "insertion")])
    c = xj.evaluate(m, x, 1, batch_size=5, key=jax.random.PRNGKey(1), **kw)
    assert not np.allclose(a.values[("rise", "insertion")], c.values[("rise", "insertion")])


def test_max_sensitivity_through_evaluate_equals_the_metric(setup):
    m, x, _ = setup
    t = xj.evaluate(m, x[:2], 1, methods=["gradient"], metrics=["max_sensitivity"],
                    key=jax.random.PRNGKey(3))
    kb = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 1000), 0)
    np.testing.assert_allclose(t.values[("gradient", "max_sensitivity")],
                               xj.metrics.max_sensitivity(m, x[:2], 1, "gradient", key=kb),
                               rtol=1e-5)


def test_same_method_twice_gets_labels_from_its_options(setup):
    m, x, _ = setup
    t = xj.evaluate(m, x[:2], methods=[("gradcam", {"tap": "relu3"}), ("gradcam", {})],
                    metrics=["deletion"])
    assert t.methods == ("gradcam(tap='relu3')", "gradcam")


@pytest.mark.parametrize("kw,err,match", [
    (dict(methods=["gradient"], metrics=["pointing_game"]), ValueError, "pass masks="),
    (dict(methods=["gradient"], metrics=["nope"]), ValueError, "unknown metric"),
    (dict(methods=["nope"]), ValueError, "unknown method 'nope'"),
    (dict(methods=[("gradcam", {"steps": 3})]), TypeError, "no option"),
    (dict(methods=[]), ValueError, "methods is empty"),
    (dict(methods=["gradient", "gradient"]), ValueError, "listed twice"),
    (dict(methods=["gradient"], metrics=["miou"], masks=np.ones((5, 8, 8), bool)), ValueError,
     r"masks must have shape \(5, 32, 32\)"),
])
def test_bad_arguments_have_clear_errors(setup, kw, err, match):
    m, x, _ = setup
    with pytest.raises(err, match=match):
        xj.evaluate(m, x, **kw)


def test_csv_has_summary_and_per_image_rows(setup, tmp_path):
    m, x, _ = setup
    t = xj.evaluate(m, x[:3], methods=["gradient"], metrics=["deletion", "insertion"])
    rows = list(csv.DictReader(open(t.to_csv(str(tmp_path / "out" / "t.csv")))))
    assert len(rows) == 2 * (2 + 3)
    mean = [r for r in rows if r["metric"] == "insertion" and r["statistic"] == "mean"][0]
    assert float(mean["value"]) == pytest.approx(t.mean[0, 1], rel=1e-5)
    per = [float(r["value"]) for r in rows if r["metric"] == "deletion"
           and r["statistic"] == "value"]
    np.testing.assert_allclose(per, t.values[("gradient", "deletion")], rtol=1e-5)
