"""The reference study's three experiments, as functions and as ``python -m cfgutils experiment ...``.

1. ``digit-control``: every digit at one guidance scale (04-cfg-sampling).
2. ``guidance``: one digit across guidance scales, the same starting noise in every column (04-cfg-sampling).
3. ``classifier``: classifier metrics of generated digits over a sweep of scales (05-classifier-eval).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .errors import UserInputError
from .sampling import Guidance, SamplerSettings, check_scale, digit_labels, generate, w_from_s
from .sampling_cli import (add_sampler_arguments, check_output_dir, guidance_from_args, sample_meta,
                           settings_from_args, write_samples)
from .train import LoadedModel, load_model

#: the reference study's grid of w, plus the unconditional model (s = 0)
REFERENCE_WEIGHTS = (0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 7.5, 10, 15, 20)
SWEEP_SCALES = (0.0,) + tuple(w + 1.0 for w in REFERENCE_WEIGHTS)
#: scales for the one-digit figure (experiment 2)
FIGURE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 11.0, 21.0)


def scale_label(scale: float) -> str:
    """"s=3 (w=2)": a column label in both conventions (04-cfg-sampling)."""
    return f"s={scale:g}\n(w={w_from_s(scale):g})"


def check_scales(scales) -> list[float]:
    """A non-empty list of finite guidance scales (04-cfg-sampling)."""
    scales = [check_scale(s) for s in (scales or [])]
    if not scales:
        raise UserInputError("the list of guidance scales is empty")
    return scales


def digit_control(loaded: LoadedModel, scale: float = 3.0, n_per_digit: int = 8,
                  settings: SamplerSettings | None = None, seed: int = 0, batch_size: int = 500,
                  guidance: Guidance | None = None) -> torch.Tensor:
    """Experiment 1: ``n_per_digit`` samples of each digit at scale s; returns (10, n, 1, 28, 28) (04-cfg-sampling)."""
    labels = digit_labels("all", n_per_digit)
    images = generate(loaded.model, loaded.diffusion, labels, scale, settings, seed, batch_size, guidance)
    return images.cpu().reshape(10, n_per_digit, 1, 28, 28)


def scale_sweep_one_digit(loaded: LoadedModel, digit: int, scales, n: int = 8,
                          settings: SamplerSettings | None = None, seed: int = 0,
                          guidance: Guidance | None = None) -> torch.Tensor:
    """Experiment 2: ``n`` samples of ``digit`` per scale, the same noise per row; (len(scales), n, 1, 28, 28)."""
    scales = check_scales(scales)
    labels = digit_labels(digit, n)
    return torch.stack([generate(loaded.model, loaded.diffusion, labels, s, settings, seed, max(n, 1), guidance).cpu()
                        for s in scales])


def class_scale_grid(loaded: LoadedModel, scales, settings: SamplerSettings | None = None, seed: int = 0,
                     guidance: Guidance | None = None) -> torch.Tensor:
    """One sample per digit (rows) and scale (columns), the same noise per row; (10, len(scales), 1, 28, 28)."""
    scales = check_scales(scales)
    labels = digit_labels("all", 1)
    columns = [generate(loaded.model, loaded.diffusion, labels, s, settings, seed, 10, guidance).cpu() for s in scales]
    return torch.stack(columns, dim=1)


def plot_scale_grid(images: torch.Tensor, scales, row_labels=None, title: str | None = None):
    """Draw a (rows, len(scales), 1, 28, 28) grid with columns labelled in both conventions; returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import image_grid

    rows, cols = images.shape[:2]
    fig, ax = plt.subplots(figsize=(0.75 * cols + 1.0, 0.62 * rows + 1.3))
    flat = images.reshape(rows * cols, 1, 28, 28)
    image_grid(flat, nrow=cols, ax=ax, col_labels=[scale_label(s) for s in scales], row_labels=row_labels,
               title=title)
    ax.tick_params(axis="x", labelsize=7, length=0)
    ax.tick_params(axis="y", labelsize=8, length=0)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    """Add ``experiment digit-control | guidance | classifier``."""
    parser = subparsers.add_parser("experiment", help="the reference study's experiments 1-3",
                                   description="Reproduce (and extend) the reference study's experiments.")
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    control = experiments.add_parser("digit-control", help="experiment 1: every digit at one guidance scale",
                                     description="Sample every digit at one guidance scale; writes grid.png "
                                                 "(rows = digits), per-sample PNGs, samples.npz and meta.json.")
    control.add_argument("model", metavar="MODEL.pt")
    control.add_argument("outdir", metavar="OUTDIR")
    control.add_argument("-n", "--n", type=int, default=8, help="samples per digit (default 8)")
    add_sampler_arguments(control)
    control.set_defaults(handler=_run_digit_control)

    guidance = experiments.add_parser("guidance", help="experiment 2: one digit across guidance scales",
                                      description="Sample one digit at several guidance scales from the same "
                                                  "starting noise; writes guidance.png (columns = scales), "
                                                  "samples.npz and meta.json.")
    guidance.add_argument("model", metavar="MODEL.pt")
    guidance.add_argument("digit", metavar="DIGIT", help="0-9")
    guidance.add_argument("outdir", metavar="OUTDIR")
    guidance.add_argument("--scales", type=float, nargs="+", default=list(FIGURE_SCALES), metavar="S",
                          help=f"guidance scales s (w = s - 1); default {' '.join(f'{s:g}' for s in FIGURE_SCALES)}")
    guidance.add_argument("-n", "--n", type=int, default=8, help="samples per scale (default 8)")
    add_sampler_arguments(guidance, default_scale=None)
    guidance.set_defaults(handler=_run_guidance)

    import importlib.util

    if all(importlib.util.find_spec(f"cfgutils.{name}") is not None for name in ("evaluation", "metrics")):
        from . import evaluation

        evaluation.register_experiment(experiments)


