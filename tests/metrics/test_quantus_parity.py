"""Parity with Quantus on the same maps and masks, where it defines the same metric.

* ``PointingGame`` (tolerance 0: the maximum must lie on the object; ties: a hit when any
  maximum is on it) = our ``pointing_game(tolerance=0, ties="any")``; on maps with one maximum
  also ``ties="mean"`` and ``"first"``. Quantus has no tolerance margin.
* ``RelevanceMassAccuracy`` = our ``energy_pointing_game`` on non-negative maps (Quantus sums
  the signed map; we clip it at 0), and NaN where we score an all-zero map as chance.
* ``TopKIntersection(k=|G|)`` = our ``bbox_score`` on maps without ties (Quantus takes
  ``np.argsort(-a)``, an unspecified order among ties; we share tied places evenly). Quantus'
  ``k`` is one number per call, so each image is its own call.

Quantus runs with ``normalise=False, abs=False`` so both sides see the raw maps. Tolerance:
values agree to 1e-6 relative (float32 sums in a different order), hits exactly.
"""

import warnings

import numpy as np
import pytest

import xaijax as xj

quantus = pytest.importorskip("quantus")


def _maps(seed, n=6, h=12, w=10, nonneg=False):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, h, w)).astype(np.float32)
    if nonneg:
        a = np.abs(a) * (rng.random((n, h, w)) < 0.7)     # non-negative, with zeros
    s = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        s[i, y0: y0 + rng.integers(2, h - y0 + 1), x0: x0 + rng.integers(2, w - x0 + 1)] = True
    s[0, :, :3] = True                                     # an object on the border
    return a, s


def _quantus(metric, a, s):
    n, h, w = a.shape
    x = np.zeros((n, 3, h, w), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=None, x_batch=x, y_batch=np.zeros(n, int), a_batch=a[:, None],
                     s_batch=s[:, None].astype(np.float32), channel_first=True)
    return np.asarray(out, np.float64)


def _opts():
    return dict(abs=False, normalise=False, disable_warnings=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pointing_game_matches_quantus(seed):
    a, s = _maps(seed)
    a[1] = 0.0
    a[1, 0, 0] = a[1, -1, -1] = 1.0                        # a tie between two maxima
    s[1] = False
    s[1, -1, -1] = True                                    # one of them on the object
    want = _quantus(quantus.PointingGame(**_opts()), a, s)
    got = xj.metrics.pointing_game(a, s, tolerance=0, ties="any")
    np.testing.assert_array_equal(got, want)
    unique = [i for i in range(len(a)) if (a[i] == a[i].max()).sum() == 1]
    for ties in ("mean", "first"):
        got = np.asarray(xj.metrics.pointing_game(a, s, tolerance=0, ties=ties))
        np.testing.assert_array_equal(got[unique], want[unique])
    assert xj.metrics.pointing_game(a, s, 0, ties="mean")[1] == 0.5   # where we differ


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_pointing_game_matches_relevance_mass_accuracy(seed):
    a, s = _maps(seed, nonneg=True)
    want = _quantus(quantus.RelevanceMassAccuracy(**_opts()), a, s)
    np.testing.assert_allclose(xj.metrics.energy_pointing_game(a, s), want, rtol=1e-6)
    # signed maps: Quantus' sums keep the sign; ours is the same on max(a, 0)
    a, s = _maps(seed)
    want = _quantus(quantus.RelevanceMassAccuracy(**_opts()), np.maximum(a, 0), s)
    np.testing.assert_allclose(xj.metrics.energy_pointing_game(a, s), want, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bbox_score_matches_top_k_intersection(seed):
    a, s = _maps(seed)                                     # continuous values: no ties
    got = np.asarray(xj.metrics.bbox_score(a, s))
    for i in range(len(a)):
        k = int(s[i].sum())
        want = _quantus(quantus.TopKIntersection(k=k, **_opts()), a[i: i + 1], s[i: i + 1])
        np.testing.assert_allclose(got[i], want[0], rtol=1e-6)
