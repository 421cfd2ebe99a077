"""Small figure helpers shared by the notebooks: image grids and reproducible PNG files.

Importing this module changes no global state: pyplot is imported only inside the
functions that draw, and no rcParams are touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import paths
from .data import to_uint8
from .errors import UserInputError

#: every saved figure uses this resolution, so re-running a notebook gives the same pixels
DPI = 150


def _as_uint8_stack(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) images, uint8 or float in [-1, 1] -> uint8 array (N, H, W)."""
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise UserInputError(f"image_grid expects (N, 1, H, W) or (N, H, W) grey images, got shape {tuple(x.shape)}.")
    if x.dtype != torch.uint8:
        x = to_uint8(x.float())  # model range [-1, 1]; values outside are clipped for display
    return x.numpy()


def image_grid(images: torch.Tensor | np.ndarray, nrow: int, *, ax=None,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               title: str | None = None, padding: int = 2, as_array: bool = False):
    """Tile grey images (uint8, or float in [-1, 1]) with ``nrow`` images per row, like torchvision (01-data).

    Returns the uint8 grid (H, W) if ``as_array``, else draws it (into ``ax``, or a new figure sized to
    the grid) with optional ``row_labels``/``col_labels``/``title`` and returns the axes.
    """
    stack = _as_uint8_stack(images)
    if nrow < 1:
        raise UserInputError(f"nrow must be at least 1, got {nrow}.")
    n, height, width = stack.shape
    ncol = min(nrow, n)
    nrows = -(-n // nrow)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((nrows * cell_h + padding, ncol * cell_w + padding), 255, dtype=np.uint8)  # white gutters
    for i, image in enumerate(stack):
        top, left = padding + (i // nrow) * cell_h, padding + (i % nrow) * cell_w
        grid[top : top + height, left : left + width] = image
    if as_array:
        return grid

    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * ncol + 0.6, 0.45 * nrows + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([padding + c * cell_w + width / 2 - 0.5 for c in range(ncol)] if col_labels is not None else [])
    ax.set_yticks([padding + r * cell_h + height / 2 - 0.5 for r in range(nrows)] if row_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels(col_labels)
        ax.xaxis.tick_top()
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    ax.grid(False)  # a seaborn/matplotlib style with grid lines would draw them across the images
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, name: str, figures_dir: str | Path | None = None) -> Path:
    """Save ``fig`` as ``figures/<name>`` (PNG, fixed dpi, no timestamp or version stamp) and return its path (01-data)."""
    if Path(name).name != name or Path(name).suffix.lower() != ".png":
        raise UserInputError(f"figure name {name!r} must be a plain file name ending in .png.")
    path = paths.figure_path(name, figures_dir)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    return path.resolve()
