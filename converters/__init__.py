"""Checkpoint converters: PyTorch state_dicts -> xaijax Flax variables (+ orbax).

The mapping itself is torch-free (numpy arrays in, numpy arrays out), so the library can load a
user's ``.pth`` through the whitelist reader without torch installed.
"""

from converters.state_dict import state_dict_to_variables
