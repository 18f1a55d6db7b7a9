"""Sphinx configuration of the xaijax documentation (``sphinx-build -W docs docs/_build``).

The API pages come from the docstrings (autodoc, one page per module, written here); the
method pages are written from the method registry (``xaijax.methods.base``) at every build, so
each names the paper and equation the method implements; the notebooks are rendered by
myst-nb without executing them (the test suite executes them, ``tests/test_notebooks.py``).
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

project = "xaijax"
author = "the xaijax authors"
copyright = "2026, the xaijax authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
smartquotes = False  # paper titles and code keep their quotes
html_theme = "furo"
html_title = "xaijax"

# notebooks: rendered as committed, never executed here
nb_execution_mode = "off"
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the Google-style Args sections say what each argument is
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" of NamedTuples as fields (autodoc lists the members)
napoleon_custom_sections = [("References", "notes_style"), ("Raises", "params_style")]
suppress_warnings = ["myst.header"]  # RESULTS.md's sections start at level 2 after its title


def _method_pages(app):
    """docs/methods/<name>.rst for every registered method: its summary, the paper and
    equation it implements, its peer implementation and options, and a link to its function's
    API entry (not a second copy of the docstring: autodoc is most of the build's time)."""
    from xaijax.methods import base

    out = os.path.join(app.srcdir, "methods")
    os.makedirs(out, exist_ok=True)
    index = ["Methods", "=======", "",
             "Every method registered in :mod:`xaijax.methods` (``xaijax methods`` lists the same "
             "from the command line), with the paper and equation it implements.", "",
             ".. list-table::", "   :header-rows: 1", "   :widths: 18 10 40 32", "",
             "   * - method", "     - needs", "     - paper", "     - peer"]
    toc = ["", ".. toctree::", "   :hidden:", ""]
    for name in base.available():
        info = base.info(name)
        fn = f"{info.fn.__module__}.{info.fn.__qualname__}"
        index += [f"   * - :doc:`{name} <{name}>`", f"     - {info.needs}",
                  f"     - {_rst(info.paper or '(none)')}", f"     - {info.peer or 'none'}"]
        toc.append(f"   {name}")
        options = ", ".join(f"``{o}``" + (" (static)" if o in info.static else "")
                            for o in info.options) or "none"
        page = [name, "=" * len(name), "", _rst(info.summary), "",
                f":Paper: {_rst(info.paper or '(none)')}",
                f":Peer implementation: {info.peer or 'none (tested on its paper properties)'}",
                f":Kind: ``{info.needs}`` (signed maps: {'yes' if info.signed else 'no'})",
                f":Options: {options}",
                f":Call: ``xj.explain(model, x, target, method=\"{name}\", ...)``, or the "
                f"function :func:`{fn}` (its arguments, returns and references)", ""]
        _write(os.path.join(out, f"{name}.rst"), "\n".join(page))
    _write(os.path.join(out, "index.rst"), "\n".join(index + toc) + "\n")


def _rst(text):
    """``|`` outside ``inline literals`` escaped (rST reads ``|x|`` as a substitution)."""
    parts = text.split("``")
    return "``".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _write(path, text):
    """Rewrite only on change, so Sphinx's incremental build keeps what did not change."""
    if os.path.exists(path) and open(path, encoding="utf-8").read() == text:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _api_pages(app):
    """docs/api/<module>.rst for every module of xaijax: ``automodule`` with its members.
    (autosummary's recursion resolves names by attribute, and ``xaijax.methods.cam`` is the
    function ``cam`` that the package re-exports, not the module; autodoc imports modules.)"""
    import pkgutil

    import xaijax

    out = os.path.join(app.srcdir, "api")
    os.makedirs(out, exist_ok=True)
    names = ["xaijax"] + sorted(m.name for m in pkgutil.walk_packages(xaijax.__path__, "xaijax."))
    for name in names:
        _write(os.path.join(out, f"{name}.rst"),
               f"{name}\n{'=' * len(name)}\n\n.. automodule:: {name}\n   :members:\n")


def _notebooks(app):
    """docs/notebooks/: the repository's notebooks/, copied (Sphinx reads only below docs/)."""
    import glob
    import shutil

    out = os.path.join(app.srcdir, "notebooks")
    os.makedirs(out, exist_ok=True)
    for path in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")):
        target = os.path.join(out, os.path.basename(path))
        if not os.path.exists(target) or open(path, "rb").read() != open(target, "rb").read():
            shutil.copyfile(path, target)


def setup(app):
    app.connect("builder-inited", _method_pages)
    app.connect("builder-inited", _notebooks)
    app.connect("builder-inited", _api_pages)
