"""Training the classifier that scores generated images (notebook 05-classifier-eval).

The command-line twin is ``python -m cfgutils train-classifier`` (:mod:`cfgutils.cli.classifier`).

Determinism: the initial weights come from ``seed``; the batch order of epoch ``e`` is a permutation
drawn from a generator seeded by ``(seed, e)``; the augmentation draws from one generator whose state
is saved in every checkpoint. The learning rate depends on the step only (warm-up, then exponential
decay), never on the run's length, so on a CPU K steps + save + resume to 2K steps give bit-identical
weights to 2K uninterrupted steps. There is no BatchNorm and no dropout: train and eval mode compute
the same function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.classifier import ClassifierConfig, ImageClassifier, build_classifier
from ..core.optim import make_optimizer, scheduled_lr, set_learning_rate
from ..core.seeding import batch_indices
from ..core.unet import count_parameters
from ..errors import UserInputError, finite_number, one_of, positive_int
from ..plumbing import checkpoint as ckpt
from ..plumbing.data import ImageSplit, dataset_info
from ..plumbing.device import pick_device
from .classifier import KIND, accuracy, check_split
from .runlog import RunLogger

#: the training losses: cross-entropy on the logits, or the reference study's squared error of the softmax
CLASSIFIER_LOSSES = ("cross-entropy", "softmax-mse")


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Optimisation settings of a classifier run; saved with every checkpoint (05-classifier-eval)."""

    steps: int = 2000  # total optimizer steps of the run (a resumed run continues up to this step)
    batch_size: int = 64
    lr: float = 2e-3  # peak AdamW learning rate
    seed: int = 0
    augment: bool = True  # random rotation, scale, shear and shift of every training image
    dataset: str = "mnist"  # the training data: mnist or fashion-mnist (cfgutils.plumbing.data.DATASETS)
    warmup_steps: int = 50  # linear warm-up from lr / warmup_steps to lr
    lr_decay_steps: int = 1000  # after warm-up the lr shrinks 10x every lr_decay_steps steps (0 = constant lr)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    log_every: int = 50  # steps between history rows
    loss: str = "cross-entropy"  # or "softmax-mse": squared error between softmax and one-hot (the reference study)
    input_noise: float = 0.0  # std of Gaussian noise added to every training image (the reference study: 0.1)

    def validate(self) -> None:
        """Raise :class:`UserInputError` for unusable values (05-classifier-eval)."""
        for name in ("steps", "batch_size", "log_every"):
            positive_int(getattr(self, name), name.replace("_", " "))
        for name in ("warmup_steps", "lr_decay_steps"):
            positive_int(getattr(self, name), name.replace("_", " "), minimum=0)
        one_of(self.loss, CLASSIFIER_LOSSES, "classifier loss")
        finite_number(self.input_noise, "input noise", low=0.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UserInputError(f"seed must be an integer, got {self.seed!r}")
        if finite_number(self.lr, "lr") <= 0:
            raise UserInputError(f"lr must be a positive finite number, got {self.lr!r}")
        finite_number(self.weight_decay, "weight decay", low=0.0)
        dataset_info(self.dataset)


#: the reference study's classifier and how it was trained: AdamW 1e-3 (torch's default weight decay 0.01)
#: constant, batch 128, 4,000 steps, softmax squared error, N(0, 0.1^2) input noise, no augmentation
CLASSIFIER_RECIPES = {
    "cnn": ({}, {}),
    "reference": ({"architecture": "reference", "feature_dim": 16},
                  {"steps": 4000, "batch_size": 128, "lr": 1e-3, "augment": False, "input_noise": 0.1,
                   "loss": "softmax-mse", "warmup_steps": 0, "lr_decay_steps": 0, "weight_decay": 0.01}),
}


def classifier_learning_rate(step: int, config: ClassifierTrainConfig) -> float:
    """The lr at 0-based ``step``: linear warm-up, then 10x smaller every ``lr_decay_steps`` (0: constant) (05)."""
    shape = "exponential" if config.lr_decay_steps else "constant"
    return scheduled_lr(step, config.lr, config.warmup_steps, shape, decay_every=config.lr_decay_steps)


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str = "cross-entropy") -> torch.Tensor:
    """Cross-entropy of the logits, or the mean squared error between softmax and one-hot labels (05, 07)."""
    if loss == "softmax-mse":
        return ((logits.softmax(1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) ** 2).mean()
    return F.cross_entropy(logits, labels)


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


@dataclass
class TrainedClassifier:
    """What :func:`train_classifier` returns: the model and all it takes to save and resume it (05-classifier-eval)."""

    model: ImageClassifier
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: dict  # {"model": ..., "train": ...}
    step: int
    data_source: str
    wall_time_s: float
    history: list[dict] = field(default_factory=list)
    test_accuracy: float | None = None
    test_source: str | None = None


def classifier_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    labels: torch.Tensor, generator: torch.Generator, augment: bool, loss_name: str = "cross-entropy",
                    input_noise: float = 0.0) -> tuple[float, float]:
    """One step: augment, add noise, loss, backward, AdamW; returns (loss, accuracy) of the batch (05-classifier-eval)."""
    batch = augment_batch(images, generator) if augment else images
    if input_noise > 0:
        batch = batch + input_noise * torch.randn(batch.shape, generator=generator).to(batch.device)
    logits = model(batch)
    loss = classifier_loss(logits, labels, loss_name)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), float((logits.detach().argmax(1) == labels).float().mean())


