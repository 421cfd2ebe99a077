"""``python -m cfgutils``: the command-line twin of the notebooks.

Each command lives in the module that implements it; that module exposes ``register_cli(subparsers)``,
which adds its parser and sets ``handler`` to a function of ``args`` returning an exit code.
Bad input (:class:`~cfgutils.errors.UserInputError`) becomes a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserInputError

#: modules that contribute commands, in the order ``--help`` lists them
COMMAND_MODULES = (
    "cfgutils.notebooks_cli",
    "cfgutils.train",
    "cfgutils.sampling_cli",
    "cfgutils.classifier",
    "cfgutils.experiments",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command's sub-parser."""
    parser = argparse.ArgumentParser(
        prog="python -m cfgutils",
        description="Classifier-free guidance on MNIST: train, sample, and measure what guidance does.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # a command module not written yet
            raise
        module.register_cli(subparsers)
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
