"""Autoguidance's guide, chosen rather than taken (08-newer-guidance).

Karras et al. (2024, "Guiding a Diffusion Model with a Bad Version of Itself", section 5) tune the guide for its
size, its training length and the length of its weight average, and find the best guides well below the main
model on all three. :func:`guide_grid` lays out such a grid on the main model's own recipe (the ``default``
preset: same data, label dropout, v-prediction, seed): ``base_channels`` for size, ``train.steps`` for length (the
learning-rate schedule is cosine over the guide's own run) and ``train.ema_decay`` for the average (0 keeps no
average: the raw weights). :func:`train_guides` trains every point of it, resuming any that was interrupted.
``experiment tune ... --rules autoguidance --guides FOLDER`` then scores them on validation data and seeds.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from ..errors import UserInputError, positive_int
from ..plumbing.config import default_config, resolve_config
from .train import load_or_train

#: the grid of the shipped search: widths, training steps and nominal EMA decays (0: no average)
GUIDE_SIZES = (8, 16, 24)
GUIDE_STEPS = (250, 500, 1000)
GUIDE_EMA_DECAYS = (0.0, 0.9, 0.999)


def guide_name(size: int, steps: int, ema_decay: float) -> str:
    """The file stem of one guide of the grid, e.g. ``c16-k500-ema0.999``."""
    return f"c{size}-k{steps}-ema{ema_decay:g}"


def guide_grid(sizes=GUIDE_SIZES, steps=GUIDE_STEPS, ema_decays=GUIDE_EMA_DECAYS, seed: int = 0,
               dataset: str = "mnist") -> dict[str, dict]:
    """name -> the resolved training config of every (size, steps, EMA decay) guide on the ``default`` recipe."""
    sizes = [positive_int(size, "guide width (base channels)") for size in sizes]
    steps = [positive_int(count, "guide training steps") for count in steps]
    decays = [float(decay) for decay in ema_decays]
    if not sizes or not steps or not decays or any(not 0.0 <= decay < 1.0 for decay in decays):
        raise UserInputError(f"a guide grid needs widths, steps and EMA decays in [0, 1), got {sizes}, {steps}, "
                             f"{decays}")
    return {guide_name(size, count, decay): resolve_config(base=default_config(), overrides={
        "model.base_channels": size, "train.steps": count, "train.ema_decay": decay, "train.seed": seed,
        "train.dataset": dataset, "train.checkpoint_every": count}) for size, count, decay in product(sizes, steps, decays)}


def train_guides(outdir: str | Path, grid: dict[str, dict], device: str = "auto",
                 progress: bool = True) -> dict[str, Path]:
    """Train every guide of ``grid`` into ``outdir/NAME.pt`` (finished ones are loaded, interrupted ones resumed)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, config in grid.items():
        path = outdir / f"{name}.pt"
        if progress:
            print(f"guide {name}: {config['train']['steps']} steps, width {config['model']['base_channels']}, "
                  f"EMA {config['train']['ema_decay']:g}")
        load_or_train(path, config, device, run_dir=outdir / "runs" / name, progress=progress)
        paths[name] = path
    return paths