def train_classifier(train: ImageSplit, steps: int | None = None, batch_size: int | None = None,
                     lr: float | None = None, seed: int = 0, device: str | torch.device | None = "auto",
                     augment: bool | None = None, resume_from: str | Path | None = None, progress: bool = True,
                     eval_split: ImageSplit | None = None, model_config: ClassifierConfig | dict | None = None,
                     recipe: str = "cnn") -> TrainedClassifier:
    """Train a classifier with AdamW, deterministically, resumably (05-classifier-eval).

    ``recipe`` picks the network and its training settings (:data:`CLASSIFIER_RECIPES`: "cnn", cfgutils' own
    with augmentation; "reference", the reference study's); arguments left at None keep the recipe's values.
    ``steps`` is the total length of the run: with ``resume_from`` the checkpoint's run continues from its
    step up to ``steps`` (its settings and model config are kept). With ``eval_split`` the held-out accuracy
    is measured at the end and stored in the result (and so in the saved checkpoint's metadata).
    """
    payload = ckpt.load_checkpoint(resume_from, KIND) if resume_from is not None else None
    settings, model_config = classifier_settings(payload, model_config, recipe, steps=steps, batch_size=batch_size,
                                                 lr=lr, seed=seed, augment=augment, dataset=train.dataset)
    for split, what in ((train, "the training split"), (eval_split, "the evaluation split")):
        if split is not None:
            check_split(split, what)
    if eval_split is not None and eval_split.dataset != train.dataset:
        raise UserInputError(f"the evaluation split is {eval_split.dataset}, the training split {train.dataset}")
    if settings.batch_size > len(train):
        raise UserInputError(f"batch size {settings.batch_size} exceeds the {len(train)} training images")
    device = device if isinstance(device, torch.device) else pick_device(device)
    result = start_classifier(settings, model_config, device, train.source, payload, resume_from)
    images, labels = train.images.to(device), train.labels.to(device)
    with RunLogger(result.step, settings.steps, settings.log_every, ("loss", "train_accuracy"), progress=progress,
                   desc="classifier", previous_wall_s=result.wall_time_s) as log:
        for step in range(result.step, settings.steps):
            index = batch_indices(step, len(train), settings.batch_size, settings.seed).to(device)
            set_learning_rate(result.optimizer, lr_now := classifier_learning_rate(step, settings))
            loss, batch_accuracy = classifier_step(result.model, result.optimizer, images[index], labels[index],
                                                   result.generator, settings.augment, settings.loss,
                                                   settings.input_noise)
            log.record(step + 1, len(index), lr_now, loss=loss, train_accuracy=batch_accuracy)
    result.model.eval()
    result.step, result.wall_time_s, result.history = settings.steps, log.elapsed(), log.history
    if eval_split is not None:
        result.test_accuracy, result.test_source = accuracy(result.model, eval_split), eval_split.source
    return result


