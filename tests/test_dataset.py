"""Data-set runs (xj.run_dataset, ``xaijax explain DIR --out OUT_DIR``): layout, manifest,
the class each row explains, corrupt images, and resuming after a kill with nothing lost and
nothing computed twice."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import xaijax as xj
from xaijax import cli
from xaijax import dataset

N, BS = 11, 4  # three batches: rows 0-3, 4-7, 8-10
BAD = {5: "garbage", 9: "truncated"}
OPTS = ["--model", "small_cnn", "--random", "--method", "smoothgrad", "--opt", "n_samples=2",
        "--batch-size", str(BS), "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rs = np.random.RandomState(0)
    for i in range(N):
        p = d / f"im{i:02d}.png"
        Image.fromarray(rs.randint(0, 255, (30 + i, 40, 3), np.uint8)).save(p)
        if BAD.get(i) == "garbage":
            p.write_bytes(b"this is not an image")
        elif BAD.get(i) == "truncated":
            p.write_bytes(p.read_bytes()[:60])
    return str(d)


@pytest.fixture(scope="module")
def model():
    return xj.models.get("small_cnn", pretrained=False, seed=0)  # what `--random` builds


def run(model, src, out, **kw):
    return xj.run_dataset(model, src, method="smoothgrad", out=str(out), batch_size=BS,
                          n_samples=2, key=jax.random.PRNGKey(0), progress=False, **kw)


@pytest.fixture(scope="module")
def reference(images, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    r = run(model, images, out)
    return r, dataset.read_heatmaps(str(out)), dataset.read_manifest(str(out))


def test_heatmaps_equal_explain_and_failed_rows_are_nan(images, model, reference):
    r, heat, _ = reference
    assert heat.shape == (N, 32, 32) and heat.dtype == np.float32
    assert sorted(r.computed) == list(range(N))
    good = [i for i in range(N) if i not in BAD]
    x = np.stack([dataset.load_image(model, r.images[i]) for i in good[:BS]])
    ex = xj.explain(model, x, "top1", method="smoothgrad", n_samples=2, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(heat[good[:BS]], ex.heatmap, rtol=1e-5, atol=1e-7)
    assert np.isnan(heat[list(BAD)]).all() and np.isfinite(heat[good]).all()


def test_targets_are_each_images_top1_and_minus_one_for_failed_rows(images, model, reference,
                                                                    tmp_path):
    r, _, _ = reference
    good = [i for i in range(N) if i not in BAD]
    x = np.stack([dataset.load_image(model, r.images[i]) for i in good])
    np.testing.assert_array_equal(r.targets()[good], xj.explain(model, x, "top1").target)
    # the random network predicts one class for every image; with its fc bias centring the
    # logits on these images the classes differ, so a row explained for another image's
    # class would show
    v = jax.tree_util.tree_map(lambda a: a, model.variables)
    v["params"]["fc"]["bias"] = v["params"]["fc"]["bias"] - np.asarray(model(x)).mean(0)
    split = model.replace(variables=v)
    s = xj.run_dataset(split, images, method="gradient", out=str(tmp_path / "split"),
                       batch_size=BS, progress=False)
    t = dataset.read_targets(s.out)
    assert t.shape == (N,) and t.dtype == np.int32
    top1 = xj.explain(split, x, "top1", method="gradient").target
    np.testing.assert_array_equal(t[good], top1)
    assert len(set(top1.tolist())) >= 3
    assert (t[list(BAD)] == -1).all()


def test_int_target_is_every_rows_target(images, model, tmp_path):
    r = xj.run_dataset(model, images, method="gradient", out=str(tmp_path / "t3"),
                       batch_size=BS, target=3, progress=False)
    t = r.targets()
    assert (t[[i for i in range(N) if i not in BAD]] == 3).all()
    assert (t[list(BAD)] == -1).all()


def test_missing_targets_are_written_again_on_resume(images, model, reference, tmp_path):
    """A folder without targets.zarr (written before it existed, or deleted): the rerun
    computes no heatmap and writes each committed batch's targets (top-1 again)."""
    r, ref_heat, _ = reference
    out = str(tmp_path / "old")
    shutil.copytree(r.out, out)
    shutil.rmtree(os.path.join(out, "targets.zarr"))
    with pytest.raises(FileNotFoundError, match="no targets.zarr"):
        dataset.read_targets(out)
    again = run(model, images, out)
    assert again.computed == []
    np.testing.assert_array_equal(again.targets(), r.targets())
    np.testing.assert_array_equal(again.heatmaps(), ref_heat)


