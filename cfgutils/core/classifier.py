"""The classifier networks that score generated images: cfgutils' small CNN and the reference study's (05, 07).

The math only: the networks and their config. Training is :mod:`cfgutils.workflows.classifier_training`,
loading and scoring :mod:`cfgutils.workflows.classifier`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import config_from_dict, one_of, positive_int
from .reference import ReferenceClassifier

NUM_CLASSES = 10
#: the classifier networks: cfgutils' CNN (:class:`ImageClassifier`) or the reference study's (8,118 parameters)
CLASSIFIER_ARCHITECTURES = ("cnn", "reference")


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
