"""Composites of pasted cut-outs: a pure function of the seed, masks that are exactly the pasted
pixels (found by pasting objects of two constant colours and comparing), boxes that are the
masks' bounding boxes; and ``filter_by_model`` keeping exactly what a stub classifier gets
right."""

import time

import flax.linen as nn
import numpy as np
import pytest

import xaijax as xj
from xaijax.data import cutouts

TEXTURES = ("noise", "stripes", "gradient", "checkerboard")


def test_composites_shapes_dtypes_and_labels_of_their_sources():
    d = xj.data.composites(12, size=48, seed=0)
    assert d["images"].shape == (12, 48, 48, 3) and d["images"].dtype == np.uint8
    assert d["masks"].shape == (12, 48, 48) and d["masks"].dtype == bool
    assert d["boxes"].shape == (12, 4) and d["boxes"].dtype == np.int32
    assert d["labels"].shape == (12,) and d["labels"].dtype == np.int32
    for src, label, bg in zip(d["sources"], d["labels"], d["backgrounds"]):
        assert label in xj.data.object_boxes(src).labels
        kind, _, photo = bg.partition(":")
        assert kind in xj.data.BACKGROUNDS
        if photo:  # never the object's own photo, nor the other launch vehicle's
            assert photo != src and {photo, src} != {"rocket", "astronaut"}


def test_composites_are_a_pure_function_of_the_seed_and_a_prefix_of_a_longer_set():
    a = xj.data.composites(10, size=40, seed=3)
    b = xj.data.composites(10, size=40, seed=3)
    c = xj.data.composites(4, size=40, seed=3)
    d = xj.data.composites(10, size=40, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        np.testing.assert_array_equal(a[k][:4], c[k], err_msg=k)
    assert not np.array_equal(a["images"], d["images"])


def test_boxes_are_the_masks_bounding_boxes_and_masks_are_rectangles():
    d = xj.data.composites(40, size=64, seed=1)
    for m, (x0, y0, x1, y1) in zip(d["masks"], d["boxes"]):
        ys, xs = np.nonzero(m)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x0, y0, x1, y1]
        assert m.sum() == (x1 - x0) * (y1 - y0)
        longer = max(x1 - x0, y1 - y0)
        assert 0.4 * 64 - 1 <= longer <= 0.8 * 64 + 1
    np.testing.assert_array_equal(xj.metrics.boxes_to_masks(d["boxes"], (64, 64)), d["masks"])


def test_masks_are_exactly_the_pasted_pixels(monkeypatch):
    """Every photo replaced by one constant colour, then by another: on texture backgrounds
    (which do not depend on the photos) the pixels that change are the pasted ones."""
    from PIL import Image

    def constant(rgb):
        return lambda name: Image.new("RGB", (800, 600), rgb)

    runs = []
    for rgb in [(10, 200, 30), (240, 20, 130)]:
        monkeypatch.setattr(cutouts, "_photo", constant(rgb))
        d = xj.data.composites(30, size=56, seed=5, backgrounds=TEXTURES)
        inside = d["images"][d["masks"]]
        assert (inside == np.asarray(rgb, np.uint8)).all()  # a constant survives resampling
        runs.append(d)
    changed = (runs[0]["images"] != runs[1]["images"]).any(axis=-1)
    np.testing.assert_array_equal(changed, runs[0]["masks"])
    np.testing.assert_array_equal(runs[0]["masks"], runs[1]["masks"])


def test_every_background_kind_and_object_appears_and_differs():
    d = xj.data.composites(60, size=32, seed=0)
    kinds = {b.split(":")[0] for b in d["backgrounds"]}
    assert kinds == set(xj.data.BACKGROUNDS)
    assert set(d["sources"]) == set(xj.data.SAMPLE_NAMES)
    # backgrounds are not flat: every image has variation outside its object
    for img, m in zip(d["images"], d["masks"]):
        assert img[~m].std() > 1.0


def test_two_hundred_composites_at_224_take_seconds():
    t = time.perf_counter()
    d = xj.data.composites(200, size=224, seed=0)
    dt = time.perf_counter() - t
    print(f"composites(200, size=224): {dt:.2f} s")
    assert d["images"].shape == (200, 224, 224, 3)
    assert dt < 30.0  # ~0.5 s on one CPU core; loose for a shared machine


