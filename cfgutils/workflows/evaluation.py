"""Scoring digits with the classifier: every metric of :mod:`cfgutils.workflows.metrics` against real digits (05).

:func:`build_reference` (features of held-out real test digits, once), :func:`evaluate_generated`
(every metric in one flat dict) and :func:`real_data_floor` (a *different* set of held-out real digits
scored as if generated: what each metric reads for real data).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserInputError, positive_int
from ..plumbing.data import MnistSplit
from .classifier import extract_features, predict_logits_and_features
from .metrics import (NUM_CLASSES, SATURATION_TOL, as_labels, as_probs, accuracy_with_ci, frechet_distance_from_stats,
                      gaussian_stats, inception_score, intra_class_diversity, knn_radii, mean_confidence,
                      mean_intended_probability, per_class_accuracy, precision_recall, saturation_fraction)


@dataclass(frozen=True)
class RealReference:
    """Classifier features of held-out real digits, computed once, to compare samples with (05-classifier-eval)."""

    features: torch.Tensor  # N x D float32 on the CPU
    labels: torch.Tensor  # N int64
    indices: torch.Tensor  # rows of the split they came from (real_data_floor avoids them)
    mean: torch.Tensor  # D float64
    covariance: torch.Tensor  # D x D float64
    radii: torch.Tensor  # k-NN radii (float64) for precision
    k: int
    source: str  # the split's source (e.g. the official 10,000-image MNIST test split)
    split_size: int  # len(split), to recognise the split again
    n_per_class: int
    seed: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int,
                       exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``n_per_class`` random row indices of each digit (sorted), avoiding ``exclude``, seeded (05-classifier-eval)."""
    labels = torch.as_tensor(labels).to("cpu", torch.int64)
    positive_int(n_per_class, "n_per_class")
    available = torch.ones(labels.shape[0], dtype=torch.bool)
    if exclude is not None:
        available[torch.as_tensor(exclude, dtype=torch.int64)] = False
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in range(NUM_CLASSES):
        members = torch.nonzero((labels == digit) & available).flatten()
        if members.shape[0] < n_per_class:
            raise UserInputError(f"only {members.shape[0]} unused real images of digit {digit} are available, "
                                 f"{n_per_class} were asked for; use a smaller n_per_class")
        chosen.append(members[torch.randperm(members.shape[0], generator=generator)[:n_per_class]])
    return torch.sort(torch.cat(chosen)).values


def _model(classifier):
    return getattr(classifier, "model", classifier)  # a LoadedClassifier or the module itself


def build_reference(classifier, real_split: MnistSplit, n_per_class: int = 400, seed: int = 0, k: int = 3,
                    batch_size: int = 500) -> RealReference:
    """Features of ``n_per_class`` held-out real digits per class (from the test split) (05-classifier-eval)."""
    if real_split.split != "test":
        raise UserInputError(f"the reference must come from held-out digits (the test split), got the "
                             f"{real_split.split} split, which the classifier may have trained on")
    indices = stratified_indices(real_split.labels, n_per_class, seed)
    features = extract_features(_model(classifier), real_split.images[indices], batch_size)
    mean, covariance = gaussian_stats(features)
    return RealReference(features, real_split.labels[indices].clone(), indices, mean, covariance,
                         knn_radii(features, k), k, real_split.source, len(real_split), n_per_class, seed)


def score(probs: torch.Tensor, features: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
          reference: RealReference, n_boot: int = 1000, seed: int = 0,
          saturation_tol: float = SATURATION_TOL) -> dict[str, float]:
    """Every metric from precomputed probabilities and features, as one flat dict (05-classifier-eval)."""
    labels = as_labels(labels, as_probs(probs).shape[0])
    acc, low, high = accuracy_with_ci(probs, labels, n_boot, seed)
    precision, recall = precision_recall(reference.features, features, reference.k, reference.radii)
    result = {
        "n": int(labels.shape[0]),
        "accuracy": acc, "accuracy_ci_low": low, "accuracy_ci_high": high,
        "confidence": mean_confidence(probs),
        "intended_probability": mean_intended_probability(probs, labels),
        "inception_score": inception_score(probs),
        "frechet_distance": frechet_distance_from_stats(*gaussian_stats(features), reference.mean,
                                                        reference.covariance),
        "precision": precision, "recall": recall,
        "diversity": intra_class_diversity(features, labels),
        "saturation": saturation_fraction(images, saturation_tol, "both"),
        "saturation_high": saturation_fraction(images, saturation_tol, "high"),
    }
    for digit, value in enumerate(per_class_accuracy(probs, labels).tolist()):
        result[f"accuracy_digit_{digit}"] = value
    return result


def evaluate_generated(classifier, images: torch.Tensor, labels: torch.Tensor, reference: RealReference,
                       batch_size: int = 500, n_boot: int = 1000, seed: int = 0,
                       saturation_tol: float = SATURATION_TOL) -> dict[str, float]:
    """Score generated ``images`` (clamped to [-1, 1]) against intended ``labels``: one flat dict (05-classifier-eval).

    Keys: n, accuracy (+ accuracy_ci_low/high, bootstrap 95%), confidence (mean max-softmax),
    intended_probability (mean p(intended class)), inception_score, frechet_distance (vs the reference),
    precision, recall (k-NN, vs the reference), diversity (intra-class), saturation (|x| within tol of 1),
    saturation_high (x within tol of +1), accuracy_digit_0 ... accuracy_digit_9.
    Frechet distance is biased upwards for small N: compare against :func:`real_data_floor` with the same N.
    """
    images = torch.as_tensor(images).detach().to("cpu", torch.float32).clamp(-1, 1)
    logits, features = predict_logits_and_features(_model(classifier), images, batch_size)
    return score(logits.softmax(1), features, images, labels, reference, n_boot, seed, saturation_tol)


def real_data_floor(classifier, real_split: MnistSplit, reference: RealReference, n_per_class: int = 100,
                    seed: int = 1, batch_size: int = 500, n_boot: int = 1000,
                    saturation_tol: float = SATURATION_TOL) -> dict[str, float]:
    """Score held-out real digits *not* in ``reference`` as if generated: real-data values (05-classifier-eval).

    Use the same ``n_per_class`` as the generated set, since Frechet distance and recall depend on N.
    """
    if real_split.source != reference.source or len(real_split) != reference.split_size:
        raise UserInputError(f"the reference was built from {reference.source!r} ({reference.split_size} images), "
                             f"not from {real_split.source!r} ({len(real_split)} images)")
    indices = stratified_indices(real_split.labels, n_per_class, seed, exclude=reference.indices)
    return evaluate_generated(classifier, real_split.images[indices], real_split.labels[indices], reference,
                              batch_size, n_boot, seed, saturation_tol)
