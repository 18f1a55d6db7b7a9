"""Backward-pass rules (``jax.custom_vjp`` functions) and the composites that place them.

A rule changes how one layer type propagates gradients (guided ReLU, DeconvNet ReLU, stride
fix, FGVis bound filter, LRP, DeepLIFT, excitation backprop); see :mod:`xaijax.nn.intercept`
for how rules and tap edits are applied without editing the model.
"""

from xaijax.rules import canonizers
from xaijax.rules import deeplift
from xaijax.rules import excitation
from xaijax.rules import fgvis
from xaijax.rules import lrp
from xaijax.rules import relu
from xaijax.rules import stride
