"""Flags and file writing shared by several commands (the training commands, ``sample`` and ``experiment ...``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..core.guidance import Guidance, w_from_s
from ..core.rules import (GUIDANCES, SCHEDULE_SHAPES, IndependentConditionGuidance, IntervalGuidance, ProjectedGuidance,
                          RescaledGuidance, ScheduledGuidance, ThresholdGuidance, ZeroStarGuidance)
from ..core.samplers import DEFAULT_SAMPLER, SAMPLERS, SPACINGS, SamplerSettings
from ..errors import UserInputError, positive_int
from ..plumbing.checkpoint import LoadedModel, check_model_dataset, load_guidance
from ..plumbing.data import DATASETS, dataset_info, to_uint8
from ..presentation.plots import image_grid

def add_checkpoint_arguments(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """``OUT.pt`` (the checkpoint to write) and ``-l/--load PREV.pt`` (a run to resume), for the training commands."""
    parser.add_argument("out", metavar="OUT.pt", help="checkpoint to write (its folder must exist)")
    parser.add_argument("-l", "--load", metavar="PREV.pt", help=resume_help)


def prose(text: str) -> str:
    """A command's description written as an indented paragraph, as one line for argparse to wrap."""
    return " ".join(text.split())


def add_dataset_argument(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """``--dataset mnist|fashion-mnist``: which dataset the model must have been trained on (default: its own)."""
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help=help_text or "the dataset the classes come from (default: the model's); a model or "
                                     "classifier trained on another dataset is refused")


def model_dataset(args: argparse.Namespace, loaded: LoadedModel) -> str:
    """``--dataset`` if given, else the model's own; a model trained on another dataset is refused (04, 05)."""
    dataset = getattr(args, "dataset", None) or loaded.dataset
    check_model_dataset(loaded, dataset)
    return dataset


