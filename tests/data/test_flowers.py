"""Synthetic an8Flower-style data (Oramas et al. 2019, §4.3): the class is decided by the colour
of the masked part, and only there."""

import numpy as np
import pytest

import xaijax as xj


def test_shapes_determinism_and_balance():
    a = xj.data.flowers(48, "double12", size=32, seed=5)
    b = xj.data.flowers(48, "double12", size=32, seed=5)
    c = xj.data.flowers(48, "double12", size=32, seed=6)
    for k in ("images", "labels", "masks", "parts"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])
    assert a["images"].shape == (48, 32, 32, 3) and a["images"].dtype == np.float32
    assert a["masks"].shape == (48, 32, 32) and a["masks"].dtype == bool
    assert 0.0 <= a["images"].min() and a["images"].max() <= 1.0
    np.testing.assert_array_equal(np.bincount(a["labels"], minlength=12), 4)
    np.testing.assert_array_equal(a["parts"], a["labels"] % 2)
    s = xj.data.flowers(18, "single6", size=32, seed=0)
    assert s["num_classes"] == 6 and (s["parts"] == 0).all()
    np.testing.assert_array_equal(np.bincount(s["labels"]), 3)


@pytest.mark.parametrize("variant", ["single6", "double12"])
def test_the_masked_part_carries_the_class_colour_and_nothing_else_does(variant):
    d = xj.data.flowers(60, variant, size=64, seed=1)
    colours = xj.data.CLASS_COLOURS
    colour = d["labels"] if variant == "single6" else d["labels"] // 2
    for img, m, c in zip(d["images"], d["masks"], colour):
        assert m.sum() >= 20  # the discriminative part is visible
        # chromaticity (colour up to brightness) is lighting invariant
        chrom = img / np.maximum(img.sum(-1, keepdims=True), 1e-6)
        ref = colours / colours.sum(-1, keepdims=True)
        inside = np.median(chrom[m], axis=0)
        assert np.argmin(np.abs(ref - inside).sum(-1)) == c
        # saturated class colours appear nowhere outside the mask (beyond a rim of noise)
        sat = img.max(-1) - img.min(-1)
        assert np.mean(sat[~m] > 0.45) < 0.01


def test_double12_part_is_the_centre_or_the_stem():
    d = xj.data.flowers(24, "double12", size=64, seed=2)
    yy, xx = np.mgrid[:64, :64]
    for m, part in zip(d["masks"], d["parts"]):
        cy, cx = yy[m].mean(), xx[m].mean()
        spread = np.hypot(yy[m] - cy, xx[m] - cx).max()
        if part == 0:  # a disc: compact
            assert spread < 12
        else:  # stem and leaf hang below the centre disc
            assert cy > 30


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        xj.data.flowers(4, "triple")
    with pytest.raises(ValueError, match="n must be a positive int"):
        xj.data.flowers(0)
    with pytest.raises(ValueError, match="size must be an int >= 16"):
        xj.data.flowers(4, size=8)
