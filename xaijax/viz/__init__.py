"""Colour maps, overlays, grids and image output."""

from xaijax.viz.colormaps import COLORMAPS
from xaijax.viz.colormaps import apply_colormap
from xaijax.viz.fgvis import fgvis_images
from xaijax.viz.overlay import caption
from xaijax.viz.overlay import explanation_images
from xaijax.viz.overlay import grid
from xaijax.viz.overlay import normalize
from xaijax.viz.overlay import overlay
from xaijax.viz.overlay import save_image
from xaijax.viz.overlay import save_overlay
from xaijax.viz.overlay import to_uint8
