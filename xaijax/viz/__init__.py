"""Colour maps, overlays, grids and image output."""

from xaijax.viz.colormaps import COLORMAPS
from xaijax.viz.colormaps import apply_colormap
from xaijax.viz.compare import Comparison
from xaijax.viz.compare import compare
from xaijax.viz.fgvis import fgvis_images
from xaijax.viz.overlay import caption
from xaijax.viz.overlay import explanation_images
from xaijax.viz.overlay import grid
from xaijax.viz.overlay import normalize
from xaijax.viz.overlay import overlay
from xaijax.viz.overlay import save_image
from xaijax.viz.overlay import save_overlay
from xaijax.viz.overlay import to_uint8
# matplotlib figures (pip install xaijax[viz]); matplotlib is imported when one is drawn
from xaijax.viz.plots import compare_figure
from xaijax.viz.plots import curves_figure
from xaijax.viz.plots import fgvis_figure
from xaijax.viz.plots import figure_image
from xaijax.viz.plots import interpretation_figure
from xaijax.viz.plots import maps_figure
from xaijax.viz.plots import save_figure
from xaijax.viz.plots import sise_figure
from xaijax.viz.reports import Report
from xaijax.viz.reports import report
