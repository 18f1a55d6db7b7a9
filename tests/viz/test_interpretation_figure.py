"""xj.viz.interpretation_figure: the Oramas et al. 2019 pictures (photo, ground-truth mask, the
top-k feature heatmaps titled with (layer, filter) and score, the average images) on a tiny
untrained sequential CNN fitted on a few flowers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax import interpretation as xi
from xaijax.models.vgg import Sequential
from tests.interpretation.test_relevant import C, ITEMS
from tests.viz.test_compare import _not_blank

pytest.importorskip("matplotlib")  # the test extra installs it (CI fails a skip)


@pytest.fixture(scope="module")
def oramas():
    module = Sequential(items=ITEMS)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    model = xj.models.wrap(module, variables, input_size=(16, 16), num_classes=C,
                           mean=(0.5,) * 3, std=(0.5,) * 3, name="tiny")
    d = xj.data.flowers(12, "single6", size=16, seed=2)
    x = ((d["images"] - 0.5) / 0.5).astype(np.float32)
    fit = xi.fit_relevant_filters(model, x, d["labels"] % C, mu=1.0, batch_size=12)
    it = xi.explain_by_interpretation(model, x[:2], fit, k=2)
    avg = xi.average_images(model, d["images"], fit, inputs=x, top=4)
    return d, fit, it, avg


def test_interpretation_figure_layout_titles_and_pixels(oramas):
    d, fit, it, avg = oramas
    few = dict(list(avg.items())[:3])
    assert len(few) >= 2, "the fit found fewer than two relevant filters"
    fig = xj.viz.interpretation_figure(d["images"][:2], it, few, d["masks"][:2], fit=fit,
                                       class_names=[f"c{j}" for j in range(C)])
    axes = [a for a in fig.axes if a.images]  # the subfigures' axes included
    assert len(axes) == 2 * (1 + 1 + 2) + len(few)  # photo, mask, k=2 heatmaps; the patches
    titles = [a.get_title() for a in axes]
    for j in range(2):
        row = titles[4 * j:4 * j + 4]
        assert row[0] == f"ĵ = c{int(it.target[j])}" and row[1] == "ground truth"
        for r in range(2):
            ly, f = fit.pair(int(it.features[j, r]))
            assert row[2 + r] == f"#{r + 1} {ly}/{f}\nscore {float(it.scores[j, r]):.3g}"
    assert titles[8:] == [f"{ly}/{f}" for ly, f in few]
    # each cell shows what it names: the photo, the mask, the heatmap scaled to its maximum
    np.testing.assert_allclose(axes[0].images[0].get_array(), d["images"][0], atol=1e-6)
    np.testing.assert_array_equal(axes[1].images[0].get_array(), d["masks"][0])
    np.testing.assert_allclose(axes[2].images[0].get_array(),
                               xj.viz.plots.display_map(np.asarray(it.heatmaps[0, 0]), False))
    img = xj.viz.figure_image(fig)  # draws it: the extents below are the laid-out ones
    assert max(a.get_window_extent().y1 for a in axes[8:]) < min(
        a.get_window_extent().y0 for a in axes[:8])  # the patches' row is under the images
    assert img.shape[:2] == (round(fig.get_figheight() * 100), round(fig.get_figwidth() * 100))
    _not_blank(img, inked=0.1)


def test_interpretation_figure_groups_and_errors(oramas):
    d, fit, it, _ = oramas
    fig = xj.viz.interpretation_figure(d["images"][:2], {"stride_fix": it, "again": it})
    axes = [a for a in fig.axes if a.images]
    assert len(axes) == 2 * (1 + 2 * 2) and not fig.subfigs  # no mask column, no patch row
    assert axes[3].get_title().startswith("again #1\nL")  # layers unnamed without fit
    with pytest.raises(ValueError, match="N = 2"):
        xj.viz.interpretation_figure(d["images"][:3], it)
    with pytest.raises(ValueError, match="masks must be"):
        xj.viz.interpretation_figure(d["images"][:2], it, masks=d["masks"][:1])
