"""xj.viz.compare, the matplotlib figures (grid, FGVis Fig. 2, SISE blocks, curves, per-method
maps) and the core's independence from matplotlib."""

import ast
import pathlib
import sys

import jax
import numpy as np
import pytest

import xaijax as xj

matplotlib = pytest.importorskip("matplotlib")  # the test extra installs it (CI fails a skip)

METHODS = ["gradient", "input_x_gradient"]


@pytest.fixture(scope="module")
def setup():
    model = xj.models.get("small_cnn", num_classes=10, seed=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    return model, x, xj.viz.compare(model, x, METHODS, progress=False)


def _not_blank(img, min_std=0.05, inked=0.2):
    assert img.ndim == 3 and img.shape[2] == 3
    assert img.std() > min_std, "the picture is (nearly) one colour"
    assert (img < 0.9).mean() > inked, "the picture is mostly white"


def test_compare_keeps_what_the_grid_shows(setup):
    model, x, c = setup
    assert c.labels == tuple(METHODS) and c.methods == tuple(METHODS)
    assert c.signed == (False, True)  # the registry's `signed`
    assert c.heatmaps.shape == (2, 2, 32, 32) and c.seconds.shape == (2, 2)
    assert (c.seconds > 0).all() and (c.compile_seconds > 0).all()
    probs = np.asarray(jax.nn.softmax(model(x)))
    np.testing.assert_array_equal(c.target, probs.argmax(-1))
    np.testing.assert_allclose(c.probability, probs[np.arange(2), c.target], rtol=1e-6)
    assert c.class_names == tuple(f"class {int(t)}" for t in c.target)
    np.testing.assert_allclose(c.photos, xj.models.images_from_normalised(model, x))
    # each cell is the method's map of that image for that class (compiled for one image)
    for j in range(2):  # one-image calls: the program compare compiled (on-disk cache)
        ref = np.asarray(xj.explain(model, x[j:j + 1], c.target[j:j + 1],
                                    method="gradient").heatmap[0])
        np.testing.assert_allclose(c.heatmaps[0, j], ref, rtol=1e-5, atol=1e-7 * abs(ref).max())
    assert len(c.explanations) == 2 and c.explanations[1][1].heatmap.shape == (1, 32, 32)


def test_compare_options_and_errors(setup):
    model, x, _ = setup
    c = xj.viz.compare(model, ["chelsea"], ["gradient"], target=3, progress=False)
    assert (c.target == 3).all() and c.image_names == ("chelsea",)  # photos by name
    np.testing.assert_allclose(c.photos, xj.models.images_from_normalised(
        model, xj.models.preprocess(model, xj.data.load_image("chelsea"))))
    assert xj.viz.compare(model, x[:1], ["gradient"], image_names=["a"],
                          progress=False).image_names == ("a",)
    with pytest.raises(ValueError, match="1 names for 2 images"):
        xj.viz.compare(model, x, ["gradient"], image_names=["a"])
    with pytest.raises(TypeError, match=r"option\(s\) \['steps'\] belong to none"):
        xj.viz.compare(model, x, ["gradient"], steps=4)
    with pytest.raises(ValueError, match="unknown method"):
        xj.viz.compare(model, x, ["nope"])
    with pytest.raises(TypeError, match="needs an xaijax Model"):
        xj.viz.compare(model.apply_fn, x, ["gradient"])


def test_compare_figure_layout_colour_maps_and_pixels(setup):
    _, _, c = setup
    fig = c.figure()
    axes = fig.get_axes()
    images = [a for a in axes if a.images]
    bars = [a.child_axes[0] for a in axes if a.child_axes]  # inset colour bars
    assert len(images) == 2 * 3 and len(bars) == 2  # photo + 2 maps per row, a bar per method
    assert [a.get_xticklabels()[0].get_text() for a in bars] == ["0", "−max"]
    assert all(b.get_position().y1 <= a.get_position().y0 for a in images[-2:]
               for b in bars)  # under the last row
    titles = [a.get_title() for a in images]
    for j in range(2):
        for i, lb in enumerate(METHODS):
            t = titles[j * 3 + i + 1]
            assert t.startswith(lb) and c.class_names[j] in t
            assert f"{c.probability[j]:.2f}" in t and f"{c.seconds[i, j]:.3g} s" in t
    by_title = {a.get_title().split("\n")[0]: a.images[-1] for a in images[1:3]}
    signed = by_title["input_x_gradient"]
    assert signed.get_cmap().name == "RdBu_r" and signed.norm.vmin == -1 == -signed.norm.vmax
    assert by_title["gradient"].get_cmap().name == "viridis"
    # the diverging map is centred: a zero of the map is drawn white
    zero = signed.to_rgba(np.array([[0.0]]))[0, 0, :3]
    assert zero.min() > 0.95 and np.ptp(zero) < 0.01, zero
    blend = [a for a in c.figure(alpha=0.4).get_axes() if a.images][1]
    assert len(blend.images) == 2 and blend.images[1].get_alpha() == 0.4  # photo under map
    jet = c.figure(cmap="jet").get_axes()
    assert {a.images[-1].get_cmap().name for a in jet if a.images} >= {"jet", "RdBu_r"}
    img = xj.viz.figure_image(fig)
    w, h = fig.get_size_inches() * 100
    assert img.shape == (round(h), round(w), 3)
    _not_blank(img)


def _images_of(fig):
    return [a for a in fig.get_axes() if a.images]


def test_fgvis_figure_shows_the_papers_types(setup):
    """Fig. 2 a-f of Wagner et al. from a deletion-game result (the extras fgvis returns, made
    here from a known mask so the test compiles nothing); preservation has no d) and e)."""
    model, x, _ = setup
    m = jax.random.uniform(jax.random.PRNGKey(1), x.shape)
    extras = {"mask": m, "mean_mask": m.mean(-1), "explanation": x * m,
              "complement_mask": 1 - m, "evidence": x * (1 - m)}
    ex = xj.Explanation(heatmap=1 - m.mean(-1), extras=extras, method="fgvis")
    fig = xj.viz.fgvis_figure(model, x, ex)
    axes = _images_of(fig)
    assert len(axes) == 2 * 6
    assert [a.get_title() for a in axes[:6]] == [
        "a) input", "b) mask", "c) explanation", "d) complementary mask", "e) evidence",
        "f) mean mask"]
    pics = xj.viz.fgvis_images(model, x, ex)
    for k, name in enumerate(["image", "mask", "explanation", "complement_mask", "evidence",
                              "mean_mask"]):
        np.testing.assert_allclose(axes[6 + k].images[0].get_array(), pics[name][1])
    _not_blank(xj.viz.figure_image(fig))
    del extras["complement_mask"], extras["evidence"]
    pres = _images_of(xj.viz.fgvis_figure(model, x[:1], ex.replace(
        extras={k: v[:1] for k, v in extras.items()})))
    assert [a.get_title() for a in pres] == ["a) input", "b) mask", "c) explanation",
                                             "f) mean mask"]


def test_sise_figure_has_a_column_per_block_and_the_fusion(setup):
    """SISE's per-block maps and fusion, from the extras sise returns (made here)."""
    from xaijax.methods.sise import Layers

    model, x, _ = setup
    names = ("relu2", "relu4", "relu5")
    vis = jax.random.uniform(jax.random.PRNGKey(2), (2, 3, 32, 32))
    ex = xj.Explanation(heatmap=vis.mean(1), method="sise",
                        extras={"visualization_maps": vis, "layers": Layers(names)})
    fig = xj.viz.sise_figure(model, x, ex)
    maps = _images_of(fig)
    assert len(maps) == 2 * (len(names) + 2)
    titles = [a.get_title() for a in maps[:len(names) + 2]]
    assert titles[0] == "input\n" and titles[-1] == "fused\n"
    assert all(n in t and f"block {k + 1}" in t for k, (n, t) in enumerate(zip(names,
                                                                             titles[1:-1])))
    np.testing.assert_allclose(maps[-1].images[0].get_array(),
                               xj.viz.plots.display_map(np.asarray(ex.heatmap[1]), False))
    np.testing.assert_allclose(maps[-2].images[0].get_array(),
                               xj.viz.plots.display_map(np.asarray(vis[1, 2]), False))
    _not_blank(xj.viz.figure_image(fig))


@pytest.fixture(scope="module")
def table(setup):
    model, x, c = setup
    return xj.evaluate(model, x, c.target, methods=METHODS, metrics=["deletion"],
                       progress=False, heatmaps=dict(zip(c.labels, c.heatmaps)))


def test_evaluate_keeps_curves_and_scores_given_maps(setup, table):
    model, x, c = setup
    r = table.curves[("gradient", "deletion")]
    ref = xj.metrics.deletion(model, x, c.heatmaps[0], c.target)
    np.testing.assert_allclose(r.curve, ref.curve, rtol=1e-5)
    np.testing.assert_allclose(table.values[("gradient", "deletion")], ref.auc, rtol=1e-5)
    assert np.isnan(table.seconds["gradient"]) and "—" in str(table)
    with pytest.raises(ValueError, match="not one of the methods"):
        xj.evaluate(model, x, c.target, methods=["gradient"], heatmaps={"gradcam": c.heatmaps[1]})
    with pytest.raises(ValueError, match=r"must have shape \(2, 32, 32\)"):
        xj.evaluate(model, x, c.target, methods=["gradient"], heatmaps={"gradient": x})


def test_curves_figure_plots_the_mean_curve_with_its_auc(table):
    fig = xj.viz.curves_figure(table, "deletion")
    ax = fig.get_axes()[0]
    assert len(ax.lines) == 2 and "deletion" in ax.get_title()
    r = table.curves[("gradient", "deletion")]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), r.fraction)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), r.curve.mean(0))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"gradient (AUC {r.auc.mean():.3f})"
    _not_blank(xj.viz.figure_image(fig), min_std=0.02, inked=0.02)
    # a {label: CausalCurve} mapping works too (e.g. xj.metrics.insertion results)
    flipped = xj.metrics.CausalCurve(1 - r.auc, r.curve[:, ::-1], r.fraction)
    ax = xj.viz.curves_figure({"a": flipped}, "insertion").get_axes()[0]
    assert ax.get_xlabel() == "fraction of pixels inserted" and len(ax.lines) == 1
    with pytest.raises(ValueError, match="no insertion curves"):
        xj.viz.curves_figure(table, "insertion")


