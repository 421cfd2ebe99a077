"""cfgutils: the reusable parts of the classifier-free guidance notebook series.

The package is layered, lowest first (docs/architecture.md has the map; import-linter enforces it):
``errors`` -> ``core`` (the math) -> ``plumbing`` -> ``workflows`` -> ``presentation`` -> ``cli``.
A module imports only from its own layer and the layers below it.

Importing the package changes no global state (no seeds, no torch settings, no
matplotlib style); every function takes its inputs explicitly.
"""

__version__ = "0.1.0"
