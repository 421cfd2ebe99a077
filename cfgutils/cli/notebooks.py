"""``python -m cfgutils notebooks``: execute the notebook series headlessly (the headless way to run the series)."""

from __future__ import annotations

import argparse

from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.data import DATASETS
from ..workflows import notebooks
from .common import prose


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
                        help=prose("""
                                 'default' = the notebooks' own full-quality parameters; 'ci' = the tiny settings in
                                 notebooks/params/ci-NN.yaml; 'fashion' = notebooks/params/fashion-NN.yaml (05 and 06
                                 on Fashion-MNIST); without NOTEBOOK names, the notebooks the preset has files for"""))
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help="set every notebook's dataset parameter (mnist or fashion-mnist); without NOTEBOOK "
                             "names, the notebooks that take one")
    parser.add_argument("--figures-dir", default=None, help="where figures go (default: OUT/figures/)")
    parser.add_argument("--update-figures", action="store_true",
                        help="write the figures into the committed gallery figures/ (what the notebooks and documents show)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.update_figures and args.figures_dir is not None:
        raise UserInputError("--update-figures writes to figures/; leave out --figures-dir")
    figures_dir = paths.FIGURES_DIR if args.update_figures else args.figures_dir
    notebooks.run_series(args.names or None, args.out, args.preset, figures_dir, args.dataset)
    return 0
