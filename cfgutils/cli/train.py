"""``python -m cfgutils train`` and ``export``: the command-line twin of notebook 03-train.

Also under ``torchrun --nproc_per_node N -m cfgutils train ...`` (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserInputError
from ..plumbing import checkpoint as ckpt
from ..plumbing import paths
from ..plumbing.config import resolve_config
from ..plumbing.data import DATASETS
from ..workflows.train import train
from .common import add_checkpoint_arguments, prose


def register(subparsers) -> None:
    """Add the ``train`` and ``export`` commands."""
    parser = subparsers.add_parser(
        "train", help="train the class-conditional diffusion model (CFG label dropout, EMA)",
        description=prose("""
                        Train the CFG UNet on MNIST (or --dataset fashion-mnist) and write OUT.pt (state_dicts +
                        config + metadata), atomically, every --checkpoint-every steps and at the end. Under `torchrun
                        --nproc_per_node N -m cfgutils train ...` it trains with DistributedDataParallel; --batch-size
                        is then the effective batch, split across the N processes."""))
    add_checkpoint_arguments(parser, "resume this checkpoint's run exactly (model and diffusion config must match)")
    parser.add_argument("-c", "--config", metavar="CONFIG.yaml",
                        help="YAML config file, or a preset name: default (fast CPU recipe), reference (the reference "
                             "study's own network and recipe) or reference-recipe (its recipe on cfgutils' UNet)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides as dotted KEY VALUE pairs, e.g. --opts train.lr 1e-3 model.base_channels 48")
    parser.add_argument("--steps", type=int, help="total training steps of the run (train.steps)")
    parser.add_argument("--batch-size", type=int, help="effective batch size (train.batch_size)")
    parser.add_argument("--lr", type=float, help="peak learning rate (train.lr)")
    parser.add_argument("--p-uncond", type=float, help="label dropout probability in [0, 1] (train.p_uncond)")
    parser.add_argument("--seed", type=int, help="seed of every random draw of the run (train.seed)")
    parser.add_argument("--dataset", choices=list(DATASETS),
                        help="training data: mnist (default) or fashion-mnist (train.dataset)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (train.checkpoint_every)")
    parser.add_argument("--stop-at", type=int, metavar="STEP",
                        help="stop after this step (checkpoint written) as if interrupted; resume later with -l")
    parser.add_argument("--run-dir", help="folder for config.yaml, log.csv, previews, tensorboard "
                                          "(default: data/runs/<OUT name>)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_cli)

    export = subparsers.add_parser("export", help="copy a checkpoint with EMA weights only (small, for sampling)",
                                   description="Write OUT.pt with the EMA weights, config and metadata of MODEL.pt "
                                               "(no raw weights, no optimizer state): what data/pretrained/ ships.")
    export.add_argument("model", metavar="MODEL.pt")
    export.add_argument("out", metavar="OUT.pt")
    export.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    path = ckpt.export_for_sampling(args.model, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, EMA weights only)")
    return 0


def _run_cli(args: argparse.Namespace) -> int:
    out = ckpt.check_output_path(args.out, "output")
    base = None
    if args.load:
        base = ckpt.load_checkpoint(args.load, ckpt.MODEL_KIND)["config"]
    overrides = {"train.steps": args.steps, "train.batch_size": args.batch_size, "train.lr": args.lr,
                 "train.p_uncond": args.p_uncond, "train.seed": args.seed, "train.dataset": args.dataset,
                 "train.checkpoint_every": args.checkpoint_every}
    if base is not None and args.config is None and not args.opts:
        config = resolve_config(base=base, overrides=overrides)
    else:
        config = resolve_config(args.config, args.opts, overrides)
    if args.stop_at is not None and args.stop_at <= 0:
        raise UserInputError(f"--stop-at must be a positive step, got {args.stop_at}")
    run_dir = Path(args.run_dir) if args.run_dir else paths.RUNS_DIR / out.stem
    result = train(config, checkpoint_path=out, resume_from=args.load, run_dir=run_dir, device=args.device,
                   stop_at=args.stop_at, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained to step {result.step} in {result.wall_time_s:.0f} s (data: {result.data_source}); "
              f"last loss {result.history[-1]['loss']:.4f}; checkpoint {out}; run dir {run_dir}")
    return 0
