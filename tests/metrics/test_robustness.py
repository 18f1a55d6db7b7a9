"""Max-sensitivity and the model-parameter randomisation check.

* ``max_sensitivity`` against Quantus 0.6.0's ``MaxSensitivity`` fed the *same* perturbations:
  Quantus' ``perturb_func`` is replaced by one that replays the δ our key draws
  (``robustness._perturbations``, the noise ``max_sensitivity`` adds), and its ``explain_func``
  is our bound ``gradient`` method (model=None: Quantus needs no model when it is given an
  explanation function). Tolerance 1e-5 relative: the perturbed maps come from a vmapped
  program on our side and batch-N calls on Quantus' side (float32 rounding).
* ``randomisation_check``: Spearman against ``scipy.stats.spearmanr`` (average ranks for ties)
  and SSIM against ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0)`` on the min-max scaled absolute maps, both to
  1e-5; the cascade's maps against the method run on ``randomise_layers``; the paper's
  property (randomising the layers destroys the gradient map's rank correlation).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xaijax as xj
from xaijax.metrics import robustness

N, S = 3, 5


@pytest.fixture(scope="module")
def model():
    return xj.models.get("small_cnn", num_classes=10)


def _images(seed, n=N):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, 32, 32, 3)) * 0.5


def _quantus_max_sensitivity(model, x, target, deltas, radius, norm, relative):
    quantus = pytest.importorskip("quantus")
    f = xj.methods.bind("gradient")
    d = np.asarray(deltas).transpose(0, 1, 4, 2, 3)     # (N, S, C, H, W): Quantus is NCHW here
    used = []

    def replay(arr, indices, **kwargs):                 # Quantus' perturb_func signature
        s = len(used)
        used.append(s)
        return arr + d[:, s].reshape(arr.shape)

    def explain(model, inputs, targets, **kwargs):
        return np.asarray(f(xj_model, jnp.asarray(inputs.transpose(0, 2, 3, 1)), targets).heatmap)

    xj_model = model
    fn = quantus.functions.norm_func
    num = fn.linf_norm if norm == "linf" else fn.fro_norm
    den = num if relative else (lambda a: np.ones(a.shape[:-1]))
    metric = quantus.MaxSensitivity(nr_samples=deltas.shape[1], lower_bound=radius,
                                    perturb_func=replay, norm_numerator=num,
                                    norm_denominator=den, abs=False, normalise=False,
                                    disable_warnings=True, display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=None, x_batch=np.asarray(x).transpose(0, 3, 1, 2),
                     y_batch=np.asarray(target), a_batch=None, channel_first=True,
                     explain_func=explain)
    assert len(used) == deltas.shape[1]
    return np.asarray(out, np.float64)


@pytest.mark.parametrize("norm,relative", [("fro", True), ("linf", False)])
def test_max_sensitivity_matches_quantus_on_the_same_perturbations(model, norm, relative):
    x, t, key = _images(0), np.array([1, 4, 7]), jax.random.PRNGKey(3)
    got = xj.metrics.max_sensitivity(model, x, t, "gradient", radius=0.2, samples=S, key=key,
                                     norm=norm, relative=relative, sample_batch=2)
    deltas = robustness._perturbations(key, x, jnp.float32(0.2), samples=S)
    want = _quantus_max_sensitivity(model, x, t, deltas, 0.2, norm, relative)
    assert got.shape == (N,)
    assert np.all(want > 0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_perturbations_fill_the_linf_ball_per_image_and_sample():
    x = _images(0)
    d = np.asarray(robustness._perturbations(jax.random.PRNGKey(0), x, jnp.float32(0.3),
                                             samples=4))
    assert d.shape == (N, 4, 32, 32, 3)
    assert d.min() >= -0.3 and d.max() < 0.3 and d.max() > 0.29 and d.min() < -0.29
    assert abs(d.mean()) < 0.01 and abs(d.std() - 0.3 / np.sqrt(3)) < 0.005   # U[-r, r)
    assert not np.allclose(d[0, 0], d[1, 0]) and not np.allclose(d[0, 0], d[0, 1])
    d2 = np.asarray(robustness._perturbations(jax.random.PRNGKey(1), x, jnp.float32(0.3),
                                              samples=4))
    assert not np.allclose(d, d2)


def test_max_sensitivity_top1_and_sample_chunks_agree(model):
    x, key = _images(1), jax.random.PRNGKey(5)
    pred = np.asarray(jnp.argmax(model(x), -1))
    a = xj.metrics.max_sensitivity(model, x, "top1", samples=S, key=key, sample_batch=S)
    b = xj.metrics.max_sensitivity(model, x, pred, samples=S, key=key, sample_batch=2)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_max_sensitivity_compiles_once(model, compiles):
    x1, x2 = _images(2), _images(3)
    xj.metrics.max_sensitivity(model, x1, 2, samples=S, key=jax.random.PRNGKey(0))
    compiles.reset()
    xj.metrics.max_sensitivity(model, x2, [0, 1, 2], radius=0.05, samples=S,
                               key=jax.random.PRNGKey(1))
    assert compiles.count == 0, compiles


def test_max_sensitivity_errors(model):
    x = _images(0)
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        xj.metrics.max_sensitivity(model, x, 0, radius=-0.1)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        xj.metrics.max_sensitivity(model, x, 0, samples=0)
    with pytest.raises(ValueError, match="norm must be one of"):
        xj.metrics.max_sensitivity(model, x, 0, norm="l3")
    with pytest.raises(TypeError, match="has no option"):
        xj.metrics.max_sensitivity(model, x, 0, "gradient", sigma=0.1)
    with pytest.raises(TypeError, match="both as keywords and in method_options"):
        xj.metrics.max_sensitivity(model, x, 0, "smoothgrad", sigma=0.1,
                                   method_options={"sigma": 0.2})


# ------------------------------------------------------------------------------------------------
# randomisation check


def test_spearman_and_ssim_match_scipy_and_skimage():
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(3, 13, 17)).astype(np.float32)     # many ties
    b = (a + rng.integers(0, 3, size=a.shape)).astype(np.float32)
    b[2] = -b[2]
    got = np.asarray(robustness._spearman(jnp.asarray(a), jnp.asarray(b)))
    want = [stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.isnan(robustness._spearman(jnp.ones((1, 13, 17)), jnp.asarray(b[:1])))[0]
    u, v = rng.random((2, 3, 13, 17)).astype(np.float32)
    v = np.clip(u + 0.2 * rng.normal(size=u.shape), 0, 1).astype(np.float32)
    got = np.asarray(robustness._ssim(jnp.asarray(u), jnp.asarray(v)))
    want = [metrics.structural_similarity(u[i], v[i], gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0)
            for i in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(robustness._ssim(jnp.asarray(u), jnp.asarray(u)), 1.0, atol=1e-6)


def _minmax(a):
    a = a - a.min()
    return a / a.max() if a.max() > 0 else a


def test_randomisation_check_cascade_matches_references(model):
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("skimage.metrics")
    x, t, key = _images(4, n=2), np.array([3, 8]), jax.random.PRNGKey(7)
    r = xj.metrics.randomisation_check(model, x, t, "gradient", key=key)
    assert r.layers == ("fc", "conv5", "conv4", "conv3", "conv2", "conv1")
    assert r.spearman.shape == r.spearman_signed.shape == r.ssim.shape == (6, 2)
    f = xj.methods.bind("gradient")
    np.testing.assert_allclose(r.original, f(model, x, t).heatmap, rtol=1e-5, atol=1e-7)
    o, h = np.asarray(r.original), np.asarray(r.heatmaps)
    for l in range(6):
        m = xj.metrics.randomise_layers(model, r.layers[:l + 1], key=key)
        np.testing.assert_allclose(h[l], f(m, x, t).heatmap, rtol=1e-4, atol=1e-7)
        for i in range(2):
            rho = stats.spearmanr(np.abs(o[i]).ravel(), np.abs(h[l, i]).ravel()).statistic
            np.testing.assert_allclose(r.spearman[l, i], rho, atol=1e-5)
            rho = stats.spearmanr(o[i].ravel(), h[l, i].ravel()).statistic
            np.testing.assert_allclose(r.spearman_signed[l, i], rho, atol=1e-5)
            s = metrics.structural_similarity(
                _minmax(np.abs(o[i])), _minmax(np.abs(h[l, i])), gaussian_weights=True,
                sigma=1.5, use_sample_covariance=False, data_range=1.0)
            np.testing.assert_allclose(r.ssim[l, i], s, atol=1e-5)
    # Adebayo et al. §3.1: the gradient depends on the weights; once every layer is random its
    # map no longer ranks the pixels as the intact model's does (1.0 with itself)
    np.testing.assert_allclose(robustness._spearman(r.original, r.original), 1.0, atol=1e-6)
    assert np.all(np.asarray(r.spearman[-1]) < 0.5), r.spearman
    assert np.all(np.asarray(r.ssim[-1]) < 0.5), r.ssim


def test_randomisation_check_independent_randomises_one_layer_at_a_time(model):
    x, t, key = _images(5, n=2), 2, jax.random.PRNGKey(9)
    layers = ("conv2", "fc", "conv4")
    ind = xj.metrics.randomisation_check(model, x, t, order="independent", key=key,
                                         layers=layers)
    cas = xj.metrics.randomisation_check(model, x, t, order="cascading", key=key,
                                         layers=layers)
    assert ind.layers == cas.layers == ("fc", "conv4", "conv2")        # from the logits down
    f = xj.methods.bind("gradient")
    for l, name in enumerate(ind.layers):
        m = xj.metrics.randomise_layers(model, [name], key=key)
        np.testing.assert_allclose(ind.heatmaps[l], f(m, x, t).heatmap, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ind.heatmaps[0], cas.heatmaps[0], rtol=1e-5)   # same first step
    assert not np.allclose(ind.heatmaps[2], cas.heatmaps[2])


def test_randomise_layers_redraws_with_the_model_initialisation(model):
    r = xj.metrics.randomise_layers(model, ["conv3"], key=jax.random.PRNGKey(0))
    p, q = model.variables["params"], r.variables["params"]
    for name in p:
        same = all(np.array_equal(p[name][k], q[name][k]) for k in p[name])
        assert same == (name != "conv3"), name
    w = np.asarray(q["conv3"]["kernel"])
    bound = 1.0 / np.sqrt(3 * 3 * 16)                                   # fan_in of conv3
    assert np.abs(w).max() <= bound and np.abs(np.asarray(q["conv3"]["bias"])).max() <= bound
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.05               # U(−b, b)
    assert not np.array_equal(w, p["conv3"]["kernel"])


def test_randomisation_check_compiles_once(model, compiles):
    x1, x2 = _images(6, n=2), _images(7, n=2)
    xj.metrics.randomisation_check(model, x1, 1, layers=("fc", "conv5"),
                                   key=jax.random.PRNGKey(0))
    compiles.reset()
    xj.metrics.randomisation_check(model, x2, [4, 5], layers=("conv5", "fc"),
                                   order="independent", key=jax.random.PRNGKey(1))
    assert compiles.count == 0, compiles


def test_randomisation_check_errors(model):
    x = _images(0, n=1)
    with pytest.raises(ValueError, match="no 'kernel' parameter"):
        xj.metrics.randomisation_check(model, x, 0, layers=["relu3"])
    with pytest.raises(ValueError, match="unknown tap"):
        xj.metrics.randomisation_check(model, x, 0, layers=["conv9"])
    with pytest.raises(ValueError, match="order must be one of"):
        xj.metrics.randomisation_check(model, x, 0, order="bottom_up")
    with pytest.raises(TypeError, match="needs parameters by layer"):
        xj.metrics.randomisation_check(model.apply_fn, x, 0)
