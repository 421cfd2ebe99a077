"""``python -m cfgutils site``: the executed notebook series as a static HTML site, readable without running."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import one_of
from ..presentation import site
from ..workflows import notebooks
from .common import prose


def register(subparsers) -> None:
    """Add the ``site`` command."""
    parser = subparsers.add_parser(
        "site", help="build a static HTML site of the executed notebooks",
        description=prose("""
                        Execute the notebook series into OUT (as `notebooks` does), or with --reuse take the executed
                        notebooks already there, and build a static HTML site in OUT/site/: an index and one page per
                        notebook with every output embedded."""))
    parser.add_argument("--out", default=str(notebooks.OUTPUT_DIR),
                        help="folder of executed notebooks; the site goes to OUT/site/ (default: out/)")
    parser.add_argument("--preset", default="default",
                        help=f"parameters of the run: {' or '.join(notebooks.available_presets())} "
                             "(as for `notebooks`; ignored with --reuse)")
    parser.add_argument("--reuse", action="store_true",
                        help="do not execute: use the executed notebooks already in OUT")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    one_of(args.preset, notebooks.available_presets(), "preset")
    if args.reuse:
        site.collect_pages(out)  # a missing or empty folder is an error before anything is written
    else:
        notebooks.run_series(None, out, args.preset)
    site.build_site(out)
    return 0