def test_maps_figure_uses_the_maps_units(setup):
    _, _, c = setup
    fig = xj.viz.maps_figure(c, 1)
    maps = [a for a in fig.get_axes() if a.images]
    assert len(maps) == 2 and fig.get_suptitle() == "input_x_gradient"
    im = maps[0].images[0]
    hi = np.percentile(np.abs(c.heatmaps[1, 0]), 99.5)
    assert im.norm.vmin == pytest.approx(-hi) and im.norm.vmax == pytest.approx(hi)


def _module_level_imports(tree):
    """Import statements that run when the module is imported (not inside a function)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, [node.module]
        stack.extend(ast.iter_child_nodes(node))


def test_core_never_imports_matplotlib_when_imported():
    root = pathlib.Path(xj.__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20 and root / "viz" / "plots.py" in files
    offenders = [f"{p.relative_to(root.parent)}:{line} imports {n}" for p in files
                 for line, names in _module_level_imports(ast.parse(p.read_text()))
                 for n in names if n.split(".")[0] == "matplotlib"]
    assert not offenders, "matplotlib is optional (xaijax[viz]); import it inside the " \
        "functions that draw:\n" + "\n".join(offenders)


def test_compare_runs_without_matplotlib_and_plotting_says_what_to_install(setup, monkeypatch):
    model, x, _ = setup
    for k in [k for k in sys.modules if k == "matplotlib" or k.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, k, None)  # `import matplotlib...` now fails
    c = xj.viz.compare(model, x[:1], ["gradient"], progress=False)
    assert c.heatmaps.shape == (1, 1, 32, 32)
    with pytest.raises(ImportError, match=r"pip install 'xaijax\[viz\]'"):
        c.figure()


# ------------------------------------------------------------------------------------------------
# the HTML report


@pytest.fixture(scope="module")
def report_file(setup, table, tmp_path_factory):
    model, x, c = setup
    path = tmp_path_factory.mktemp("report") / "report.html"
    r = xj.viz.report(c, table, title="test <report>", model_name="small_cnn",
                      figures={"extra picture": np.tile(np.linspace(0, 1, 24)[:, None, None],
                                                        (1, 16, 3))})
    assert r.save(str(path)) == str(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # atomic, no temp
    return path


def _img_sources(text):
    import re

    return re.findall(r'<img src="([^"]*)"', text)


def test_report_html_is_self_contained(report_file):
    import base64
    import io

    from PIL import Image

    text = report_file.read_text()
    assert "<title>test &lt;report&gt;</title>" in text
    srcs = _img_sources(text)
    # grid, one maps figure per method, the deletion curves, the extra picture
    assert len(srcs) == 1 + len(METHODS) + 1 + 1
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))
                         .convert("RGB"), np.float32) / 255
        assert img.shape[0] >= 16 and img.std() > 0.02
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "<th>deletion ↓</th>" in text and "input_x_gradient" in text


def _chromium():
    import shutil

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)),
               None)
    if exe is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it: apt-get install "
                    "chromium)")
    return exe


def _run_chromium(exe, tmp_path, *args):
    import subprocess

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    r = subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_report_opens_in_headless_chromium(report_file, tmp_path):
    """Real Chromium loads every embedded image (a probe script, added to a copy of the page,
    marks each <img> complete with a natural width), and its screenshot of the page is not
    blank (one Chromium start for both: --dump-dom and --screenshot)."""
    import re

    from PIL import Image

    exe = _chromium()
    text = report_file.read_text()
    n = len(_img_sources(text))
    probe = ("<script>window.addEventListener('load', () => {const im = [...document.images];"
             "document.body.setAttribute('data-probe', im.filter(i => i.complete && "
             "i.naturalWidth > 0).length + '/' + im.length);});</script></body>")
    (tmp_path / "probe.html").write_text(text.replace("</body>", probe))
    shot = tmp_path / "shot.png"
    dom = _run_chromium(exe, tmp_path, "--dump-dom", f"--screenshot={shot}",
                        "--window-size=1000,1400", (tmp_path / "probe.html").as_uri())
    assert re.search(r'data-probe="(\d+)/(\d+)"', dom).groups() == (str(n), str(n)), dom[:300]
    img = np.asarray(Image.open(shot).convert("RGB"), np.float32) / 255
    assert img.shape == (1400, 1000, 3)
    _not_blank(img, min_std=0.1, inked=0.05)
    # the grid's maps were painted: viridis' dark end and RdBu's red end are on screen
    near = lambda rgb: (np.abs(img - np.array(rgb) / 255).max(-1) < 0.08).mean()  # noqa: E731
    assert near((68, 1, 84)) > 1e-4 and near((103, 0, 31)) > 1e-5
