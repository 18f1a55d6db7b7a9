import os

import numpy as np
import pytest
from PIL import Image

import xaijax as xj


def test_jet_endpoints_and_shape():
    rgb = xj.viz.apply_colormap(np.array([[0.0, 0.5, 1.0]]), "jet")
    assert rgb.shape == (1, 3, 3)
    np.testing.assert_allclose(rgb[0, 0], [0, 0, 0.5], atol=1e-6)  # dark blue
    np.testing.assert_allclose(rgb[0, 2], [0.5, 0, 0], atol=1e-6)  # dark red


def test_signed_maps_keep_zero_at_the_middle():
    h = np.array([[-2.0, 0.0, 1.0]])
    v = xj.viz.normalize(h, percentile=100)
    np.testing.assert_allclose(v, [[0.0, 0.5, 0.75]])


def test_overlay_blends_and_validates_shapes():
    img = np.zeros((4, 5, 3), np.float32)
    out = xj.viz.overlay(img, np.arange(20, dtype=np.float32).reshape(4, 5), alpha=1.0)
    assert out.shape == (4, 5, 3) and out.max() <= 1.0
    with pytest.raises(ValueError, match="does not match"):
        xj.viz.overlay(img, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        xj.viz.overlay(img, np.full((4, 5), np.nan))


def test_save_image_is_atomic_and_keeps_existing_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    xj.viz.save_image(str(path), np.ones((4, 4, 3)))
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        xj.viz.save_image(str(path), np.zeros((4, 4, 3)))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.png"]


def test_grid_tiles_images():
    g = xj.viz.grid([np.zeros((3, 3, 3))] * 5, cols=2, pad=1)
    assert g.shape == (3 * 4 + 1, 2 * 4 + 1, 3)


def test_saved_image_gets_the_mode_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        out = xj.viz.save_image(str(tmp_path / "a.png"), np.zeros((4, 4, 3)))
    finally:
        os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o644