def test_composites_errors_name_the_choices():
    with pytest.raises(ValueError, match="backgrounds must"):
        xj.data.composites(2, backgrounds=("plasma",))
    with pytest.raises(ValueError, match="annotated photos"):
        xj.data.composites(2, objects=("lena",))
    with pytest.raises(ValueError, match="scale"):
        xj.data.composites(2, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="seed"):
        xj.data.composites(2, seed=-1)
    assert xj.data.composites(0, size=16)["images"].shape == (0, 16, 16, 3)


# ------------------------------------------------------------------------------------------------
# filter_by_model


def _stub(data, correct, wrong_rank=None):
    """f(x) -> logits that ranks the label first for the images in ``correct`` and second
    (``wrong_rank=2``) or nowhere near the top for the others; it finds each image by value."""
    ref = data["images"].astype(np.float32) / 255.0
    labels = data["labels"]

    def f(x):
        x = np.asarray(x)
        logits = np.zeros((len(x), 1000), np.float32)
        for k, im in enumerate(x):
            i = int(np.flatnonzero((ref == im).all(axis=(1, 2, 3)))[0])
            logits[k] = np.linspace(0.0, 1.0, 1000)[::-1]  # class 0 first, then 1, ...
            if i in correct:
                logits[k, labels[i]] = 2.0
            elif wrong_rank == 2:
                logits[k, labels[i]] = 0.9999999  # second, after class 0
            else:
                logits[k, labels[i]] = -1.0
        return logits
    return f


def test_filter_keeps_exactly_what_a_stub_classifier_gets_right():
    d = xj.data.composites(11, size=24, seed=2)
    correct = {0, 3, 4, 9, 10}
    f = xj.data.filter_by_model(_stub(d, correct), d, batch_size=4)  # 4 + 4 + 3 (padded)
    assert f["index"].tolist() == sorted(correct)
    for k in ("images", "masks", "boxes", "labels", "sources", "backgrounds"):
        np.testing.assert_array_equal(f[k], d[k][sorted(correct)], err_msg=k)


def test_filter_top_k_accepts_the_label_in_second_place():
    d = xj.data.composites(6, size=24, seed=7)
    d = {**d, "labels": np.where(d["labels"] == 0, 1, d["labels"])}  # class 0 is always first
    f1 = xj.data.filter_by_model(_stub(d, {1}, wrong_rank=2), d, top_k=1)
    f2 = xj.data.filter_by_model(_stub(d, {1}, wrong_rank=2), d, top_k=2)
    assert f1["index"].tolist() == [1] and f2["index"].tolist() == list(range(6))


class _MeanColour(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x.mean(axis=(1, 2))


def test_filter_preprocesses_for_an_xaijax_model_and_pads_to_one_shape():
    """The model's normalisation decides: images 1 and 4 are classified differently from
    their raw pixel values."""
    model = xj.models.wrap(_MeanColour(), {}, input_size=(16, 16), num_classes=3,
                           mean=(0.9, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    colours = np.array([[255, 0, 0], [200, 100, 0], [0, 0, 200], [10, 20, 30], [230, 10, 0]])
    images = np.broadcast_to(colours[:, None, None, :], (5, 16, 16, 3)).astype(np.uint8)
    data = {"images": images, "labels": np.array([0, 1, 1, 2, 0]), "note": "kept as is"}
    f = xj.data.filter_by_model(model, data, batch_size=2)  # 2 + 2 + 1 (padded)
    assert f["index"].tolist() == [0, 1, 3] and f["note"] == "kept as is"
    raw = xj.data.filter_by_model(model, data, preprocess=lambda im: im / 255.0)
    assert raw["index"].tolist() == [0, 3, 4]


def test_filter_errors():
    d = {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.zeros(2, int)}
    with pytest.raises(ValueError, match="logits"):
        xj.data.filter_by_model(lambda x: np.zeros(3), d)
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        xj.data.filter_by_model(lambda x: x, {"images": d["images"]})
    with pytest.raises(ValueError, match="top_k"):
        xj.data.filter_by_model(lambda x: x, d, top_k=0)
