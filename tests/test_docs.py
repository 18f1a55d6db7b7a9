"""The documentation site (docs/, Sphinx + myst-nb) builds with warnings as errors, and its pages
are there: every notebook, an API page per module, a page per method naming its paper."""

import glob
import html
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _text(path):
    """The visible text of an HTML page, whitespace collapsed."""
    page = re.sub(r"<(script|style).*?</\1>|<[^>]+>", " ", path.read_text(encoding="utf-8"),
                  flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(page))


# Sphinx 9 deprecations inside napoleon (not ours), one per docstring
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
@pytest.mark.slow  # ~15-20 s: autodoc of every module, the notebooks, the method pages
def test_docs_build_warning_free(tmp_path, capsys):
    pytest.importorskip("myst_nb")  # the test extra installs it (CI fails a skip)
    pytest.importorskip("furo")
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    rc = build_main(["-W", "--keep-going", "-E", "-q", "-b", "html", "-d",
                     str(tmp_path / "doctrees"), os.path.join(ROOT, "docs"), str(out)])
    assert rc == 0, capsys.readouterr().err[-5000:]

    for nb in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")):
        assert (out / "notebooks" / (os.path.basename(nb)[:-6] + ".html")).is_file(), nb
    import xaijax  # noqa: F401  (the build imported it)
    from xaijax.methods import base

    for name in base.available():
        page = _text(out / "methods" / f"{name}.html")
        paper = base.info(name).paper  # "Selvaraju et al. 2017, Eq. 1-2"
        assert paper and re.search(r"Paper\s*:\s*" + re.escape(paper), page), (name, paper)
        fn = base.info(name).fn
        assert f'id="{fn.__module__}.{fn.__qualname__}"' in (
            out / "api" / f"{fn.__module__}.html").read_text(encoding="utf-8"), name
    modules = {p[len(ROOT) + 1:-3].replace(os.sep, ".").removesuffix(".__init__")
               for p in glob.glob(os.path.join(ROOT, "xaijax", "**", "*.py"), recursive=True)}
    pages = {os.path.basename(p)[:-5] for p in glob.glob(str(out / "api" / "*.html"))}
    assert modules <= pages, sorted(modules - pages)
    assert re.search(r"Reproduction results", (out / "RESULTS.html").read_text(encoding="utf-8"))
