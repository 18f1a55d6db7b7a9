import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xaijax.nn import layers as L

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _apply(layer, x):
    v = layer.init(jax.random.PRNGKey(0), x)
    return layer.apply(v, x)


@pytest.mark.parametrize("size,k,s,p,ceil", [(13, 3, 2, 0, True), (14, 3, 2, 1, True),
                                              (112, 3, 2, 1, False), (28, 2, 2, 0, True),
                                              (7, 3, 1, 1, True)])
def test_maxpool_and_avgpool_match_torch_including_ceil_mode(size, k, s, p, ceil):
    x = np.random.RandomState(0).randn(2, 4, size, size).astype(np.float32)
    xj_in = jnp.asarray(x.transpose(0, 2, 3, 1))
    ref = F.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil).numpy().transpose(0, 2, 3, 1)
    out = _apply(L.MaxPool(window=k, strides=s, padding=p, ceil_mode=ceil), xj_in)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for cip in (True, False):
        ref = F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil,
                           count_include_pad=cip).numpy().transpose(0, 2, 3, 1)
        out = _apply(L.AvgPool(window=k, strides=s, padding=p, ceil_mode=ceil,
                               count_include_pad=cip), xj_in)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,out", [(7, 7), (13, 7), (9, 4), (5, 1), (6, 6)])
def test_adaptive_avgpool_matches_torch(size, out):
    x = np.random.RandomState(1).randn(2, 3, size, size).astype(np.float32)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy().transpose(0, 2, 3, 1)
    res = _apply(L.AdaptiveAvgPool(output_size=out), jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(res, ref, rtol=1e-5, atol=1e-6)


def test_grouped_strided_conv_matches_torch():
    rs = np.random.RandomState(2)
    x = rs.randn(2, 8, 11, 11).astype(np.float32)
    w = rs.randn(8, 1, 3, 3).astype(np.float32)
    b = rs.randn(8).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2,
                   padding=1, groups=8).numpy().transpose(0, 2, 3, 1)
    layer = L.Conv(features=8, kernel_size=3, strides=2, padding=1, groups=8)
    params = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}
    out = layer.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_flatten_uses_torch_nchw_order():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    out = L.Flatten().apply({}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(out, x.reshape(2, -1))


def test_relu_and_relu6_gradients_follow_torch_at_the_kinks():
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0], np.float32)
    for layer, fn in ((L.ReLU(), F.relu), (L.ReLU6(), F.relu6)):
        g = jax.grad(lambda z: layer.apply({}, z).sum())(jnp.asarray(x))
        t = torch.tensor(x, requires_grad=True)
        fn(t).sum().backward()
        np.testing.assert_array_equal(np.asarray(g), t.grad.numpy())
        np.testing.assert_array_equal(np.asarray(layer.apply({}, jnp.asarray(x))),
                                      fn(torch.tensor(x)).numpy())


@pytest.mark.parametrize("size,k,s,pads,d", [
    (15, 3, 1, ((1, 1), (1, 1)), 1), (16, 3, 2, ((0, 1), (0, 1)), 1),
    (17, 5, 2, ((1, 2), (1, 2)), 1), (9, 3, 1, ((2, 2), (2, 2)), 2),
    (4, 5, 1, ((2, 2), (2, 2)), 1), (11, 5, 3, ((0, 2), (1, 0)), 1)])
def test_depthwise_conv_matches_torch_grouped_conv_forward_and_backward(size, k, s, pads, d):
    # the CPU path of a depthwise Conv (sum of shifted slices) against torch's grouped conv, in
    # float64 so only the implementations differ (EfficientNet's asymmetric pads included)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, size, size, 6))
    w = rng.standard_normal((k, k, 1, 6))
    with jax.enable_x64(True):
        layer = L.Conv(features=6, kernel_size=k, strides=s, padding=pads, groups=6, dilation=d,
                       use_bias=False)
        params = {"kernel": jnp.asarray(w)}
        y, vjp = jax.vjp(lambda xx, ww: layer.forward({"kernel": ww}, xx), jnp.asarray(x),
                         params["kernel"])
        g = rng.standard_normal(y.shape)
        gx, gw = vjp(jnp.asarray(g))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
    xpad = F.pad(xt, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    yt = F.conv2d(xpad, wt, stride=s, dilation=d, groups=6)
    yt.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-12)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), atol=1e-11)
    # forward-mode works as well (no custom_vjp in the way)
    with jax.enable_x64(True):
        _, t = jax.jvp(lambda xx: layer.forward(params, xx), (jnp.asarray(x),),
                       (jnp.ones_like(jnp.asarray(x)),))
    assert t.shape == y.shape
