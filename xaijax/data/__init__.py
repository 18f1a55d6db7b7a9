"""Bundled real photos, their hand-drawn object boxes, composite images with exact object
masks (objects cut from the photos, pasted onto other photos and textures), and synthetic
an8Flower-style flowers with exact masks of their discriminative part."""

from xaijax.data.images import load_image
from xaijax.data.images import sample_images
from xaijax.data.images import SAMPLE_NAMES
from xaijax.data.boxes import ObjectBoxes
from xaijax.data.boxes import box_annotations
from xaijax.data.boxes import object_boxes
from xaijax.data.boxes import preprocess_boxes
from xaijax.data.cutouts import BACKGROUNDS
from xaijax.data.cutouts import composites
from xaijax.data.cutouts import filter_by_model
from xaijax.data.flowers import CLASS_COLOURS
from xaijax.data.flowers import flowers
