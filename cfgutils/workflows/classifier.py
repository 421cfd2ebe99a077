"""The classifier as an instrument: load a trained one and score images with it (notebook 05-classifier-eval).

Library: :func:`load_classifier`, :func:`accuracy`, :func:`predict_proba`, :func:`extract_features`. The
networks are :mod:`cfgutils.core.classifier`; training them is :mod:`cfgutils.workflows.classifier_training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.classifier import NUM_CLASSES, ImageClassifier, classifier_network
from ..errors import UserInputError, positive_int
from ..plumbing import checkpoint as ckpt
from ..plumbing.data import ImageSplit
from ..plumbing.device import pick_device

KIND = "image-classifier"


def check_split(split: ImageSplit, what: str) -> None:
    """Refuse anything but a non-empty :class:`ImageSplit` (05-classifier-eval)."""
    if not isinstance(split, ImageSplit):
        raise UserInputError(f"{what} must be an ImageSplit (see cfgutils.plumbing.data.load_dataset), "
                             f"got {type(split).__name__}")
    if len(split) == 0:
        raise UserInputError(f"{what} is empty")


@dataclass
class LoadedClassifier:
    """A classifier ready to score images (eval mode, no gradients), its config and metadata (05-classifier-eval)."""

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
    check_split(split, "the split")
    logits, _ = predict_logits_and_features(model, split.images, batch_size)
    return float((logits.argmax(1) == split.labels.cpu()).double().mean())
