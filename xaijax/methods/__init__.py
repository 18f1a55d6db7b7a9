"""Explanation methods: each a pure, jit/vmap-able function ``(model, x, target, **opts)``."""

from xaijax.methods.base import Explanation
from xaijax.methods.base import available
from xaijax.methods.base import explain
from xaijax.methods.base import info
from xaijax.methods.base import register
from xaijax.methods.gradient import gradient
from xaijax.methods.gradient import fullgrad
from xaijax.methods.gradient import input_x_gradient
from xaijax.methods.gradient import integrated_gradients
from xaijax.methods.gradient import noise_tunnel
from xaijax.methods.gradient import smoothgrad
from xaijax.methods.gradient import vargrad
from xaijax.methods.backprop import deconvnet
from xaijax.methods.backprop import guided_backprop
from xaijax.methods.cam import ablationcam
from xaijax.methods.cam import cam
from xaijax.methods.cam import fem
from xaijax.methods.cam import gradcam
from xaijax.methods.cam import gradcam_pp
from xaijax.methods.cam import guided_gradcam
from xaijax.methods.cam import scorecam
from xaijax.methods.fgvis import fgvis
from xaijax.methods.fgvis import fgvis_images
from xaijax.methods.relevance import deeplift
from xaijax.methods.relevance import lrp
from xaijax.methods.dssr import dssr
