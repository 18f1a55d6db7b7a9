"""HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM, EigenGrad-CAM and element-wise Grad-CAM: parity with
pytorch-grad-cam on the same converted weights, the papers' properties, batching and option
errors.

Parity models: ResNet-18 with random torchvision weights (``tests.helpers.torch_pair``) and the
pretrained EfficientNet-Lite0 (``efficientnet_pair(split_relu6=True)``), at their CAM layers
(``layer4``; ``relu_head`` = ``_swish.head``), 64 x 64 inputs, batch 2, the top-1 classes as
``ClassifierOutputTarget``. Tolerance: 1e-4 relative (max |ours - ref| <= 1e-4 max |ref|, float32
on both sides). Observed max relative errors: ResNet-18 <= 1.2e-6 (weights, low-res maps and
normalised heatmaps, all six methods; Eigen-CAM's projections 6e-7), EfficientNet-Lite0 <= 3.1e-6.

Conventions matched (see ``xaijax/methods/cam.py``): pytorch-grad-cam's raw maps are recorded from
its ``get_cam_image`` (and XGrad-CAM's ``get_cam_weights``) during one ``__call__``; our
``low_res`` is compared with their ReLU, our ``normalize=True`` heatmap with its output. XGrad-CAM
runs with our default ``eps=0`` (the peer's ``1e-7`` is far below the tolerance); Eigen-CAM with
``center=True`` (the peer centres). The peer keeps LAPACK's sign of the singular vector, ours
fixes it, so the signed projections are compared up to a per-image sign; where the signs differ
the peer's normalised output is built from the other half of the map, and ours is compared with
the peer's post-processing applied to the negated projection instead.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pgc = pytest.importorskip("pytorch_grad_cam")
cv2 = pytest.importorskip("cv2")

import xaijax as xj  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from tests.helpers import (assert_rel_close, efficientnet_pair, to_nchw, to_nhwc,  # noqa: E402
                           torch_pair)

C = importlib.import_module("xaijax.methods.cam")

RTOL = 1e-4
SIZE = 64
VARIANTS = ("hirescam", "xgradcam", "layercam", "eigencam", "eigengradcam", "gradcam_elementwise")
PEER = {"hirescam": "HiResCAM", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
        "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM",
        "gradcam_elementwise": "GradCAMElementWise"}
# options matching the peer's conventions
PEER_OPTS = {"eigencam": {"center": True}}
# model -> (xaijax tap, torch module path)
_CAM_TAP = {"resnet18": ("layer4", "layer4"), "efficientnet_lite0": ("relu_head", "_swish.head")}


def _pair(name):
    if name not in xj.models.available():
        pytest.skip(f"{name!r} is not registered in the xaijax zoo yet")
    return efficientnet_pair(split_relu6=True) if name == "efficientnet_lite0" else torch_pair(name)


_CACHE = {}


def _ours_and_inputs(name):
    """Inputs, top-1 targets and our six explanations (``normalize=True``, peer options) from
    one jitted program per model."""
    if name not in _CACHE:
        tm, model = _pair(name)
        if name == "efficientnet_lite0":
            from xaijax.data.images import load_image

            x = np.asarray(xj.models.preprocess(
                model, [load_image(p) for p in ("coffee", "chelsea")], size=(SIZE, SIZE)))
        else:
            x = np.random.RandomState(0).randn(2, SIZE, SIZE, 3).astype(np.float32)
        xt = torch.from_numpy(to_nchw(x))
        with torch.no_grad():
            t = tm(xt).argmax(1).numpy()
        tap = _CAM_TAP[name][0]

        def run(model, x, t):
            return {m: getattr(xj.methods, m)(model, x, t, tap=tap, normalize=True,
                                              **PEER_OPTS.get(m, {})) for m in VARIANTS}

        ours = jax.jit(run)(model, jnp.asarray(x), jnp.asarray(t, jnp.int32))
        _CACHE[name] = (tm, x, xt.requires_grad_(), t, ours)
    return _CACHE[name]


def _run_pgc(cls, tm, layer_path, xt, t):
    """The peer's final output and its raw map, activations, gradients (and weights, where it
    computes them), recorded from the same call."""
    c = cls(tm, [tm.get_submodule(layer_path)])
    rec = {}
    get_img = c.get_cam_image

    def spy_img(*a, **k):
        rec["acts"], rec["grads"] = np.asarray(a[3]), a[4]
        rec["low"] = np.asarray(get_img(*a, **k))
        return rec["low"]

    c.get_cam_image = spy_img
    if cls is pgc.XGradCAM:
        get_w = c.get_cam_weights

        def spy_w(*a, **k):
            rec["weights"] = np.asarray(get_w(*a, **k))
            return rec["weights"]

        c.get_cam_weights = spy_w
    out = c(xt, [ClassifierOutputTarget(int(i)) for i in t])
    c.activations_and_grads.release()
    return out, rec


def _peer_post(low):
    """pytorch-grad-cam's post-processing of one layer's raw maps: ReLU, min-max (eps 1e-7),
    cv2 resize, and min-max again (its layer aggregation)."""
    def scale(maps, size=None):
        out = []
        for m in maps:
            m = m - m.min()
            m = m / (1e-7 + m.max())
            out.append(cv2.resize(np.float32(m), size) if size else m)
        return np.float32(out)

    return scale(np.maximum(scale(np.maximum(low, 0), (SIZE, SIZE)), 0))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
@pytest.mark.parametrize("method", VARIANTS)
def test_variant_matches_pytorch_grad_cam(name, method):
    tm, x, xt, t, ours = _ours_and_inputs(name)
    ex = ours[method]
    out, rec = _run_pgc(getattr(pgc, PEER[method]), tm, _CAM_TAP[name][1], xt, t)
    low = rec["low"]
    if method in ("eigencam", "eigengradcam"):
        proj = np.asarray(ex.extras["projection"], np.float64)
        sign = np.sign(np.sum(proj * low, axis=(1, 2)))[:, None, None]
        assert (sign != 0).all()
        assert_rel_close(proj, sign * low, RTOL, "signed projection")
        low = sign * low
        want = np.where(sign > 0, out, _peer_post(low))
    else:
        want = out
    low = np.maximum(low, 0)
    assert (low > 0).any() and low.max() > 1e-3, "degenerate map: pick another input/target"
    assert_rel_close(ex.extras["low_res"], low, RTOL, "low-res map")
    assert_rel_close(ex.heatmap, want, RTOL, "normalised map")
    g = to_nhwc(rec["grads"]) if rec["grads"] is not None else None
    if method in ("hirescam", "gradcam_elementwise"):
        assert_rel_close(ex.extras["weights"], g, RTOL, "weights (gradients)")
    elif method == "layercam":
        assert_rel_close(ex.extras["weights"], np.maximum(g, 0), RTOL, "weights")
    elif method == "xgradcam":
        assert_rel_close(ex.extras["weights"], rec["weights"], RTOL, "weights")


# ------------------------------------------------------------------------------------------------
# properties (small CNN, no peer)


@pytest.fixture(scope="module")
def small():
    return xj.models.get("small_cnn", num_classes=10, seed=3)


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3), jnp.float32)


T = jnp.array([2, 7], jnp.int32)


def _features(model, x, tap):
    _, acts = model.forward(x, capture=[tap])
    return np.asarray(acts[tap], np.float64)


def test_eigencam_default_is_the_uncentred_projection_of_the_paper(small, xs):
    """center=False (the paper): O V_1 from numpy's SVD of the (hw, K) feature matrix, with our
    sign; on post-ReLU features that projection is non-negative."""
    ex = xj.explain(small, xs, T, method="eigencam")
    a = _features(small, xs, "relu5")
    n, h, w, k = a.shape
    for i in range(n):
        o = a[i].reshape(h * w, k)
        v = np.linalg.svd(o, full_matrices=False)[2][0]
        v = v if v.sum() >= 0 else -v
        assert_rel_close(ex.extras["weights"][i], v, RTOL, "V_1")
        assert_rel_close(ex.extras["projection"][i], (o @ v).reshape(h, w), RTOL, "O V_1")
    assert (np.asarray(ex.extras["projection"]) >= 0).all()
    assert_rel_close(ex.extras["low_res"], ex.extras["projection"], 0, "ReLU is a no-op")


def test_hirescam_and_xgradcam_equal_gradcam_when_the_gradient_is_spatially_constant(small, xs):
    """small_cnn ends in GAP + dense after relu5, so dy/dA^k_ij = w_k / (h w) everywhere: HiResCAM
    (Draelos & Carin: it generalises CAM) and XGrad-CAM (its weights average a constant) equal
    Grad-CAM; LayerCAM is Grad-CAM with the negative weights dropped."""
    gc = xj.explain(small, xs, T, method="gradcam")
    hi = xj.explain(small, xs, T, method="hirescam")
    xg = xj.explain(small, xs, T, method="xgradcam")
    lc = xj.explain(small, xs, T, method="layercam")
    low = np.asarray(gc.extras["low_res"])
    assert (low > 0).mean() > 0.1 and (low == 0).any()
    assert_rel_close(hi.extras["low_res"], low, 1e-5, "hirescam")
    assert_rel_close(xg.extras["low_res"], low, 1e-5, "xgradcam")
    a = _features(small, xs, "relu5")
    live = a.sum((1, 2)) > 0  # XGrad-CAM gives channels that are zero everywhere weight 0
    assert live.mean() > 0.5
    assert_rel_close(np.where(live, xg.extras["weights"], 0),
                     np.where(live, gc.extras["weights"], 0), 1e-5, "xgradcam weights")
    w = np.asarray(gc.extras["weights"], np.float64)
    want = np.maximum(np.einsum("nhwk,nk->nhw", a, np.maximum(w, 0)), 0)
    assert_rel_close(lc.extras["low_res"], want, 1e-5, "layercam")


def test_xgradcam_and_hirescam_conserve_the_score_for_a_gap_dense_head(small, xs):
    """Conservation (Fu et al.): sum_ij of the map before the ReLU is y^c - b^c when the head
    after the tap is linear (GAP + dense)."""
    a = _features(small, xs, "relu5")
    y = np.asarray(small(xs), np.float64)[np.arange(2), np.asarray(T)]
    b = np.asarray(small.variables["params"]["fc"]["bias"], np.float64)[np.asarray(T)]
    xg = xj.explain(small, xs, T, method="xgradcam")
    total = np.einsum("nk,nk->n", np.asarray(xg.extras["weights"], np.float64), a.sum((1, 2)))
    np.testing.assert_allclose(total, y - b, rtol=1e-4, atol=1e-5)
    hi = xj.explain(small, xs, T, method="hirescam")
    total = np.sum(np.asarray(hi.extras["weights"], np.float64) * a, axis=(1, 2, 3))
    np.testing.assert_allclose(total, y - b, rtol=1e-4, atol=1e-5)


def test_elementwise_gradcam_sums_positive_terms_and_bounds_hirescam(small, xs):
    """At a tap with spatially varying gradients (relu4): element-wise Grad-CAM is
    sum_k ReLU(g A) from the recorded gradients, >= HiResCAM everywhere and > somewhere."""
    el = xj.explain(small, xs, T, method="gradcam_elementwise", tap="relu4")
    hi = xj.explain(small, xs, T, method="hirescam", tap="relu4")
    g = np.asarray(hi.extras["weights"], np.float64)
    assert np.std(g, axis=(1, 2)).max() > 0  # the gradient is not spatially constant here
    a = _features(small, xs, "relu4")
    assert_rel_close(el.extras["weights"], g, 0, "same gradients")
    assert_rel_close(el.extras["low_res"], np.maximum(g * a, 0).sum(-1), 1e-5, "element-wise")
    assert_rel_close(hi.extras["low_res"], np.maximum((g * a).sum(-1), 0), 1e-5, "hirescam")
    e, h = np.asarray(el.extras["low_res"]), np.asarray(hi.extras["low_res"])
    assert (e >= h - 1e-6).all() and (e > h + 1e-4).any()


def test_layercam_gamma_is_the_papers_tanh_scaling(small, xs):
    plain = np.asarray(xj.explain(small, xs, T, method="layercam", tap="relu2").extras["low_res"])
    scaled = xj.explain(small, xs, T, method="layercam", tap="relu2", gamma=2.0).extras["low_res"]
    assert plain.shape == (2, 32, 32) and (plain.max((1, 2)) > 0).all()
    want = np.tanh(2.0 * plain / plain.max((1, 2), keepdims=True))
    assert_rel_close(scaled, want, 1e-5, "tanh scaling")


def test_eigencam_is_target_independent_and_eigengradcam_is_not(small, xs):
    a = xj.explain(small, xs, [0, 1], method="eigencam")
    b = xj.explain(small, xs, [5, 9], method="eigencam")
    assert_rel_close(a.heatmap, b.heatmap, 0, "eigencam")
    assert (np.asarray(a.extras["low_res"]).max((1, 2)) > 0).all()
    c = xj.explain(small, xs, [0, 1], method="eigengradcam")
    d = xj.explain(small, xs, [5, 9], method="eigengradcam")
    assert not np.allclose(c.extras["weights"], d.extras["weights"])


def test_eigen_projection_of_rank_one_maps_and_its_sign():
    """O = p q^T: V_1 = +-q/|q|, O V_1 = +-p |q|; the sign makes sum V_1 >= 0. Centred:
    (p - mean p) |q| with the same sign."""
    p = np.array([[0.0, 1.0], [2.0, 4.0]])
    q = np.array([3.0, -1.0, 0.5])  # sum > 0
    o = jnp.asarray(np.einsum("hw,k->hwk", p, q)[None], jnp.float32)
    for m, s in ((o, 1.0), (-o, -1.0)):  # -o = p (-q)^T: V_1 is still q/|q|, the map -p|q|
        proj, v = C.eigen_projection(m)
        np.testing.assert_allclose(v[0], q / np.linalg.norm(q), atol=1e-6)
        np.testing.assert_allclose(proj[0], s * p * np.linalg.norm(q), rtol=1e-5, atol=1e-5)
        proj, v = C.eigen_projection(m, center=True)
        np.testing.assert_allclose(v[0], q / np.linalg.norm(q), atol=1e-6)
        np.testing.assert_allclose(proj[0], s * (p - p.mean()) * np.linalg.norm(q), rtol=1e-5,
                                   atol=1e-5)


def test_batch_equals_per_image(small, xs):
    """All six in one program (tap relu4: spatially varying gradients), on the batch and on
    each image alone."""
    def run(x, t):
        return {m: getattr(xj.methods, m)(small, x, t, tap="relu4") for m in VARIANTS}

    f = jax.jit(run)
    batch = f(xs, T)
    for i in range(2):
        one = f(xs[i:i + 1], T[i:i + 1])
        for m in VARIANTS:
            assert np.asarray(batch[m].heatmap[i]).max() > 0, m
            assert_rel_close(one[m].heatmap, batch[m].heatmap[i:i + 1], 1e-5, f"{m} image {i}")
            assert_rel_close(one[m].extras["weights"], batch[m].extras["weights"][i:i + 1], 1e-5,
                             f"{m} weights, image {i}")


def test_registered_with_paper_and_peer():
    for m in VARIANTS:
        inf = xj.methods.info(m)
        assert inf.needs == "taps" and inf.paper
        assert inf.peer == f"pytorch-grad-cam {PEER[m]}"


@pytest.mark.parametrize("method,opts,match", [
    ("xgradcam", {"eps": -1.0}, "eps must be a finite float >= 0"),
    ("xgradcam", {"eps": float("nan")}, "eps must be a finite float >= 0"),
    ("layercam", {"gamma": 0.0}, "gamma must be a finite float > 0"),
    ("layercam", {"gamma": "big"}, "gamma must be a finite float > 0"),
    ("eigencam", {"center": "yes"}, "center must be True or False"),
    ("eigengradcam", {"center": 1}, "center must be True or False"),
    ("hirescam", {"tap": "fc"}, "needs a spatial feature map"),
    ("eigencam", {"tap": "no_such_layer"}, "no_such_layer"),
])
def test_bad_options_raise_value_errors_through_explain(small, xs, method, opts, match):
    with pytest.raises(ValueError, match=match):
        xj.explain(small, xs, T, method=method, **opts)
