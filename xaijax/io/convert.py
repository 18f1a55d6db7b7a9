"""``xaijax convert CHECKPOINT --model NAME --out DIR``: a torchvision-layout checkpoint
(``.pth`` / ``.pt`` / ``.safetensors``) -> an orbax directory that ``xj.models.get(NAME,
weights=DIR)`` and ``xaijax explain --weights DIR`` load without torch and without re-converting.

The main command (:mod:`xaijax.cli`) calls :func:`add_convert_parser` to register the subcommand;
its handler is :func:`run_convert`.

Examples:
  >>> import argparse
  >>> from xaijax.io.convert import add_convert_parser
  >>> parser = argparse.ArgumentParser(prog="xaijax")
  >>> _ = add_convert_parser(parser.add_subparsers(dest="command"))
  >>> args = parser.parse_args(["convert", "r18.pth", "--model", "resnet18", "--out", "r18-xj"])
  >>> args.checkpoint, args.model, args.out, args.num_classes, args.force
  ('r18.pth', 'resnet18', 'r18-xj', None, False)
"""

from __future__ import annotations

import argparse
import sys
import time


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert`` on an ``argparse`` subparsers object (handler: ``run_convert``)."""
    c = subparsers.add_parser(
        "convert", help="convert a torchvision state_dict (.pth/.pt/.safetensors) to an orbax "
                        "directory",
        description="Convert a torchvision-layout state_dict (.pth/.pt read without torch and "
                    "without executing pickled code, or .safetensors) into an orbax-checkpoint "
                    "directory for `xj.models.get(NAME, weights=DIR)`.")
    c.add_argument("checkpoint", help="state_dict file: .pth, .pt, .bin or .safetensors")
    c.add_argument("--model", required=True, help="zoo architecture (see `xaijax models`)")
    c.add_argument("--out", required=True, help="output directory (orbax + xaijax.json)")
    c.add_argument("--num-classes", type=int, default=None,
                   help="number of classes of the checkpoint's head (default: the zoo's)")
    c.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    c.set_defaults(func=run_convert)
    return c


def run_convert(args) -> int:
    """Run ``xaijax convert`` for parsed ``args`` (checkpoint, model, out, num_classes, force).

    Returns:
      0 on success, 2 on an error (printed to stderr, naming the problem).
    """
    import jax

    import xaijax as xj
    from xaijax.io import checkpoint

    t0 = time.time()
    try:
        if args.model not in xj.models.available():
            raise ValueError(f"unknown model {args.model!r}; available: "
                             f"{list(xj.models.available())}")
        model = xj.models.build(args.model, num_classes=getattr(args, "num_classes", None),
                                random_init=False)
        variables = checkpoint.convert_file(model, args.checkpoint)
        out = checkpoint.save_variables(args.out, variables, model.spec.name,
                                        overwrite=bool(getattr(args, "force", False)),
                                        extra={"source": str(args.checkpoint)})
    except (ValueError, OSError) as e:
        print(f"xaijax convert: error: {e}", file=sys.stderr)
        return 2
    n = sum(int(a.size) for a in jax.tree_util.tree_leaves(variables))
    print(f"converted {args.checkpoint} -> {out} ({model.spec.name}, "
          f"{model.spec.num_classes} classes, {n:,} values, {time.time() - t0:.1f}s); load it "
          f"with xj.models.get({model.spec.name!r}, weights={out!r})")
    return 0
