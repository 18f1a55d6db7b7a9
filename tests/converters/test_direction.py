"""The library never imports ``converters`` (tooling imports the library, not the reverse):
no module under xaijax/ imports it, ``xaijax convert`` runs with it unimportable, and its old
names are the library's own objects."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import numpy as np

import xaijax as xj

ROOT = pathlib.Path(xj.__file__).resolve().parent


def _imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, [node.module]


def test_no_library_module_imports_converters():
    offenders = []
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 20, files  # the scan sees the package
    for path in files:
        for lineno, names in _imported_modules(ast.parse(path.read_text(), str(path))):
            offenders += [f"{path.relative_to(ROOT.parent)}:{lineno} imports {n}" for n in names
                          if n == "converters" or n.startswith("converters.")]
    assert not offenders, "xaijax/ must not import the converters tooling:\n" + "\n".join(
        offenders)


def _torch_layout(model):
    """``model``'s Conv/Dense variables as a torch state_dict (OIHW / (out, in) kernels)."""
    sd = {}
    for tap, (path, typ) in model.layers().items():
        if typ not in ("Conv", "Dense"):
            continue
        node = model.variables["params"]
        for p in path:
            node = node[p]
        k = np.asarray(node["kernel"])
        # contiguous: safetensors.numpy.save_file writes a transposed view's memory as it lies
        sd[f"{tap}.weight"] = np.ascontiguousarray(k.transpose(3, 2, 0, 1) if typ == "Conv"
                                                   else k.T)
        sd[f"{tap}.bias"] = np.asarray(node["bias"])
    return sd


def test_convert_command_runs_with_converters_unimportable(tmp_path):
    from safetensors.numpy import save_file

    model = xj.models.get("small_cnn", num_classes=5, seed=3)
    src, out = str(tmp_path / "small.safetensors"), str(tmp_path / "small-xj")
    save_file(_torch_layout(model), src)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["converters"] = None  # any `import converters...` raises ImportError
        from xaijax.cli import main
        rc = main(["convert", {src!r}, "--model", "small_cnn", "--num-classes", "5",
                   "--out", {out!r}])
        assert sys.modules["converters"] is None
        sys.exit(rc)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"converted {src} -> {out} (small_cnn, 5 classes" in r.stdout
    back = xj.models.get("small_cnn", num_classes=5, weights=out)
    x = np.random.RandomState(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))


def test_converters_names_are_the_library_objects(tmp_path, capsys):
    import converters
    import converters.cli
    from converters.checkpoint import convert_file
    from converters.state_dict import state_dict_to_variables

    from xaijax import io
    from xaijax.io import checkpoint, convert, state_dict

    assert converters.checkpoint is checkpoint and converters.state_dict is state_dict
    assert convert_file is io.convert_file is converters.convert_file
    assert state_dict_to_variables is io.state_dict_to_variables
    assert converters.load_variables is checkpoint.load_variables
    assert converters.cli.run_convert is convert.run_convert
    # the stand-alone entry point (python -m converters.cli) still converts
    from safetensors.numpy import save_file

    model = xj.models.get("small_cnn", seed=1)
    src, out = str(tmp_path / "s.safetensors"), str(tmp_path / "s-xj")
    save_file(_torch_layout(model), src)
    assert converters.cli.main([src, "--model", "small_cnn", "--out", out]) == 0
    assert "small_cnn, 10 classes" in capsys.readouterr().out
    assert checkpoint.describe(out) == ("small_cnn", 10)
