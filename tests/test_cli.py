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
    assert cli.main(["methods"]) == 0
    assert "gradient" in capsys.readouterr().out
    assert cli.main(["models"]) == 0
    assert "vgg16" in capsys.readouterr().out
