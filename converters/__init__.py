"""Tooling around the library's checkpoint conversion; it imports :mod:`xaijax`, never the reverse.

The conversion itself (the torch ``state_dict`` -> variables mapping, checkpoint reading, orbax
save / load and the ``xaijax convert`` command) lives in :mod:`xaijax.io`, so the library needs
neither torch nor this package. The names below, and the modules ``converters.checkpoint`` and
``converters.state_dict``, stay importable for existing code and are the very objects of
:mod:`xaijax.io`. ``python -m converters.cli`` runs ``xaijax convert`` stand-alone.
"""

import sys as _sys

from xaijax.io import checkpoint
from xaijax.io import state_dict
from xaijax.io.checkpoint import convert_file
from xaijax.io.checkpoint import load_variables
from xaijax.io.checkpoint import read_state_dict
from xaijax.io.checkpoint import save_variables
from xaijax.io.state_dict import state_dict_to_variables

# `from converters.checkpoint import ...` (the modules' old home) finds the moved modules
_sys.modules[__name__ + ".checkpoint"] = checkpoint
_sys.modules[__name__ + ".state_dict"] = state_dict
