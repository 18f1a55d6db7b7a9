import numpy as np
import pytest
from PIL import Image

import xaijax as xj


@pytest.fixture(scope="module")
def model():
    return xj.models.get("vgg16")


def test_uint8_pil_and_float_inputs_agree(model):
    img = xj.data.load_image("chelsea")
    a = xj.models.preprocess(model, img)
    b = xj.models.preprocess(model, Image.fromarray(img))
    c = xj.models.preprocess(model, img.astype(np.float32) / 255.0)
    assert a.shape == (1, 224, 224, 3) and a.dtype == np.float32
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c, atol=0.03)


def test_normalisation_is_invertible(model):
    img = xj.data.load_image("coffee")
    x = xj.models.preprocess(model, img, resize="stretch")
    back = xj.models.images_from_normalised(model, x)[0]
    ref = np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(back, ref, atol=1e-5)


def test_bad_images_are_refused(model):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        xj.models.preprocess(model, np.full((8, 8, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        xj.models.preprocess(model, np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        xj.models.preprocess(model, np.zeros((8, 8), np.uint8))


def test_bundled_photos_load():
    for name in xj.data.SAMPLE_NAMES:
        im = xj.data.load_image(name)
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
    with pytest.raises(ValueError, match="bundled"):
        xj.data.load_image("nope")
