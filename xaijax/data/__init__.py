"""Bundled real photos and (later) synthetic data generators."""

from xaijax.data.images import load_image
from xaijax.data.images import sample_images
from xaijax.data.images import SAMPLE_NAMES
