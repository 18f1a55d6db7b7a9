"""Checkpoint converters: PyTorch state_dicts -> xaijax Flax variables (+ orbax).

The mapping itself is torch-free (numpy arrays in, numpy arrays out), so the library can load a
user's ``.pth`` through the whitelist reader without torch installed.
"""

from converters.checkpoint import convert_file
from converters.checkpoint import load_variables
from converters.checkpoint import read_state_dict
from converters.checkpoint import save_variables
from converters.state_dict import state_dict_to_variables
