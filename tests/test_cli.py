import subprocess
import sys

import numpy as np
from PIL import Image

from xaijax import cli


def test_cli_explain_writes_overlay_for_bundled_and_file_images(tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 50, 3), np.uint8)).save(img)
    out = tmp_path / "o.png"
    rc = cli.main(["explain", str(img), "chelsea", "--model", "small_cnn", "--random",
                   "--method", "gradient", "--target", "3", "--out", str(out)])
    assert rc == 0
    pic = np.asarray(Image.open(out))
    assert pic.ndim == 3 and pic.shape[2] == 3 and pic.std() > 0
    assert "target 3" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xaijax.cli", "explain", "nofile.png", "--model",
                        "small_cnn", "--random", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no such image file 'nofile.png'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "xaijax.cli", "explain", "chelsea", "--model",
                        "small_cnn", "--random", "--method", "nope", "--out",
                        str(tmp_path / "x.png")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown method 'nope'" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_lists_methods_and_models(capsys):
    import xaijax as xj

    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in xj.methods.available():
        inf = xj.methods.info(name)
        assert inf.paper, f"method {name!r} names no paper (register(..., paper=...))"
        assert f"{name:24s}" in out and inf.paper in out and (inf.peer or "none") in out
    assert cli.main(["models"]) == 0
    assert "vgg16" in capsys.readouterr().out


def test_readme_method_table_lists_every_method():
    """The README's table of methods names every registered method and its peer library."""
    import re
    from pathlib import Path

    import xaijax as xj

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| ")]
    listed = {m for ln in rows for m in re.findall(r"`([a-z0-9_]+)`", ln.split("|")[2])}
    missing = sorted(set(xj.methods.available()) - listed)
    assert not missing, f"README's method table lacks {missing}"
    for name in xj.methods.available():
        peer = xj.methods.info(name).peer
        lib = peer.split()[0] if peer else ""
        if lib in ("Captum", "Zennit", "TorchRay", "PAIR", "pytorch-grad-cam"):
            row = next(ln for ln in rows if f"`{name}`" in ln.split("|")[2])
            assert lib.lower() in row.lower(), f"README row of {name!r} does not name {lib}"