def _run_digit_control(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    labels = digit_labels("all", args.n)
    scale = check_scale(args.guidance_scale)
    settings = settings_from_args(args)
    guidance = guidance_from_args(args)
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device, raw_weights=args.raw_weights)
    images = generate(loaded.model, loaded.diffusion, labels, scale, settings, args.seed, args.batch_size,
                      guidance, progress=True).cpu()
    meta = sample_meta(loaded, scale, settings, args.seed, args.batch_size, guidance, experiment="digit-control")
    write_samples(outdir, images, labels, meta, nrow=args.n)
    print(f"wrote {len(labels)} samples (s = {scale:g}, w = {w_from_s(scale):g}) to {outdir}")
    return 0


def _run_guidance(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digit = int(digit_labels(args.digit, 1)[0])
    scales = check_scales(args.scales)
    if args.n <= 0:
        raise UserInputError(f"n must be a positive integer, got {args.n}")
    settings = settings_from_args(args)
    guidance = guidance_from_args(args)
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device, raw_weights=args.raw_weights)
    images = scale_sweep_one_digit(loaded, digit, scales, args.n, settings, args.seed, guidance)
    outdir.mkdir(parents=True, exist_ok=True)
    fig = plot_scale_grid(images.transpose(0, 1), scales,
                          title=f"The digit {digit} at various guidance scales ({settings.sampler})")
    fig.savefig(outdir / "guidance.png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    from .data import to_uint8

    np.savez_compressed(outdir / "samples.npz", images=to_uint8(images).squeeze(2).numpy(),
                        scales=np.array(scales), digit=digit)
    meta = sample_meta(loaded, scales[0], settings, args.seed, args.n, guidance, experiment="guidance",
                       digit=digit)
    meta.pop("guidance_scale_s")
    meta.pop("guidance_weight_w")
    meta.update({"scales_s": scales, "weights_w": [w_from_s(s) for s in scales], "n_per_scale": args.n})
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {outdir / 'guidance.png'} ({len(scales)} scales x {args.n} samples of digit {digit})")
    return 0

