"""Stand-alone ``python -m converters.cli CHECKPOINT --model NAME --out DIR``, the same as
``xaijax convert``; the command itself lives in :mod:`xaijax.io.convert`."""

from __future__ import annotations

import argparse
import sys

from xaijax.io.convert import add_convert_parser
from xaijax.io.convert import run_convert  # noqa: F401  (re-exported for existing users)


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) as ``xaijax convert`` arguments and run it."""
    p = argparse.ArgumentParser(prog="xaijax")
    sub = p.add_subparsers(dest="command", required=True)
    add_convert_parser(sub)
    args = p.parse_args(["convert", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