def check_output_dir(path: str | Path) -> Path:
    """An output folder we may create or fill: it must not be a file (04-cfg-sampling)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"output folder {path} is a file")
    if not path.exists() and not path.parent.exists():
        raise UserInputError(f"parent folder {path.parent} of {path} does not exist")
    return path


def sample_meta(loaded: LoadedModel, scale: float, settings: SamplerSettings, seed: int, batch_size: int,
                guidance: Guidance, **extra) -> dict:
    """What a set of samples came from: model, weights, data source and dataset, scale in both conventions, sampler."""
    return {
        "model": str(loaded.path) if loaded.path else None,
        "dataset": loaded.dataset,
        "class_names": list(dataset_info(loaded.dataset).class_names),
        "weights": loaded.weights,
        "model_step": loaded.metadata.get("step"),
        "model_data_source": loaded.metadata.get("data_source"),
        "guidance_scale_s": scale,
        "guidance_weight_w": w_from_s(scale),
        "convention": "eps = eps_u + s (eps_c - eps_u); w = s - 1",
        **settings.describe(),
        **guidance.describe(),
        "seed": seed,
        "batch_size": batch_size,
        **extra,
    }


def write_samples(outdir: Path, images: torch.Tensor, labels: torch.Tensor, meta: dict, nrow: int) -> None:
    """Write per-sample PNGs, grid.png, samples.npz (uint8 images, labels) and meta.json into ``outdir``."""
    from PIL import Image

    outdir.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(images.cpu()).squeeze(1).numpy()
    label_array = labels.cpu().numpy().astype(np.int64)
    item = "digit" if meta.get("dataset", "mnist") == "mnist" else "class"
    for index, (image, label) in enumerate(zip(pixels, label_array)):
        Image.fromarray(image, mode="L").save(outdir / f"sample_{index:04d}_{item}{label}.png")
    Image.fromarray(image_grid(pixels, nrow=nrow, as_array=True), mode="L").save(outdir / "grid.png")
    np.savez_compressed(outdir / "samples.npz", images=pixels, labels=label_array)
    (outdir / "meta.json").write_text(json.dumps({**meta, "n": int(len(label_array))}, indent=2) + "\n")


def add_sampler_arguments(parser: argparse.ArgumentParser, default_scale: float | None = 3.0) -> None:
    """Flags shared by ``sample`` and the experiments: sampler, steps, eta, seed, batch, weights, device."""
    if default_scale is not None:
        parser.add_argument("--guidance-scale", "-s", type=float, default=default_scale, metavar="S",
                            help=f"guidance scale s (0 = unconditional, 1 = conditional, >1 guided; the paper's "
                                 f"w = s - 1); default {default_scale:g}")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS,
                        help=f"ddpm (posterior steps), ddim, dpmpp (DPM-Solver++(2M)), or ancestral (the reference "
                             f"study's sampler: eps-form steps t = 999 .. 1 with sigma^2 = beta; use it with --no-clip "
                             f"--no-clamp to sample as the study did); default {DEFAULT_SAMPLER}")
    parser.add_argument("--steps", type=int, default=None,
                        help="model evaluations (default: 1000 for ddpm, 50 for ddim, 12 for dpmpp, 999 for ancestral)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--spacing", default="trailing", choices=SPACINGS, help="timestep spacing")
    parser.add_argument("--no-clip", action="store_true", help="do not clip predicted x0 to [-1, 1]")
    parser.add_argument("--no-clamp", action="store_true",
                        help="keep the final samples unclamped (what scoring sees; image files are clamped anyway)")
    parser.add_argument("--seed", type=int, default=0, help="seed: same seed and batch size, same pixels")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per model call chunk")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    add_guidance_arguments(parser)


def add_guidance_arguments(parser: argparse.ArgumentParser) -> None:
    """``--guidance NAME`` (notebook 06's and 08's rules) and each rule's parameters (06, 08)."""
    rescale, interval, threshold, apg = RescaledGuidance(), IntervalGuidance(), ThresholdGuidance(), ProjectedGuidance()
    icg, schedule, zerostar = IndependentConditionGuidance(), ScheduledGuidance(), ZeroStarGuidance()
    group = parser.add_argument_group("guidance rule (notebooks 06-guidance-variants and 08-newer-guidance)")
    group.add_argument("--guidance", default="cfg", choices=list(GUIDANCES),
                       help=prose("""
                                cfg: plain classifier-free guidance (default); rescale: CFG rescale (Lin et al. 2024);
                                interval: guidance only in a noise interval (Kynkaanniemi et al. 2024); threshold:
                                dynamic thresholding of x0 (Imagen, Saharia et al. 2022); apg: adaptive projected
                                guidance (Sadat et al. 2024); autoguidance: a weaker model as the negative branch
                                (Karras et al. 2024); cfgpp: CFG++, s is lambda in [0, 1] (Chung et al. 2024); icg: a
                                random label as the negative branch (Sadat et al. 2024); schedule: the weight ramps up
                                as the noise falls (Wang et al. 2024); zerostar: CFG-Zero* (Fan et al. 2025)"""))
    group.add_argument("--rescale-phi", type=float, default=rescale.phi,
                       help=f"rescale: mix of the rescaled prediction, 0 = plain CFG (default {rescale.phi:g})")
    group.add_argument("--interval-sigma", type=float, nargs=2, default=[interval.sigma_lo, interval.sigma_hi],
                       metavar=("LO", "HI"), help="interval: guide only where LO < sigma <= HI, sigma = "
                       f"sqrt((1-alpha_bar)/alpha_bar) (default {interval.sigma_lo:g} {interval.sigma_hi:g})")
    group.add_argument("--threshold-percentile", type=float, default=threshold.percentile,
                       help=f"threshold: quantile of |x0| that is scaled to 1 (default {threshold.percentile:g})")
    group.add_argument("--apg-eta", type=float, default=apg.eta,
                       help=f"apg: weight of the update's component parallel to x0_c (default {apg.eta:g})")
    group.add_argument("--apg-norm-threshold", type=float, default=apg.norm_threshold,
                       help=f"apg: largest L2 norm of the update, 0 = no limit (default {apg.norm_threshold:g})")
    group.add_argument("--apg-momentum", type=float, default=apg.momentum,
                       help=f"apg: momentum of the running update, negative = reverse (default {apg.momentum:g})")
    group.add_argument("--guide-model", metavar="PATH", default=None,
                       help="autoguidance: the weaker model (default: the shipped data/pretrained/autoguide.pt)")
    group.add_argument("--icg-seed", type=int, default=icg.seed,
                       help=f"icg: seed of the random negative labels (default {icg.seed})")
    group.add_argument("--schedule-shape", default=schedule.shape, choices=list(SCHEDULE_SHAPES),
                       help=f"schedule: how the weight ramps over the steps (default {schedule.shape})")
    group.add_argument("--schedule-of", default=schedule.schedules, choices=["s", "w"],
                       help=f"schedule: ramp the scale s (the paper's convention) or the weight w = s - 1 "
                            f"(default {schedule.schedules})")
    group.add_argument("--zerostar-steps", type=int, default=zerostar.zero_steps,
                       help=f"zerostar: first steps that predict x0 = 0 (default {zerostar.zero_steps})")


def guidance_from_args(args: argparse.Namespace) -> Guidance:
    """The guidance rule the flags ask for, validated; autoguidance loads its guide model (06, 08)."""
    parameters = {
        "cfg": {},
        "rescale": {"phi": args.rescale_phi},
        "interval": {"sigma_lo": args.interval_sigma[0], "sigma_hi": args.interval_sigma[1]},
        "threshold": {"percentile": args.threshold_percentile},
        "apg": {"eta": args.apg_eta, "norm_threshold": args.apg_norm_threshold, "momentum": args.apg_momentum},
        "autoguidance": {},
        "cfgpp": {},
        "icg": {"seed": args.icg_seed},
        "schedule": {"shape": args.schedule_shape, "schedules": args.schedule_of},
        "zerostar": {"zero_steps": args.zerostar_steps},
    }
    return load_guidance(args.guidance, getattr(args, "device", "auto"), args.guide_model, **parameters[args.guidance])


def settings_from_args(args: argparse.Namespace) -> SamplerSettings:
    """Validated sampler settings from parsed flags."""
    positive_int(args.batch_size, "batch size")
    return SamplerSettings(args.sampler, args.steps, args.eta, args.spacing, not args.no_clip,
                           not getattr(args, "no_clamp", False)).validate()


def run_record() -> dict:
    """How this command was run, for a study's meta.json: the command line, the commit and the date (UTC)."""
    import datetime
    import subprocess
    import sys

    from ..plumbing import paths

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True,
                                text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": "python -m cfgutils " + " ".join(sys.argv[1:]), "commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
