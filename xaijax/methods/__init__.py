"""Explanation methods: each a pure, jit/vmap-able function ``(model, x, target, **opts)``."""

from xaijax.methods.base import Explanation
from xaijax.methods.base import available
from xaijax.methods.base import explain
from xaijax.methods.base import info
from xaijax.methods.base import register
from xaijax.methods.gradient import gradient
from xaijax.methods.cam import ablationcam
from xaijax.methods.cam import cam
from xaijax.methods.cam import fem
from xaijax.methods.cam import gradcam
from xaijax.methods.cam import gradcam_pp
from xaijax.methods.cam import scorecam
