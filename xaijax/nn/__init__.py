"""The intervention layer: layer modules with taps, interceptors and backward rules."""

from xaijax.nn import layers
from xaijax.nn.intercept import by_name
from xaijax.nn.intercept import by_type
from xaijax.nn.intercept import chain
from xaijax.nn.intercept import forward
from xaijax.nn.intercept import list_taps
