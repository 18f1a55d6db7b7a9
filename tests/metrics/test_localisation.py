"""Localisation metrics against values worked out by hand on tiny maps (ties, all-zero maps,
objects on the border, the tolerance), the accept region against a brute-force distance, the
errors, and one compilation per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.metrics.localisation import accept_region, top_count, top_weights


def _mask(shape, *pixels):
    m = np.zeros(shape, bool)
    for p in pixels:
        m[p] = True
    return m


# ------------------------------------------------------------------------------------------------
# pointing game


def test_pointing_game_hit_miss_and_tolerance_boundary():
    h = np.zeros((1, 9, 9), np.float32)
    h[0, 4, 8] = 1.0
    g = _mask((1, 9, 9), (0, 4, 4))            # the object is 4 pixels left of the maximum
    pg = xj.metrics.pointing_game
    assert pg(h, g, tolerance=4).tolist() == [0.0]    # distance 4 is not < 4 (TorchRay)
    assert pg(h, g, tolerance=5).tolist() == [1.0]
    assert pg(h, g, tolerance=0).tolist() == [0.0]
    # diagonal: (3, 4) away, distance 5
    g2 = _mask((1, 9, 9), (0, 1, 4))
    assert pg(h, g2, tolerance=5).tolist() == [0.0]
    assert pg(h, g2, tolerance=6).tolist() == [1.0]
    # the maximum on the object is a hit at every tolerance, 0 included
    g3 = _mask((1, 9, 9), (0, 4, 8))
    assert pg(h, g3, tolerance=0).tolist() == pg(h, g3, tolerance=1).tolist() == [1.0]


def test_pointing_game_default_tolerance_is_15():
    h = np.zeros((2, 40, 40), np.float32)
    h[:, 20, 35] = 1.0
    g = _mask((2, 40, 40), (0, 20, 21), (1, 20, 20))    # 14 and 15 pixels away
    assert xj.metrics.pointing_game(h, g).tolist() == [1.0, 0.0]


def test_pointing_game_ties():
    h = np.zeros((1, 4, 4), np.float32)
    h[0, 0, 0] = h[0, 3, 3] = 2.0                    # two maxima; only (3, 3) is on the object
    g = _mask((1, 4, 4), (0, 3, 3))
    pg = xj.metrics.pointing_game
    assert pg(h, g, 0, ties="mean").tolist() == [0.5]
    assert pg(h, g, 0, ties="any").tolist() == [1.0]
    assert pg(h, g, 0, ties="first").tolist() == [0.0]   # (0, 0) comes first in row-major order
    h2 = h.copy()
    h2[0, 0, 0] = 1.0                                     # no tie: all three agree
    assert [pg(h2, g, 0, ties=t).tolist() for t in ("mean", "any", "first")] == [[1.0]] * 3


def test_pointing_game_all_zero_map_scores_chance():
    h = np.zeros((1, 5, 5), np.float32)
    g = _mask((1, 5, 5), (0, 0, 0))                       # a corner object
    # tolerance 2: the accept region is the corner and its 4-neighbours inside the image
    # (distance 1 < 2; the diagonal sqrt(2) < 2 too): (0,0), (0,1), (1,0), (1,1) -> 4 of 25
    assert xj.metrics.pointing_game(h, g, 2).tolist() == pytest.approx([4 / 25])
    assert xj.metrics.pointing_game(h, g, 0).tolist() == pytest.approx([1 / 25])
    assert xj.metrics.pointing_game(h, g, 2, ties="any").tolist() == [1.0]


def test_pointing_game_border_objects_do_not_wrap():
    h = np.zeros((2, 6, 6), np.float32)
    h[0, 0, 5] = 1.0                                      # top-right corner
    h[1, 5, 5] = 1.0
    g = _mask((2, 6, 6), (0, 0, 0), (1, 5, 2))            # top-left corner; bottom edge
    assert xj.metrics.pointing_game(h, g, 3).tolist() == [0.0, 0.0]   # 5 and 3 away
    assert xj.metrics.pointing_game(h, g, 4).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3, 5])
def test_accept_region_is_the_open_disk_dilation(tolerance):
    rng = np.random.default_rng(tolerance)
    m = rng.random((3, 11, 13)) < 0.04
    m[:, 0, 0] = True
    yy, xx = np.mgrid[:11, :13]
    want = np.zeros_like(m)
    for i in range(3):
        py, px = np.nonzero(m[i])
        d2 = (yy[..., None] - py) ** 2 + (xx[..., None] - px) ** 2
        want[i] = (d2 < max(tolerance, 1) ** 2).any(-1)
    np.testing.assert_array_equal(np.asarray(accept_region(jnp.asarray(m), tolerance)), want)


# ------------------------------------------------------------------------------------------------
# EBPG


def test_energy_pointing_game_by_hand():
    h = np.array([[[3.0, 1.0, 0.0], [0.0, -4.0, 2.0]],
                  [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]], np.float32)
    g = np.array([[[True, False, False], [False, True, True]],
                  [[True, True, False], [False, False, False]]])
    # image 0: the negative pixel inside G counts 0: (3 + 2) / (3 + 1 + 2); image 1: 2 / 6
    got = xj.metrics.energy_pointing_game(h, g)
    np.testing.assert_allclose(got, [5 / 6, 2 / 6], rtol=1e-6)


def test_energy_pointing_game_all_zero_or_negative_map_is_chance():
    h = np.stack([np.zeros((4, 4)), -np.ones((4, 4))]).astype(np.float32)
    g = np.zeros((2, 4, 4), bool)
    g[:, :, 0] = True                                     # the left column, on the border
    np.testing.assert_allclose(xj.metrics.energy_pointing_game(h, g), [0.25, 0.25])


# ------------------------------------------------------------------------------------------------
# mIoU and Bbox


def test_top_count_rounds_to_nearest():
    assert top_count(0.2, 1024) == 205            # 204.8
    assert top_count(0.15, 224 * 224) == 7526     # 7526.4
    assert top_count(0.0625, 8) == 1              # 0.5 rounds up
    assert top_count(0.01, 4) == 1                # at least one pixel
    assert top_count(1.0, 9) == 9


def test_top_weights_share_ties():
    h = jnp.array([[5.0, 3.0, 3.0, 3.0, 0.0, 0.0]])
    np.testing.assert_allclose(top_weights(h, 2), [[1, 1 / 3, 1 / 3, 1 / 3, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(top_weights(h, 4), [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_allclose(top_weights(h, 5), [[1, 1, 1, 1, 0.5, 0.5]])
    np.testing.assert_allclose(top_weights(jnp.array([[0.0, -0.0, 0.0]]), 1), [[1 / 3] * 3],
                               rtol=1e-6)


def test_miou_by_hand():
    h = np.arange(10, dtype=np.float32).reshape(1, 2, 5)   # top 20 %: 2 pixels, values 9, 8
    g = np.zeros((1, 2, 5), bool)
    g[0, 1, 4] = g[0, 0, 0] = g[0, 0, 1] = True            # 9 inside, 8 outside
    assert xj.metrics.miou(h, g).tolist() == pytest.approx([1 / 4])   # |T∩G| 1, |T∪G| 4
    assert xj.metrics.miou(h, g, top=0.1).tolist() == pytest.approx([1 / 3])
    assert xj.metrics.miou(h, g, top=1.0).tolist() == pytest.approx([3 / 10])


def test_miou_ties_and_all_zero_map():
    g = np.zeros((1, 2, 5), bool)
    g[0, 0, :3] = True
    # constant map: each pixel is in the top 2 with probability 1/5: E|T∩G| = 3 * 2/10
    inter = 0.6
    got = xj.metrics.miou(np.zeros((1, 2, 5), np.float32), g)
    assert got.tolist() == pytest.approx([inter / (2 + 3 - inter)])
    # one clear maximum outside G, then a 3-way tie (two inside G) for the second place
    h = np.zeros((1, 2, 5), np.float32)
    h[0, 1, 4] = 2.0
    h[0, 0, 0] = h[0, 0, 1] = h[0, 1, 0] = 1.0
    inter = 2 / 3
    assert xj.metrics.miou(h, g).tolist() == pytest.approx([inter / (2 + 3 - inter)])


def test_bbox_score_by_hand():
    h = np.array([[[4.0, 3.0, 0.0], [2.0, 1.0, 0.0]],
                  [[0.0, 0.0, 0.0], [0.0, 0.0, 9.0]]], np.float32)
    g = np.array([[[True, False, False], [True, False, False]],     # N = 2: top 2 are 4, 3
                  [[False, False, False], [False, True, True]]])    # N = 2: 9, then a 5-way tie
    np.testing.assert_allclose(xj.metrics.bbox_score(h, g), [0.5, (1 + 1 / 5) / 2], rtol=1e-6)


def test_bbox_score_full_image_object_is_one():
    h = np.random.default_rng(0).normal(size=(1, 3, 3)).astype(np.float32)
    assert xj.metrics.bbox_score(h, np.ones((1, 3, 3), bool)).tolist() == pytest.approx([1.0])


# ------------------------------------------------------------------------------------------------
# boxes


def test_boxes_to_masks_half_open_and_fractional():
    m = np.asarray(xj.metrics.boxes_to_masks(np.array([[1, 0, 3, 2], [0.4, 1.6, 1.5, 9]]),
                                             (3, 4)))
    np.testing.assert_array_equal(m[0].astype(int), [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    # x0 0.4 <= 0.5 (column 0) and 1.5 < 1.5 fails (column 1); rows from centre 2.5, clipped
    np.testing.assert_array_equal(m[1].astype(int), [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("boxes, size, match", [
    ([[2, 0, 2, 3]], (4, 4), "covers no pixel"),
    ([[0, 0, 3, 3]], (4, 0), "size must be"),
    ([0, 0, 3, 3], (4, 4), r"boxes\[None\]"),
    ([[5, 0, 9, 3]], (4, 4), "covers no pixel"),
])
def test_boxes_to_masks_errors(boxes, size, match):
    with pytest.raises(ValueError, match=match):
        xj.metrics.boxes_to_masks(np.asarray(boxes), size)


# ------------------------------------------------------------------------------------------------
# errors, jit, compilation

ALL = [
    ("pointing_game", lambda h, g: xj.metrics.pointing_game(h, g, 2)),
    ("energy_pointing_game", xj.metrics.energy_pointing_game),
    ("miou", xj.metrics.miou),
    ("bbox_score", xj.metrics.bbox_score),
]


@pytest.mark.parametrize("name, fn", ALL)
def test_errors_name_the_problem(name, fn):
    h = np.ones((2, 4, 4), np.float32)
    g = np.ones((2, 4, 4), bool)
    with pytest.raises(ValueError, match=rf"{name}: masks must have the heatmap's shape.*upsample"):
        fn(h, np.ones((2, 8, 8), bool))
    with pytest.raises(ValueError, match=r"masks\[1\] is empty"):
        fn(h, np.stack([g[0], np.zeros((4, 4), bool)]))
    with pytest.raises(ValueError, match=r"bool \(or 0/1\)"):
        fn(h, g * 0.5)
    with pytest.raises(ValueError, match=r"per-channel map"):
        fn(h[..., None].repeat(3, -1), g)
    with pytest.raises(ValueError, match=rf"{name}: heatmap contains 2 NaN/inf value\(s\), "
                                         r"the first at index \(0, 1, 1\)"):
        fn(np.where(np.arange(16).reshape(4, 4) == 5, np.nan, h).astype(np.float32), g)
    fn(h, g.astype(np.uint8))  # 0/1 numbers are fine


def test_option_errors():
    h, g = np.ones((1, 4, 4), np.float32), np.ones((1, 4, 4), bool)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="tolerance must be a non-negative int"):
            xj.metrics.pointing_game(h, g, bad)
    with pytest.raises(ValueError, match="ties must be one of"):
        xj.metrics.pointing_game(h, g, ties="random")
    for bad in (0.0, 1.5, -0.2, "0.2"):
        with pytest.raises(ValueError, match=r"top must be a fraction of the pixels in \(0, 1\]"):
            xj.metrics.miou(h, g, top=bad)


@pytest.mark.parametrize("name, fn", ALL)
def test_runs_under_jit_and_vmap(name, fn):
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 6, 6)).astype(np.float32)
    g = rng.random((3, 6, 6)) < 0.3
    g[:, 0, 0] = True
    np.testing.assert_allclose(jax.jit(fn)(h, g), fn(h, g), rtol=1e-6)
    # vmap over a leading axis of batches
    hb, gb = np.stack([h, h[::-1]]), np.stack([g, g[::-1]])
    np.testing.assert_allclose(jax.vmap(fn)(hb, gb), np.stack([fn(h, g), fn(h[::-1], g[::-1])]),
                               rtol=1e-6)


@pytest.mark.parametrize("name, fn", ALL + [
    ("boxes_to_masks", lambda h, g: xj.metrics.boxes_to_masks(
        np.array([[0, 0, 2, 3], [1, 1, 4, 4]]) + int(h[0, 0, 0] > 0), (4, 4)))])
def test_compiles_once_per_shape(name, fn, compiles):
    rng = np.random.default_rng(2)
    h1, h2 = (jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32) for _ in range(2))
    g1, g2 = (rng.random((2, 4, 4)) < 0.5 for _ in range(2))
    g1[:, 0, 0] = g2[:, 3, 3] = True
    fn(h1, g1)
    compiles.reset()
    fn(h2, g2)
    assert compiles.count == 0, compiles
