"""``python -m cfgutils site``: the executed notebook series as a book (static HTML), readable without running."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import one_of
from ..presentation import book
from ..workflows import notebooks
from .common import prose


def register(subparsers) -> None:
    """Add the ``site`` command."""
    parser = subparsers.add_parser(
        "site", help="build the executed notebooks as a book (static HTML)",
        description=prose("""
                        Execute the notebook series into OUT (as `notebooks` does), or with --reuse take the executed
                        notebooks already there, and build them as a book with Jupyter Book in OUT/site/: an
                        introduction and one page per notebook with every output, typeset math, search and a sidebar
                        of chapters; nothing is executed or fetched while building (the book's configuration is
                        docs/book/_config.yml and docs/book/_toc.yml)."""))
    parser.add_argument("--out", default=str(notebooks.OUTPUT_DIR),
                        help="folder of executed notebooks; the book goes to OUT/site/ (default: out/)")
    parser.add_argument("--preset", default="default",
                        help=f"parameters of the run: {' or '.join(notebooks.available_presets())} "
                             "(as for `notebooks`; ignored with --reuse)")
    parser.add_argument("--reuse", action="store_true",
                        help="do not execute: use the executed notebooks already in OUT")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    one_of(args.preset, notebooks.available_presets(), "preset")
    book.require_build_tools()  # before the series runs, not after
    if args.reuse:
        book.collect_pages(out)  # a missing or empty folder is an error before anything is written
    else:
        notebooks.run_series(None, out, args.preset)
    book.build_book(out)
    return 0