def test_cli_evaluate_prints_the_table_and_writes_csv(tmp_path, capsys):
    import json

    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.RandomState(1)
    for i in range(3):
        Image.fromarray(rng.randint(0, 255, (40, 60, 3), np.uint8)).save(d / f"im{i}.png")
    boxes = {f"im{i}.png": [[10, 5, 40, 30]] for i in range(3)}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    rc = cli.main(["evaluate", str(d), "--model", "small_cnn", "--random", "--methods",
                   "gradient,gradcam", "--metrics", "deletion,pointing_game", "--boxes",
                   str(tmp_path / "boxes.json"), "--opt", "gradcam.tap='relu3'", "--csv",
                   str(tmp_path / "t.csv"), "--quiet", "--resize", "stretch"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "3 image(s)" in out and "pointing_game ↑" in out and "gradcam" in out
    assert (tmp_path / "t.csv").read_text().startswith("method,metric,statistic,image,value")


def test_cli_evaluate_box_masks_follow_the_preprocessing(tmp_path):
    """A box painted into the photo and the mask of that box land on the same pixels of the
    model's input, for both resize modes."""
    import xaijax as xj

    model = xj.models.get("small_cnn", num_classes=3)
    photo = np.full((50, 80, 3), 0, np.uint8)
    photo[10:40, 30:70] = 255
    im = Image.fromarray(photo)
    (tmp_path / "b.json").write_text('{"p.png": [[30, 10, 70, 40]]}')
    for resize in ("crop", "stretch"):
        m = cli._box_masks(str(tmp_path / "b.json"), ["p.png"], [im], model, resize)[0]
        px = xj.models.images_from_normalised(
            model, xj.models.preprocess(model, im, resize=resize))[0, ..., 0] >= 0.5
        assert m.shape == (32, 32) and m.any()
        # bilinear resampling blurs the painted edge over a pixel: compare away from it
        assert (m != px).sum() <= 2 * (m.sum(0).max() + m.sum(1).max()), (resize, m ^ px)
        assert (m & px).sum() >= 0.8 * m.sum()


def test_cli_evaluate_errors_are_clear(tmp_path, capsys):
    rc = cli.main(["evaluate", "chelsea", "--model", "small_cnn", "--random", "--methods",
                   "gradient", "--metrics", "pointing_game", "--quiet"])
    assert rc == 0  # the bundled photos ship their boxes
    assert "pointing_game" in capsys.readouterr().out
    (tmp_path / "b.json").write_text('{"other.png": [[0, 0, 5, 5]]}')
    # a bundled photo missing from the file falls back to its shipped boxes
    assert cli.main(["evaluate", "chelsea", "--model", "small_cnn", "--random", "--methods",
                     "gradient", "--metrics", "miou", "--boxes", str(tmp_path / "b.json"),
                     "--quiet"]) == 0
    img = tmp_path / "own.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(img)
    try:
        cli.main(["evaluate", str(img), "--model", "small_cnn", "--random", "--methods",
                  "gradient", "--metrics", "miou", "--boxes", str(tmp_path / "b.json")])
    except SystemExit as e:
        assert "has no boxes for image" in str(e) and "own.png" in str(e)
    else:
        raise AssertionError("missing boxes were accepted")
    try:
        cli.main(["evaluate", "chelsea", "--model", "small_cnn", "--random", "--methods",
                  "gradient", "--opt", "rise.num_masks=4"])
    except SystemExit as e:
        assert "'rise' is not one of --methods" in str(e)
    else:
        raise AssertionError("an option for an unlisted method was accepted")


def test_cli_compare_report_and_evaluate_html(tmp_path, capsys):
    """``xaijax compare`` writes the grid and an HTML page, ``report`` the page with the metric
    table and curves, ``evaluate --html`` the table's page (matplotlib: the test extra)."""
    import re

    import pytest

    pytest.importorskip("matplotlib")
    common = ["--model", "small_cnn", "--random", "--quiet"]
    grid, page = tmp_path / "grid.png", tmp_path / "c.html"
    assert cli.main(["compare", "chelsea", "--methods", "gradient,input_x_gradient",
                     "--out", str(grid), "--html", str(page), "--cmap", "jet", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^chelsea: class \d+ \(\d+, p=0\.\d+\); gradient [\d.e-]+s, "
                     r"input_x_gradient [\d.e-]+s$", out, re.M), out
    pic = np.asarray(Image.open(grid).convert("RGB"), np.float32)
    assert pic.shape[0] > 200 and pic.shape[1] > 400 and pic.std() > 10
    assert page.read_text().count('<img src="data:image/png;base64,') == 3  # grid + 2 methods
    # two 32x32 images and deletion: tests/viz compile the same metric program (on-disk cache)
    assert cli.main(["report", "chelsea", "coffee", "--methods", "gradient", "--metrics",
                     "deletion", "--html", str(tmp_path / "r.html"), *common]) == 0
    text = (tmp_path / "r.html").read_text()
    assert "<th>deletion ↓</th>" in text and "deletion curves" in text
    assert text.count("<img ") == 3  # grid, gradient's maps, the deletion curves
    assert cli.main(["evaluate", "chelsea", "coffee", "--methods", "gradient", "--metrics",
                     "deletion", "--html", str(tmp_path / "e.html"), *common]) == 0
    assert (tmp_path / "e.html").read_text().count("<img ") == 1
    try:
        cli.main(["compare", "chelsea", *common])
    except SystemExit as e:
        assert "give at least one" in str(e)
    else:
        raise AssertionError("compare without --out or --html was accepted")
