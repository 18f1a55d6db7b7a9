"""Zoo parity: every torchvision architecture, random torchvision weights (BatchNorm statistics
randomised), 224x224, batch 2. Logits and every named tap with a torchvision counterpart (the
module of the same name, or of an alias) must equal torchvision's forward / forward-hook output.

Random weights with random BatchNorm statistics make a ResNet's residual stream grow with depth
(with the shared pair as is, ResNet-34's |logits| reach ~950 and ResNet-101's ~1.6e7, where
float32 cannot reach 1e-4 absolute: torch's own float32 ResNet-34 logits differ from its float64
ones by 2e-4). The ResNet tests therefore damp the last BatchNorm of every residual branch
(x 0.2, on a copy of the shared pair, then convert again) so the logits keep the size trained
ImageNet networks give.

Tolerance on the logits: 1e-4 absolute (the issue's bar) while |logit| <= 10; beyond 10 the bar
scales with the logits (1e-4 x max|logit| / 10, i.e. 1e-5 relative) since float32 rounding does.
Because random-init logits can also be tiny (AlexNet, GoogLeNet: |logits| ~ 0.03-0.1),
the error must in addition be <= 1e-4 relative to the largest reference logit.
Intermediate taps: 1e-4 relative to the largest reference activation of that tap (absolute
float32 errors grow with the activation's size; for activations of order 1 this is the same bar).
"""

from __future__ import annotations

import collections
import copy

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from xaijax.io import state_dict_to_variables  # noqa: E402
from tests.helpers import to_nhwc, torch_pair  # noqa: E402

TOL = 1e-4
# our taps that have no torchvision module of their own (torchvision computes them inline)
_INLINE_TYPES = ("Flatten", "Add")
_SLOW = pytest.mark.slow  # the two largest forward passes (VGG16: 15 GFLOPs, ResNet-101: 8)
ZOO = ("alexnet", pytest.param("vgg16", marks=_SLOW), "resnet18", "resnet34", "resnet50",
       pytest.param("resnet101", marks=_SLOW), "googlenet")


def _pair(name):
    """The shared torch/xaijax pair; for ResNets a copy whose residual branches are damped."""
    tm, model = torch_pair(name)
    if not name.startswith("resnet"):
        return tm, model
    tm = copy.deepcopy(tm)
    with torch.no_grad():
        for mname, m in tm.named_modules():
            if mname.count(".") == 1 and mname.startswith("layer"):  # a residual block
                bn = m.bn3 if hasattr(m, "bn3") else m.bn2
                bn.weight.mul_(0.2)
                bn.bias.mul_(0.2)
    sd = {k: v.detach().cpu().numpy() for k, v in tm.state_dict().items()}
    return tm, model.replace_variables(state_dict_to_variables(model, sd))


def _torch_activations(tm, x):
    """Logits and ``{module name: [output of each call]}`` for every named torch module.

    Outputs are cloned in the hook: torchvision's in-place ReLUs (and ResNet's ``out +=
    identity``) would otherwise overwrite what an earlier hook stored."""
    calls = collections.defaultdict(list)
    handles = []
    for n, m in tm.named_modules():
        if n:
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, n=n: calls[n].append(out.detach().clone().numpy())))
    try:
        with torch.no_grad():
            logits = tm(torch.from_numpy(x)).numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, calls


def _counterparts(model, calls):
    """``{our tap: torch activation (NCHW)}``: by module name or alias for modules that fire once;
    torchvision's shared per-block ``relu`` (fires 2-3 times) maps by order to our
    ``relu1``, ``relu2``, ``relu3``."""
    names = collections.defaultdict(list)
    for t in model.taps:
        names[t].append(t)
    for alias, t in model.spec.aliases:
        names[t].append(alias)
    out = {}
    for t, cands in names.items():
        for n in cands:
            if n in calls and len(calls[n]) == 1:
                out[t] = calls[n][0]
                break
    for n, acts in calls.items():
        if len(acts) > 1:
            for i, a in enumerate(acts):
                t = f"{n}{i + 1}"
                assert t in model.taps, f"torch module {n!r} call {i} has no tap {t!r}"
                out[t] = a
    return out


@pytest.mark.parametrize("name", ZOO)
def test_zoo_logits_and_taps_match_torchvision(name):
    tm, model = _pair(name)
    x = np.random.RandomState(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    ref, calls = _torch_activations(tm, x)

    logits, acts = jax.jit(lambda m, z: m.forward(z, capture=True))(model, to_nhwc(x))
    logits = np.asarray(logits)
    assert logits.shape == ref.shape == (2, 1000)
    err = np.abs(logits - ref).max()
    scale = np.abs(ref).max()
    assert err <= TOL * max(1.0, scale / 10.0), (
        f"{name}: max |logit diff| {err:.3g} > {TOL} (x {max(1.0, scale / 10.0):.3g} for "
        f"logits up to {scale:.3g})")
    assert err <= TOL * scale, f"{name}: logit diff {err:.3g} > {TOL} x max |logit| {scale:.3g}"

    refs = _counterparts(model, calls)
    missing = [t for t, ty in zip(model.taps, model.spec.tap_types)
               if t not in refs and ty not in _INLINE_TYPES]
    assert not missing, f"{name}: taps without a torchvision counterpart: {missing}"
    assert {model.spec.cam_tap, *model.block_taps} <= set(refs)
    worst = (0.0, "")
    for t, r in refs.items():
        a = np.asarray(acts[t])
        r = r.transpose(0, 2, 3, 1) if r.ndim == 4 else r
        assert a.shape == r.shape, f"{name}: tap {t!r} shape {a.shape} != torch {r.shape}"
        rel = np.abs(a - r).max() / max(np.abs(r).max(), 1e-30)
        assert rel <= TOL, f"{name}: tap {t!r} differs from torchvision by {rel:.3g} (relative)"
        worst = max(worst, (rel, t))
    print(f"{name}: logits max abs diff {err:.2e} (max |logit| {scale:.3g}); "
          f"{len(refs)} taps compared, worst relative {worst[0]:.2e} at {worst[1]}")


@pytest.mark.parametrize("name", ("resnet18", "resnet50", "googlenet"))
def test_zoo_spec_taps_exist_and_shapes(name):
    """cam_tap is the last conv stage, block taps drop resolution right after them, and
    gap_dense ends in the classifier (what CAM needs)."""
    import xaijax as xj

    model = xj.models.build(name, random_init=False)
    shapes = model.tap_shapes()
    assert shapes[model.spec.cam_tap][:2] == (7, 7)
    sides = [shapes[t][0] for t in model.block_taps]
    assert sides == [112, 56, 28, 14, 7], sides
    feats, dense = model.spec.gap_dense
    assert feats == model.spec.cam_tap and dense == "fc"
    assert shapes["fc"] == (1000,)
