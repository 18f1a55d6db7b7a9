"""The hand-drawn boxes of the bundled photos: the JSON is consistent with the photos and the
ImageNet labels, and ``preprocess_boxes`` puts a box where ``xj.models.preprocess`` puts the
pixels it covered (checked by painting the box, preprocessing the painted photo, thresholding)."""

import flax.linen as nn
import numpy as np
import pytest

import xaijax as xj
from xaijax.models.labels import class_name


class _MeanColour(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x.mean(axis=(1, 2))


def _identity_model(input_size=(224, 224)):
    """A Model whose preprocess gives pixels in [0, 1] (mean 0, std 1)."""
    return xj.models.wrap(_MeanColour(), {}, input_size=input_size, num_classes=3,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_every_bundled_photo_has_boxes_inside_it_with_its_imagenet_class():
    ann = xj.data.box_annotations()
    assert sorted(ann["images"]) == sorted(xj.data.SAMPLE_NAMES)
    assert "by eye" in ann["method"]
    for name, rec in ann["images"].items():
        h, w, _ = xj.data.load_image(name).shape
        assert (rec["height"], rec["width"]) == (h, w), name
        ob = xj.data.object_boxes(name)
        assert ob.boxes.dtype == np.int32 and ob.boxes.shape == (len(rec["objects"]), 4)
        assert len(ob.boxes) >= 1
        for (x0, y0, x1, y1), label, cname, obj in zip(ob.boxes, ob.labels, ob.class_names,
                                                      rec["objects"]):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, ob.boxes)
            assert class_name(int(label)) == cname, (name, label, cname)
            # "model_top1" agrees with the recorded top-1 classes of both resize modes
            tops = {rec["model_top1"][m][0] for m in ("crop", "stretch")}
            assert obj["model_top1"] == (tops == {int(label)}), name


def test_object_boxes_rejects_an_unknown_photo():
    with pytest.raises(ValueError, match="annotated photos"):
        xj.data.object_boxes("lena")


def _tie_free(edges, n):
    """Pixel indices along an axis whose centre is not within 0.05 px of a box edge (at an
    exact tie the painted threshold may fall either way)."""
    c = np.arange(n) + 0.5
    return np.all(np.abs(c[:, None] - np.asarray(edges)[None, :]) > 0.05, axis=1)


@pytest.mark.parametrize("resize,size,crop_fraction", [
    ("crop", None, 0.875), ("stretch", None, 0.875), ("crop", (160, 200), 0.7),
    ("stretch", (97, 131), 0.875), ("none", None, 0.875)])
def test_preprocess_boxes_matches_the_painted_box_after_preprocess(resize, size, crop_fraction):
    model = _identity_model()
    for name in xj.data.SAMPLE_NAMES:
        photo = xj.data.load_image(name)
        box = xj.data.object_boxes(name).boxes[0]
        painted = np.zeros_like(photo)
        x0, y0, x1, y1 = box
        painted[y0:y1, x0:x1] = 255
        out = np.asarray(xj.models.preprocess(model, painted, size=size, resize=resize,
                                              crop_fraction=crop_fraction))[0, ..., 0]
        t = xj.data.preprocess_boxes(model, box[None], photo.shape, size=size, resize=resize,
                                     crop_fraction=crop_fraction)
        assert t.shape == (1, 4) and t.dtype == np.float32
        oh, ow = out.shape
        expected = np.asarray(xj.metrics.boxes_to_masks(t, (oh, ow)))[0]
        ok = _tie_free(t[0, 1::2], oh)[:, None] & _tie_free(t[0, 0::2], ow)[None, :]
        np.testing.assert_array_equal((out > 0.5)[ok], expected[ok], err_msg=f"{name} {resize}")
        # the fractional edges carry the painted mass (bilinear resampling keeps it)
        area = (t[0, 2] - t[0, 0]) * (t[0, 3] - t[0, 1])
        np.testing.assert_allclose(out.sum(), area, rtol=0.01, err_msg=f"{name} {resize}")


def test_preprocess_boxes_clips_to_the_crop_and_empties_a_box_cropped_away():
    # a 100 x 400 photo, "crop" to 224: scaled to 256 x 1024, columns 400..624 kept
    # (original columns 156.25..243.75), rows 16..240
    t = xj.data.preprocess_boxes(None, [[0, 0, 50, 100], [150, 10, 170, 20], [399, 0, 400, 1]],
                                 (100, 400), size=(224, 224))
    np.testing.assert_allclose(t, [[0, 0, 0, 224], [0, 9.6, 35.2, 35.2], [224, 0, 224, 0]],
                               atol=1e-4)
    assert xj.data.preprocess_boxes(None, [1, 2, 3, 4], (10, 10), size=(10, 10),
                                    resize="stretch").shape == (4,)


def test_preprocess_boxes_errors_say_what_to_pass():
    with pytest.raises(ValueError, match="size="):
        xj.data.preprocess_boxes(None, [[0, 0, 1, 1]], (10, 10))
    with pytest.raises(ValueError, match="resize must be"):
        xj.data.preprocess_boxes(None, [[0, 0, 1, 1]], (10, 10), size=(4, 4), resize="pad")
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        xj.data.preprocess_boxes(None, [[0, 0, 1]], (10, 10), size=(4, 4))
    with pytest.raises(ValueError, match="photo.shape"):
        xj.data.preprocess_boxes(None, [[0, 0, 1, 1]], (10,), size=(4, 4))
