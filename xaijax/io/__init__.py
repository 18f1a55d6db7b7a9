"""Checkpoint input/output that needs no torch (whitelisted, code-free unpickling)."""

from xaijax.io.pth import ALLOWED_GLOBALS
from xaijax.io.pth import UnsafePickleError
from xaijax.io.pth import load as load_pth
from xaijax.io.pth import load_state_dict
