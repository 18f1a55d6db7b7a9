"""Load a user's checkpoint into a zoo model (``xj.models.get(name, weights=FILE)``)."""

from __future__ import annotations

import os

from xaijax.io import checkpoint


def load_weights(model, path: str):
    """``model`` with the weights from ``path``.

    Args:
      model: a zoo :class:`~xaijax.models.Model` (its structure and spec are used; its variables
        are replaced).
      path: a torchvision-layout ``state_dict`` file (``.pth`` / ``.pt`` / ``.bin`` read without
        torch by a whitelist unpickler that never executes code, or ``.safetensors``), or a
        directory written by ``xaijax convert`` / :func:`xaijax.io.save_variables`
        (orbax-checkpoint).

    Returns:
      a new :class:`~xaijax.models.Model`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the checkpoint does not fit the architecture (the message names the first
        missing, unexpected or mis-shaped key, or the architecture a saved directory holds).

    Examples:
      >>> import xaijax as xj
      >>> model = xj.models.get("resnet50", weights="resnet50.pth")  # doctest: +SKIP
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if os.path.isdir(path):
        variables = checkpoint.load_variables(path, model)
    else:
        variables = checkpoint.convert_file(model, path)
    return model.replace_variables(variables)