def classifier_settings(payload: dict | None, model_config, recipe: str = "cnn",
                        **chosen) -> tuple[ClassifierTrainConfig, ClassifierConfig]:
    """The run's validated settings: defaults <- the recipe's (a fresh run) or a resumed checkpoint's <- the
    values of ``chosen`` that are not None (05-classifier-eval)."""
    settings = asdict(ClassifierTrainConfig())
    one_of(recipe, CLASSIFIER_RECIPES, "classifier recipe")
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if payload is None:
        recipe_model, recipe_train = CLASSIFIER_RECIPES[recipe]
        settings.update(recipe_train)
        model_config = recipe_model if model_config is None else model_config
    else:  # settings without an argument here (warm-up, decay, ...) continue as stored
        stored = payload["config"].get("train", {})
        settings.update({k: v for k, v in stored.items() if k in settings})
        model_config = payload["config"].get("model", {})
        if "dataset" in chosen and chosen["dataset"] != settings["dataset"]:
            raise UserInputError(f"the checkpoint was trained on {settings['dataset']}; it cannot continue on "
                                 f"{chosen['dataset']}")
    settings.update(chosen)
    train_config = ClassifierTrainConfig(**settings)
    train_config.validate()
    if not isinstance(model_config, ClassifierConfig):
        model_config = ClassifierConfig.from_dict(model_config)
    return train_config, model_config


def start_classifier(settings: ClassifierTrainConfig, model_config: ClassifierConfig, device: torch.device,
                     data_source: str, payload: dict | None, resume_from) -> TrainedClassifier:
    """A fresh classifier, AdamW and generator, or the run in ``payload`` restored to its step (05-classifier-eval)."""
    model = build_classifier(model_config, settings.seed).to(device)
    optimizer = make_optimizer(model, settings.lr, device, settings.weight_decay, fused=False)
    config = {"model": model_config.to_dict(), "train": asdict(settings)}
    result = TrainedClassifier(model, optimizer, torch.Generator().manual_seed(settings.seed), config, 0,
                               data_source, 0.0)
    if payload is None:
        return result
    result.step = int(payload["metadata"]["step"])
    if result.step >= settings.steps:
        raise UserInputError(f"{resume_from} is already at step {result.step}; ask for more steps than that "
                             "(steps is the total length of the run)")
    try:
        model.load_state_dict(payload["state"]["model"])
        optimizer.load_state_dict(payload["state"]["optimizer"])
        result.generator.set_state(payload["state"]["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise ckpt.CheckpointError(f"checkpoint {resume_from} cannot be resumed: "
                                   f"{str(error).strip().splitlines()[0][:160]}") from error
    result.wall_time_s = float(payload["metadata"].get("wall_time_s", 0.0))
    previous_source = payload["metadata"].get("data_source")
    if previous_source and previous_source != data_source:  # say so when the data changed mid-run
        result.data_source = f"{previous_source} (steps 1-{result.step}), then {data_source}"
    return result


def save_classifier(path: str | Path, result: TrainedClassifier, **extra_metadata: Any) -> Path:
    """Write an "image-classifier" checkpoint: weights, optimizer, generator, config, metadata (05-classifier-eval)."""
    state = {"model": result.model.state_dict(), "optimizer": result.optimizer.state_dict(),
             "generator": result.generator.get_state()}
    extra = {"wall_time_s": round(result.wall_time_s, 2), "parameters": count_parameters(result.model)}
    if result.test_accuracy is not None:
        extra.update(test_accuracy=float(result.test_accuracy), test_source=result.test_source)
    info = dataset_info(result.config["train"].get("dataset", "mnist"))
    metadata = ckpt.base_metadata(result.data_source, result.step, dataset=info.name,
                                  class_names=list(info.class_names), **extra, **extra_metadata)
    return ckpt.save_checkpoint(path, KIND, result.config, state, metadata)
