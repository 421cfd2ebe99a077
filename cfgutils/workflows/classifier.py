"""A small CNN that reads MNIST digits, used to score generated samples (notebook 05-classifier-eval).

Library: :class:`ImageClassifier`, :func:`train_classifier`, :func:`save_classifier`, :func:`load_classifier`,
:func:`accuracy`, :func:`predict_proba`, :func:`extract_features`. The command-line twin is
``python -m cfgutils train-classifier`` (:mod:`cfgutils.cli.classifier`).

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

from ..core.reference import ReferenceClassifier
from ..core.seeding import batch_indices
from ..core.unet import count_parameters
from ..errors import UserInputError, config_from_dict, finite_number, one_of, positive_int, renamed_attribute
from ..plumbing import checkpoint as ckpt
from ..plumbing.data import ImageSplit, dataset_info
from ..plumbing.device import pick_device
from .optim import make_optimizer, scheduled_lr, set_learning_rate
from .runlog import RunLogger

KIND = "image-classifier"
NUM_CLASSES = 10
#: the classifier networks: cfgutils' CNN (:class:`ImageClassifier`) or the reference study's (8,118 parameters)
CLASSIFIER_ARCHITECTURES = ("cnn", "reference")
#: the training losses: cross-entropy on the logits, or the reference study's squared error of the softmax
CLASSIFIER_LOSSES = ("cross-entropy", "softmax-mse")


# --------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ClassifierConfig:
    """Widths of :class:`ImageClassifier`; saved with every checkpoint (05-classifier-eval)."""

    channels1: int = 32  # 3x3 conv at 28x28, then 2x2 max-pool to 14x14
    channels2: int = 64  # 3x3 conv at 14x14, then 2x2 max-pool to 7x7
    channels3: int = 128  # 3x3 conv at 7x7, then 2x2 max-pool to 3x3
    feature_dim: int = 128  # width of the penultimate layer: the features of the Frechet distance etc.
    architecture: str = "cnn"  # or "reference": the reference study's classifier (only feature_dim applies)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "architecture":
                positive_int(value, f"classifier config {name}")
        one_of(self.architecture, CLASSIFIER_ARCHITECTURES, "classifier architecture")

    @classmethod
    def from_dict(cls, values: dict | None) -> "ClassifierConfig":
        """Build from a plain dict, refusing unknown keys (05-classifier-eval)."""
        return config_from_dict(cls, values, "classifier")

    def to_dict(self) -> dict:
        """The config as a plain dict (what checkpoints store) (05-classifier-eval)."""
        return asdict(self)


class ImageClassifier(nn.Module):
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


def classifier_network(config: ClassifierConfig | dict | None = None) -> nn.Module:
    """The network a classifier config describes: :class:`ImageClassifier` or the reference study's (05, 07)."""
    if not isinstance(config, ClassifierConfig):
        config = ClassifierConfig.from_dict(config)
    if config.architecture == "cnn":
        return ImageClassifier(config)
    network = ReferenceClassifier(NUM_CLASSES, config.feature_dim)
    network.config = config
    return network


def build_classifier(config: ClassifierConfig | dict | None = None, seed: int = 0) -> nn.Module:
    """A fresh classifier network initialised from ``seed``, leaving the global RNG alone (05-classifier-eval)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classifier_network(config)


# --------------------------------------------------------------------------------------------- training
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


def _check_split(split: ImageSplit, what: str) -> None:
    if not isinstance(split, ImageSplit):
        raise UserInputError(f"{what} must be an ImageSplit (see cfgutils.plumbing.data.load_dataset), "
                             f"got {type(split).__name__}")
    if len(split) == 0:
        raise UserInputError(f"{what} is empty")


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
            _check_split(split, what)
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


@dataclass
class LoadedClassifier:
    """A classifier ready to score digits (eval mode, no gradients), its config and metadata (05-classifier-eval)."""

    model: ImageClassifier
    config: dict
    metadata: dict
    path: Path

    @property
    def dataset(self) -> str:
        """The dataset it was trained on ("mnist" when its config names none)."""
        return self.config.get("train", {}).get("dataset", "mnist")


def load_classifier(path: str | Path, device: str | torch.device | None = "auto") -> LoadedClassifier:
    """Load an "image-classifier" checkpoint in eval mode with gradients off (05-classifier-eval)."""
    payload = ckpt.load_checkpoint(path, KIND)
    device = device if isinstance(device, torch.device) else pick_device(device)
    try:
        model = classifier_network(payload["config"].get("model", {}))
        model.load_state_dict(payload["state"]["model"])
    except (KeyError, RuntimeError, TypeError, AttributeError, UserInputError) as error:
        raise ckpt.CheckpointError(f"checkpoint {path} does not fit the classifier it describes: "
                                   f"{str(error).strip().splitlines()[0][:160]}") from error
    model.to(device).eval().requires_grad_(False)
    return LoadedClassifier(model, payload["config"], payload["metadata"], Path(path))


# --------------------------------------------------------------------------------------------- inference
def _batched(model: ImageClassifier, images: torch.Tensor, batch_size: int, fn) -> list[torch.Tensor]:
    positive_int(batch_size, "batch size")
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


def predict_logits_and_features(model: ImageClassifier, images: torch.Tensor, batch_size: int = 500
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features in one batched pass, on the CPU (05-classifier-eval)."""
    def both(batch):
        feats = model.features(batch)
        return torch.cat([model.head(feats), feats], 1).cpu()

    out = _batched(model, images, batch_size, both)
    joined = torch.cat(out) if out else torch.empty(0, NUM_CLASSES + model.config.feature_dim)
    return joined[:, :NUM_CLASSES], joined[:, NUM_CLASSES:]


def predict_proba(model: ImageClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Softmax class probabilities (N x 10, on the CPU) of images in [-1, 1] (05-classifier-eval)."""
    logits, _ = predict_logits_and_features(model, images, batch_size)
    return logits.softmax(1)


def extract_features(model: ImageClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate-layer features (N x feature_dim, on the CPU) of images in [-1, 1] (05-classifier-eval)."""
    out = _batched(model, images, batch_size, lambda batch: model.features(batch).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.feature_dim)


def accuracy(model: ImageClassifier, split: ImageSplit, batch_size: int = 500) -> float:
    """Fraction of ``split`` the model labels correctly (05-classifier-eval)."""
    _check_split(split, "the split")
    logits, _ = predict_logits_and_features(model, split.images, batch_size)
    return float((logits.argmax(1) == split.labels.cpu()).double().mean())


def __getattr__(name: str):
    """Names of the previous release, kept for one more with a DeprecationWarning."""
    return renamed_attribute(__name__, name, {"MnistClassifier": "ImageClassifier"}, globals())
