"""cfgutils: the reusable parts of the classifier-free guidance notebook series.

Importing the package changes no global state (no seeds, no torch settings, no
matplotlib style); every function takes its inputs explicitly.
"""

__version__ = "0.1.0"
