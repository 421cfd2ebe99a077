"""Show the library's own code on the page where a notebook teaches it, so what the reader sees is what runs."""

from __future__ import annotations

import inspect


def show_source(obj):
    """The source of a cfgutils function or class, syntax-highlighted in a notebook (plain text elsewhere)."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Code
    except ImportError:
        return source
    return Code(source, language="python")