def test_manifest_records_the_run(images, model, reference):
    r, _, man = reference
    for k in ("model", "weights", "method", "options", "versions", "images", "done", "failed"):
        assert k in man, k
    assert man["model"] == "small_cnn" and man["method"] == "smoothgrad"
    assert man["weights"] == dataset.weights_hash(model)
    assert man["options"] == {"key": [0, 0], "n_samples": 2}
    assert {"jax", "grain", "tensorstore", "xaijax"} <= set(man["versions"])
    assert man["images"] == sorted(os.path.join(images, f) for f in os.listdir(images))
    assert man["done"] == [man["images"][i] for i in range(N) if i not in BAD]
    assert sorted(man["failed"]) == [man["images"][i] for i in sorted(BAD)]
    assert all(v.startswith("unreadable image") for v in man["failed"].values())


def test_finished_run_reruns_nothing_and_other_config_is_refused(images, model, reference,
                                                                 tmp_path):
    r, _, _ = reference
    assert run(model, images, r.out).computed == []
    with pytest.raises(ValueError, match="another method"):
        xj.run_dataset(model, images, method="gradient", out=r.out, batch_size=BS,
                       progress=False)
    with pytest.raises(ValueError, match="another batch_size"):
        xj.run_dataset(
            model, images, method="smoothgrad", out=r.out, batch_size=2, n_samples=2,
            key=jax.random.PRNGKey(0), progress=False)


def test_killed_cli_run_resumes_without_loss_or_recomputation(images, model, reference,
                                                              tmp_path):
    """The CLI is stopped (os._exit, as a kill) right after its 2nd batch reached
    heatmaps.zarr and before the manifest recorded it; the same command resumes."""
    _, ref_heat, ref_man = reference
    out = str(tmp_path / "run")
    env = dict(os.environ, **{dataset.EXIT_AFTER_ENV: "2"})
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "xaijax.cli", "explain", images, "--out", out,
                        *OPTS], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 17, p.stderr[-2000:]
    assert dataset.committed_batches(out) == {0, 1}
    # each batch's targets chunk is written before its heatmap chunk
    assert dataset._chunks_on_disk(out, "targets.zarr", 1) == {0, 1}
    killed = dataset.read_manifest(out)  # written at the start and at most every 5 s
    assert set(killed["done"]) <= set(killed["images"][:BS]) and killed["failed"] == {}
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary left over
    # a chunk write cut short leaves tensorstore's temporary "<chunk>.__lock" (it renames on
    # success): not a committed batch
    cut = os.path.join(out, "heatmaps.zarr", "c", "2", "0")
    os.makedirs(cut)
    with open(os.path.join(cut, "0.__lock"), "wb") as f:
        f.write(b"\0" * 100)
    assert dataset.committed_batches(out) == {0, 1}
    # resume with the same command, in this process, to see what it computes
    r = run(model, images, out)
    assert sorted(r.computed) == list(range(2 * BS, N))  # only the third batch
    heat = dataset.read_heatmaps(out)
    np.testing.assert_array_equal(heat, ref_heat)  # every row as in one uninterrupted run
    np.testing.assert_array_equal(r.targets(), reference[0].targets())
    man = dataset.read_manifest(out)
    assert man["done"] == ref_man["done"] and man["failed"] == ref_man["failed"]


def test_cli_glob_run_with_overlays(images, reference, tmp_path, capsys):
    _, ref_heat, _ = reference
    out = str(tmp_path / "glob")
    assert cli.main(["explain", os.path.join(images, "im0*.png"), "--out", out, "--overlays",
                     *OPTS]) == 0
    text = capsys.readouterr().out
    assert "8 of 10 image(s) done (10 computed now, 2 failed)" in text and "failed: " in text
    np.testing.assert_array_equal(dataset.read_heatmaps(out), ref_heat[:10])
    pngs = sorted(os.listdir(os.path.join(out, "overlays")))
    assert len(pngs) == 8 and pngs[0] == "000000_im00.png"
    with pytest.raises(SystemExit, match="output folder"):
        cli.main(["explain", images, "--out", str(tmp_path / "x.png"), *OPTS])
