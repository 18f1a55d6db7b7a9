"""One self-contained HTML file: the comparison grid, each method's maps, metric tables and
curves, with every image embedded as a ``data:`` URI, so it opens offline from anywhere (no
scripts, no external files or fonts)."""

from __future__ import annotations

import base64
import html
import io
import time
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from xaijax.io.files import atomic_path

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1.0em; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; }
p.meta { font-size: 0.85em; color: #555; }
"""


def _png(picture: Any) -> bytes:
    """PNG bytes of a matplotlib Figure, an RGB array in [0, 1] (or uint8), or PNG bytes."""
    if isinstance(picture, (bytes, bytearray)):
        return bytes(picture)
    if hasattr(picture, "savefig"):
        from xaijax.viz.plots import figure_png

        return figure_png(picture)
    from PIL import Image

    from xaijax.viz.overlay import to_uint8

    a = np.asarray(picture)
    buf = io.BytesIO()
    Image.fromarray(a if a.dtype == np.uint8 else to_uint8(a)).save(buf, format="PNG")
    return buf.getvalue()


class Report:
    """An HTML page built section by section.

    Examples:
      >>> import numpy as np
      >>> r = Report("demo")
      >>> r.heading("A picture"); r.image(np.zeros((4, 4, 3)), "black")
      >>> "data:image/png;base64," in r.to_html()
      True
    """

    def __init__(self, title: str = "xaijax report"):
        self.title = title
        self._parts: List[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self._parts.append(f"<p{c}>{html.escape(text)}</p>")

    def image(self, picture: Any, caption: str = "", alt: str = "") -> None:
        """Embed a matplotlib Figure, an RGB array or PNG bytes as a ``data:`` URI."""
        data = base64.b64encode(_png(picture)).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                           f'alt="{html.escape(alt or caption)}">{cap}</figure>')

    def table(self, table) -> None:
        """An :class:`~xaijax.evaluation.EvaluationTable`: mean ± s.e. per method and metric
        (the best mean per metric in bold) and the seconds per method."""
        head = "".join(f"<th>{html.escape(m)} {'↑' if table.higher_is_better[m] else '↓'}</th>"
                       for m in table.metrics)
        best = [int(np.argmax(table.mean[:, j]) if table.higher_is_better[m]
                    else np.argmin(table.mean[:, j])) for j, m in enumerate(table.metrics)]
        rows = []
        for i, meth in enumerate(table.methods):
            cells = "".join(
                f'<td{" class=best" if best[j] == i and len(table.methods) > 1 else ""}>'
                f"{table.mean[i, j]:.4f} ± {table.sem[i, j]:.4f}</td>"
                for j in range(len(table.metrics)))
            s = table.seconds.get(meth, float("nan"))
            rows.append(f"<tr><td>{html.escape(meth)}</td>{cells}"
                        f"<td>{'—' if np.isnan(s) else f'{s:.2f}'}</td></tr>")
        self._parts.append(f"<table><tr><th>method</th>{head}<th>seconds</th></tr>"
                           f"{''.join(rows)}</table>")
        self.text(f"{len(table.target)} image(s); mean ± standard error over images.",
                  "meta")

    def to_html(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n"
                f"<body><h1>{html.escape(self.title)}</h1>\n" + "\n".join(self._parts)
                + "\n</body></html>\n")

    def save(self, path: str) -> str:
        """Write the page atomically (temp file + rename)."""
        with atomic_path(path, ".html") as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_html())
        return path


def report(comparison=None, table=None, *, title: str = "xaijax report",
           figures: Optional[Mapping[str, Any]] = None, model_name: str = "",
           cmap: Optional[str] = None, alpha: Optional[float] = None,
           notes: Sequence[str] = ()) -> Report:
    """The standard report: the comparison grid, each method's maps (in the map's units), the
    metric table, and the deletion / insertion curves the table kept.

    Args:
      comparison: a :func:`xaijax.viz.compare` result, or ``None``.
      table: an :class:`~xaijax.evaluation.EvaluationTable` (``xj.evaluate``), or ``None``.
      title: the page title.
      figures: further ``{caption: Figure or RGB array}`` appended at the end (e.g.
        :func:`xaijax.viz.fgvis_figure`, :func:`xaijax.viz.sise_figure`).
      model_name: named in the page's first line.
      cmap: colour map of the unsigned maps (default ``viridis``; ``"jet"`` as the peers).
      alpha: blend the grid's maps over the photos with this opacity (default: maps only).
      notes: extra lines under the title.

    Returns:
      a :class:`Report`; ``.save("report.html")`` writes it.
    """
    from xaijax.viz import plots

    r = Report(title)
    what = ", ".join(x for x in [model_name, time.strftime("%Y-%m-%d %H:%M")] if x)
    r.text(what, "meta")
    for line in notes:
        r.text(line, "meta")
    kw = {"cmap": cmap} if cmap else {}
    if comparison is not None:
        c = comparison
        r.heading("Comparison")
        r.image(plots.compare_figure(c, alpha=alpha, **kw),
                "Rows: images; columns: methods. Each cell: the class explained, its "
                "probability, and the method's seconds on that image after compiling once. "
                "Signed maps: diverging colours centred at 0; unsigned: a perceptual colour "
                "map. Each map scaled to its own 99.5th percentile.",
                alt="comparison grid")
        r.heading("Maps per method")
        for i, label in enumerate(c.labels):
            r.heading(label, 3)
            r.image(plots.maps_figure(c, i, **kw),
                    f"{label}: {'signed' if c.signed[i] else 'unsigned'} maps in their own "
                    f"units; compiled in {c.compile_seconds[i]:.2f} s, "
                    f"{c.seconds[i].mean():.3g} s per image", alt=f"{label} maps")
    if table is not None:
        r.heading("Metrics")
        r.table(table)
        for metric in ("deletion", "insertion"):
            if any(k[1] == metric for k in table.curves):
                r.image(plots.curves_figure(table, metric), f"{metric} curves: mean over "
                        f"images ± one standard error", alt=f"{metric} curves")
    for cap, fig in (figures or {}).items():
        r.heading(cap)
        r.image(fig, cap)
    return r
