"""xaijax.io checkpoints: state_dict errors name the key, .safetensors / .pth input, orbax round
trip, architecture checks, and the ``xaijax convert`` command (:mod:`xaijax.io.convert`).

Logit comparisons use a 64x64 batch of 2 (ResNet-18 accepts any size >= 32) and the parity bar
of the zoo tests (1e-4 relative to the largest logit, float32)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xaijax as xj  # noqa: E402
from xaijax.io import checkpoint, state_dict_to_variables  # noqa: E402
from tests.helpers import assert_rel_close, to_nhwc, torch_pair  # noqa: E402


@pytest.fixture(scope="module")
def resnet18():
    """(state_dict as numpy, reference logits, NCHW input) of a random torchvision ResNet-18."""
    tm, _ = torch_pair("resnet18")
    sd = {k: v.detach().cpu().numpy() for k, v in tm.state_dict().items()}
    x = np.random.RandomState(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    return sd, ref, x


@pytest.fixture(scope="module")
def skeleton():
    return xj.models.build("resnet18", random_init=False)


_apply = jax.jit(lambda m, z: m(z))  # one compilation for every ResNet-18 built here


def _logits(model, x):
    return np.asarray(_apply(model, to_nhwc(x)))


# ---- state_dict errors ---------------------------------------------------------------------


def test_missing_key_is_named(resnet18, skeleton):
    sd = dict(resnet18[0])
    del sd["layer2.0.downsample.1.running_var"]
    with pytest.raises(ValueError, match=r"missing key 'layer2\.0\.downsample\.1\.running_var'"):
        state_dict_to_variables(skeleton, sd)


def test_extra_key_is_named(resnet18, skeleton):
    sd = dict(resnet18[0])
    sd["layer5.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"unexpected key 'layer5\.0\.conv1\.weight'"):
        state_dict_to_variables(skeleton, sd)


def test_head_size_mismatch_suggests_num_classes(resnet18, skeleton):
    sd = dict(resnet18[0])
    sd["fc.weight"] = np.zeros((10, 512), np.float32)
    sd["fc.bias"] = np.zeros((10,), np.float32)
    with pytest.raises(ValueError, match=r"key 'fc\.(weight|bias)' has shape.*"
                                         r"checkpoint has 10 classes: pass num_classes=10"):
        state_dict_to_variables(skeleton, sd)


@pytest.mark.parametrize("key,shape", [("fc.weight", (10, 256)),
                                       ("layer1.0.conv1.weight", (64, 64, 1, 1)),
                                       ("bn1.running_mean", (32,))])
def test_misshaped_key_is_named(resnet18, skeleton, key, shape):
    sd = dict(resnet18[0])
    sd[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=rf"key '{key}' has shape"):
        state_dict_to_variables(skeleton, sd)


def test_file_errors_name_the_file_and_key(resnet18, tmp_path):
    from safetensors.numpy import save_file

    sd = dict(resnet18[0])
    del sd["fc.bias"]
    path = str(tmp_path / "broken.safetensors")
    save_file(sd, path)
    with pytest.raises(ValueError, match=r"broken\.safetensors.*missing key 'fc\.bias'"):
        xj.models.get("resnet18", weights=path)


def test_unknown_suffix_and_missing_file(tmp_path):
    p = tmp_path / "weights.h5"
    p.write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"unknown checkpoint type 'weights\.h5'"):
        checkpoint.read_state_dict(str(p))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xj.models.get("resnet18", weights=str(tmp_path / "nope.pth"))


def test_strip_prefix_only_when_every_key_has_it():
    assert checkpoint.strip_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert checkpoint.strip_prefix({"_orig_mod.module.a": 1}) == {"a": 1}
    assert checkpoint.strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}


# ---- file formats ---------------------------------------------------------------------------


def test_safetensors_round_trip_matches_torch(resnet18, tmp_path):
    from safetensors.numpy import load_file, save_file

    sd, ref, x = resnet18
    path = str(tmp_path / "r18.safetensors")
    save_file({f"module.{k}": v for k, v in sd.items()}, path)  # DataParallel-style keys
    back = load_file(path)
    assert all(np.array_equal(back[f"module.{k}"], v) for k, v in sd.items())
    model = xj.models.get("resnet18", weights=path)
    assert_rel_close(_logits(model, x), ref, 1e-4, "safetensors logits")


@pytest.mark.parametrize("legacy", [False, True])
def test_pth_matches_torch(resnet18, tmp_path, legacy):
    tm, _ = torch_pair("resnet18")
    sd, ref, x = resnet18
    path = str(tmp_path / "r18.pth")
    torch.save(tm.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    model = xj.models.get("resnet18", weights=path)
    assert_rel_close(_logits(model, x), ref, 1e-4, f"pth (legacy={legacy}) logits")


def test_pth_training_checkpoint_is_unwrapped(resnet18, tmp_path):
    tm, _ = torch_pair("resnet18")
    path = str(tmp_path / "ckpt.pt")
    torch.save({"epoch": 3, "state_dict": tm.state_dict()}, path)
    got = checkpoint.read_state_dict(path)
    assert set(got) == set(resnet18[0])
    assert np.array_equal(got["fc.weight"], resnet18[0]["fc.weight"])


def test_pth_that_is_not_a_state_dict_is_refused(tmp_path):
    path = str(tmp_path / "list.pth")
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="not a state_dict"):
        checkpoint.read_state_dict(path)


# ---- orbax ------------------------------------------------------------------------------------


def test_orbax_round_trip(resnet18, skeleton, tmp_path):
    sd, ref, x = resnet18
    variables = state_dict_to_variables(skeleton, sd)
    out = checkpoint.save_variables(str(tmp_path / "r18"), variables, "resnet18")
    meta = json.load(open(os.path.join(out, checkpoint.METADATA_FILE)))
    assert meta["model"] == "resnet18" and meta["num_classes"] == 1000
    back = checkpoint.load_variables(out, skeleton)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(variables)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(variables)):
        assert np.array_equal(a, b)
    model = xj.models.get("resnet18", weights=out)
    assert_rel_close(_logits(model, x), ref, 1e-4, "orbax logits")


def test_orbax_wrong_architecture_fails_clearly(resnet18, skeleton, tmp_path):
    out = checkpoint.save_variables(str(tmp_path / "r18"), skeleton.variables, "resnet18")
    with pytest.raises(ValueError, match=r"holds variables of 'resnet18', not 'resnet34'"):
        xj.models.get("resnet34", weights=out)


def test_orbax_wrong_num_classes_fails_clearly(skeleton, tmp_path):
    out = checkpoint.save_variables(str(tmp_path / "r18"), skeleton.variables, "resnet18")
    with pytest.raises(ValueError, match="1000 classes.*pass num_classes=1000"):
        xj.models.get("resnet18", weights=out, num_classes=10)


def test_orbax_refuses_to_overwrite(skeleton, tmp_path):
    out = checkpoint.save_variables(str(tmp_path / "r18"), skeleton.variables, "resnet18")
    with pytest.raises(FileExistsError, match="exists"):
        checkpoint.save_variables(out, skeleton.variables, "resnet18")
    checkpoint.save_variables(out, skeleton.variables, "resnet18", overwrite=True)
    other = tmp_path / "notmine"
    other.mkdir()
    with pytest.raises(FileExistsError, match="not written by xaijax"):
        checkpoint.save_variables(str(other), skeleton.variables, "resnet18", overwrite=True)


def test_directory_without_metadata_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a directory written by `xaijax convert`"):
        xj.models.get("small_cnn", weights=str(tmp_path))


# ---- command line ------------------------------------------------------------------------------


def _cli(argv):
    from xaijax.cli import main

    return main(argv)


def test_convert_command(resnet18, tmp_path, capsys):
    from safetensors.numpy import save_file

    sd, ref, x = resnet18
    src = str(tmp_path / "r18.safetensors")
    save_file(sd, src)
    out = str(tmp_path / "r18-xj")
    assert _cli(["convert", src, "--model", "resnet18", "--out", out]) == 0
    assert "resnet18" in capsys.readouterr().out
    model = xj.models.get("resnet18", weights=out)
    assert_rel_close(_logits(model, x), ref, 1e-4, "converted logits")
    # a second run without --force refuses; with --force it overwrites
    assert _cli(["convert", src, "--model", "resnet18", "--out", out]) == 2
    assert "exists" in capsys.readouterr().err
    assert _cli(["convert", src, "--model", "resnet18", "--out", out, "--force"]) == 0


def test_convert_command_errors(resnet18, tmp_path, capsys):
    from safetensors.numpy import save_file

    src = str(tmp_path / "r18.safetensors")
    save_file(resnet18[0], src)
    assert _cli(["convert", src, "--model", "resnet34", "--out", str(tmp_path / "o")]) == 2
    assert "missing key 'layer1.2.conv1.weight'" in capsys.readouterr().err
    assert _cli(["convert", src, "--model", "resnet19", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_convert_num_classes(tmp_path, capsys):
    from safetensors.numpy import save_file

    skel = xj.models.build("small_cnn", num_classes=7, random_init=False)
    rng = np.random.RandomState(0)
    sd = {}
    for tap, (_, typ) in skel.layers().items():
        if typ in ("Conv", "Dense"):
            cout = {"conv1": 16, "conv2": 16, "conv3": 32, "conv4": 32, "conv5": 64, "fc": 7}[tap]
            cin = {"conv1": 3, "conv2": 16, "conv3": 16, "conv4": 32, "conv5": 32, "fc": 64}[tap]
            shape = (cout, cin, 3, 3) if typ == "Conv" else (cout, cin)
            sd[f"{tap}.weight"] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
            sd[f"{tap}.bias"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    src = str(tmp_path / "small.safetensors")
    save_file(sd, src)
    assert _cli(["convert", src, "--model", "small_cnn", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "key 'fc." in err and "pass num_classes=7" in err, err
    out = str(tmp_path / "b")
    assert _cli(["convert", src, "--model", "small_cnn", "--num-classes", "7", "--out", out]) == 0
    back = xj.models.get("small_cnn", num_classes=7, weights=out)
    direct = skel.replace_variables(state_dict_to_variables(skel, sd))
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(back(z)), np.asarray(direct(z)))
    assert np.asarray(back.variables["params"]["fc"]["kernel"]).shape == (64, 7)
