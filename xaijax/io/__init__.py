"""Checkpoint input/output that needs no torch: whitelisted, code-free unpickling
(:mod:`~xaijax.io.pth`), the torch ``state_dict`` -> xaijax variables mapping
(:mod:`~xaijax.io.state_dict`), and orbax-checkpoint save / load of converted variables
(:mod:`~xaijax.io.checkpoint`); ``xaijax convert`` (:mod:`~xaijax.io.convert`) uses them."""

from xaijax.io.pth import ALLOWED_GLOBALS
from xaijax.io.pth import UnsafePickleError
from xaijax.io.pth import load as load_pth
from xaijax.io.pth import load_state_dict
from xaijax.io.state_dict import state_dict_to_variables
from xaijax.io.checkpoint import convert_file
from xaijax.io.checkpoint import describe
from xaijax.io.checkpoint import is_variables_dir
from xaijax.io.checkpoint import load_variables
from xaijax.io.checkpoint import read_metadata
from xaijax.io.checkpoint import read_state_dict
from xaijax.io.checkpoint import save_variables
from xaijax.io.checkpoint import strip_prefix
