"""``python -m cfgutils``: the command-line twin of the notebooks (the top layer of cfgutils).

One module per command group; each exposes ``register(subparsers)``, which adds its parsers and sets
``handler`` to a function of ``args`` returning an exit code. Bad input
(:class:`~cfgutils.errors.UserInputError`) becomes a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserInputError
from . import classifier, experiments, notebooks, sample, site, train

#: command modules, in the order ``--help`` lists them
COMMAND_MODULES = (notebooks, site, train, sample, classifier, experiments)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command's sub-parser."""
    parser = argparse.ArgumentParser(
        prog="python -m cfgutils",
        description="Classifier-free guidance on MNIST: train, sample, and measure what guidance does.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cfgutils`` and the ``cfgutils`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
