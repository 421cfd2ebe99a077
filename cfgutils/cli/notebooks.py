"""``python -m cfgutils notebooks``: execute the notebook series headlessly (the README's main command)."""

from __future__ import annotations

import argparse

from ..workflows import notebooks


def register(subparsers) -> None:
    """Add the ``notebooks`` command."""
    parser = subparsers.add_parser(
        "notebooks", help="execute the notebooks headlessly with papermill",
        description="Execute the notebook series in order with papermill into OUT (default: out/), "
                    "printing where the executed notebooks and figures went.")
    parser.add_argument("names", nargs="*", metavar="NOTEBOOK",
                        help=f"which notebooks (default: all of {', '.join(notebooks.NOTEBOOKS)} that exist)")
    parser.add_argument("--out", default=str(notebooks.OUTPUT_DIR), help="folder for executed notebooks (default: out/)")
    parser.add_argument("--preset", default="default",
                        help="'default' = the notebooks' own full-quality parameters; 'ci' = the tiny settings "
                             "in notebooks/params/ci-NN.yaml")
    parser.add_argument("--figures-dir", default=None, help="where figures go (default: figures/)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    notebooks.run_series(args.names or None, args.out, args.preset, args.figures_dir)
    return 0
