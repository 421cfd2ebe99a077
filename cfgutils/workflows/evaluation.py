"""Scoring digits with the classifier: every metric of :mod:`cfgutils.core.metrics` against real images (05).

:func:`build_reference` (features of held-out real test images, once), :func:`evaluate_generated`
(every metric in one flat dict), :func:`real_data_floor` (a *different* set of held-out real images
scored as if generated: what each metric reads for real data), :func:`summarise_seeds` (one cell measured
with several seeds -> every metric with its 95% interval) and the memorisation check
(:func:`build_training_neighbours`, :func:`memorisation`, :func:`closest_pairs`: how close samples come to
the digits the models trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import UserInputError, positive_int
from ..plumbing.data import ImageSplit
from .classifier import extract_features, predict_logits_and_features
from ..core.metrics import (NEAR_COPY_QUANTILE, NUM_CLASSES, SATURATION_TOL, accuracy_with_ci, as_labels, as_probs,
                      frechet_distance_from_stats, gaussian_stats, inception_score, intra_class_diversity, knn_radii,
                      mean_confidence, mean_intended_log_probability, mean_intended_probability, near_copy_fraction,
                      near_copy_threshold, nearest_distances, per_class_accuracy, precision_recall, proportion_interval,
                      saturation_fraction, seed_interval, SetDistances)


#: the reference set takes half of each class's held-out images, and never more than this many per class
MAX_REFERENCE_PER_CLASS = 400
#: the fewest reference images per class a floor may leave (the k-NN radii and KID need a set to compare with)
MIN_REFERENCE_PER_CLASS = 10


@dataclass(frozen=True)
class HeldOutBudget:
    """How one run shares the held-out images of each class between its real-image sets (05-classifier-eval).

    ``available`` is the smallest class of the split; ``reference`` images per class form the reference set;
    the real-data floor takes ``floor`` others per class (all seeds together); each of the two corruption sets
    takes ``corruption`` others per class (``corruption_asked`` were asked for). See :func:`held_out_budget`.
    """

    source: str
    available: int
    reference: int
    floor: int
    corruption: int
    corruption_asked: int

    def __str__(self) -> str:
        parts = [f"reference set {self.reference}"]
        if self.floor:
            parts.append(f"real-data floor {self.floor}")
        if self.corruption_asked:
            short = (f" (of {self.corruption_asked} asked: the split has no more beside the reference set)"
                     if self.corruption < self.corruption_asked else "")
            parts.append(f"corruption sets {self.corruption} each{short}")
        return (f"held-out images: {self.source}; {self.available} in its smallest class; per class: "
                + ", ".join(parts))


def held_out_budget(real_split: ImageSplit, floor_per_class: int = 0, corruption_per_class: int = 0) -> HeldOutBudget:
    """Share the held-out images of each class between the reference set, the floor and the corruption sets (05).

    The rule, with ``m`` the images of the split's smallest class:

    1. the real-data floor gets the ``floor_per_class`` it asks for (samples per class x seeds), since it must
       have the samples' N;
    2. the reference set takes half of ``m``, at most :data:`MAX_REFERENCE_PER_CLASS`, or what the floor leaves
       if that is less, but never fewer than :data:`MIN_REFERENCE_PER_CLASS`;
    3. each of the corruption check's two sets takes ``corruption_per_class``, or half of what the reference
       set leaves if that is less (the sets may share images with the floor: they are separate checks).

    On the official MNIST test split (892 images in its smallest class) every default gets what it asks for; on
    the offline fallback's 100 per class the reference set is 50 and the corruption sets shrink to fit.
    """
    for value, name in ((floor_per_class, "floor_per_class"), (corruption_per_class, "corruption_per_class")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserInputError(f"{name} must be a whole number >= 0, got {value!r}")
    available = int(torch.bincount(real_split.labels, minlength=NUM_CLASSES)[:NUM_CLASSES].min())
    reference = min(MAX_REFERENCE_PER_CLASS, available // 2, available - floor_per_class)
    if reference < MIN_REFERENCE_PER_CLASS:
        raise UserInputError(
            f"the real-data floor asks for {floor_per_class} held-out images per class (samples per class x seeds), "
            f"but {real_split.source} has {available} in its smallest class and the reference set needs "
            f"{MIN_REFERENCE_PER_CLASS}: use at most {max(available - MIN_REFERENCE_PER_CLASS, 0)} samples per "
            "class x seeds")
    corruption = min(corruption_per_class, (available - reference) // 2)
    return HeldOutBudget(real_split.source, available, reference, floor_per_class, corruption, corruption_per_class)


@dataclass(frozen=True)
class RealReference:
    """Classifier features of held-out real images, computed once, to compare samples with (05-classifier-eval)."""

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
    budget: HeldOutBudget | None = None  # how the split's held-out images were shared (held_out_budget)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @cached_property
    def distances(self) -> SetDistances:
        """KID and Fréchet distance against these features with bootstrap intervals (built on first use)."""
        return SetDistances(self.features, real_labels=self.labels)


def stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int,
                       exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``n_per_class`` random row indices of each class (sorted), avoiding ``exclude``, seeded (05-classifier-eval)."""
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


def build_reference(classifier, real_split: ImageSplit, n_per_class: int = 400, seed: int = 0, k: int = 3,
                    batch_size: int = 500, budget: HeldOutBudget | None = None) -> RealReference:
    """Features of ``n_per_class`` held-out real images per class (test split; validation for tuning) (05).

    ``budget`` (from :func:`held_out_budget`), when given, sets ``n_per_class`` and is kept with the reference."""
    n_per_class = budget.reference if budget is not None else n_per_class
    if real_split.split not in ("test", "validation"):
        raise UserInputError(f"the reference must come from held-out images (the test or validation split), got "
                             f"the {real_split.split} split, which the classifier may have trained on")
    indices = stratified_indices(real_split.labels, n_per_class, seed)
    features = extract_features(_model(classifier), real_split.images[indices], batch_size)
    mean, covariance = gaussian_stats(features)
    return RealReference(features, real_split.labels[indices].clone(), indices, mean, covariance,
                         knn_radii(features, k), k, real_split.source, len(real_split), n_per_class, seed, budget)


@dataclass(frozen=True)
class TrainingNeighbours:
    """The digits the models trained on, and the near-copy thresholds set by held-out real images (05)."""

    pixels: torch.Tensor  # N x 784 float32, images in [-1, 1]
    features: torch.Tensor  # N x D float32 classifier features
    threshold_pixels: float  # only NEAR_COPY_QUANTILE of held-out real images are closer than this to a training digit
    threshold_features: float
    source: str  # the training split's source
    quantile: float

    def images(self, rows: torch.Tensor) -> torch.Tensor:
        """Training digits ``rows`` as N x 1 x 28 x 28 images."""
        return self.pixels[rows].reshape(-1, 1, 28, 28)


def build_training_neighbours(classifier, train_split: ImageSplit, held_out_images: torch.Tensor,
                              quantile: float = NEAR_COPY_QUANTILE, batch_size: int = 500) -> TrainingNeighbours:
    """Index the training images and set the near-copy thresholds from ``held_out_images`` (real, unseen) (05)."""
    if train_split.split != "train":
        raise UserInputError(f"near copies are measured against the training split, got the {train_split.split} split")
    pixels = train_split.images.reshape(len(train_split), -1).float()
    features = extract_features(_model(classifier), train_split.images, batch_size)
    held_out = torch.as_tensor(held_out_images).float()
    held_out_features = extract_features(_model(classifier), held_out, batch_size)
    real_pixels, _ = nearest_distances(held_out.reshape(held_out.shape[0], -1), pixels)
    real_features, _ = nearest_distances(held_out_features, features)
    return TrainingNeighbours(pixels, features, near_copy_threshold(real_pixels, quantile),
                              near_copy_threshold(real_features, quantile), train_split.source, quantile)


def memorisation(images: torch.Tensor, features: torch.Tensor, neighbours: TrainingNeighbours) -> dict[str, float]:
    """Distance to the nearest training digit (pixels, features) and the fraction of near copies (05-classifier-eval)."""
    pixel_distances, _ = nearest_distances(torch.as_tensor(images).reshape(images.shape[0], -1), neighbours.pixels)
    feature_distances, _ = nearest_distances(features, neighbours.features)
    return {"nearest_training_pixels": float(pixel_distances.mean()),
            "nearest_training_features": float(feature_distances.mean()),
            "near_copy_pixels": near_copy_fraction(pixel_distances, neighbours.threshold_pixels),
            "near_copy_features": near_copy_fraction(feature_distances, neighbours.threshold_features)}


def closest_pairs(images: torch.Tensor, neighbours: TrainingNeighbours, k: int = 8) -> dict[str, torch.Tensor]:
    """The ``k`` samples closest (in pixels) to a training digit, with that digit and the distance (05)."""
    images = torch.as_tensor(images).float()
    distances, rows = nearest_distances(images.reshape(images.shape[0], -1), neighbours.pixels)
    order = torch.argsort(distances)[:k]
    return {"samples": images[order].cpu(), "training": neighbours.images(rows[order]).cpu(),
            "distances": distances[order].float(), "training_rows": rows[order]}


def score(probs: torch.Tensor, features: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
          reference: RealReference, saturation_tol: float = SATURATION_TOL,
          neighbours: TrainingNeighbours | None = None) -> dict[str, float]:
    """Every metric from precomputed probabilities and features, as one flat dict (05-classifier-eval)."""
    labels = as_labels(labels, as_probs(probs).shape[0])
    accuracy, low, high = accuracy_with_ci(probs, labels)
    precision, recall = precision_recall(reference.features, features, reference.k, reference.radii)
    result = {
        "n": int(labels.shape[0]), "n_reference": len(reference),
        "accuracy": accuracy, "accuracy_low": low, "accuracy_high": high,
        "confidence": mean_confidence(probs),
        "intended_probability": mean_intended_probability(probs, labels),
        "intended_log_probability": mean_intended_log_probability(probs, labels),
        "inception_score": inception_score(probs),
        "frechet_distance": frechet_distance_from_stats(*gaussian_stats(features), reference.mean,
                                                        reference.covariance),
        "precision": precision, "recall": recall,
        "diversity": intra_class_diversity(features, labels),
        "saturation": saturation_fraction(images, saturation_tol, "both"),
        "saturation_high": saturation_fraction(images, saturation_tol, "high"),
    }
    if neighbours is not None:
        result.update(memorisation(images, features, neighbours))
    for digit, value in enumerate(per_class_accuracy(probs, labels).tolist()):
        result[f"accuracy_class_{digit}"] = value
    return result


def classify(classifier, images: torch.Tensor, batch_size: int = 500,
             clamp: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, features, the images as scored): ``images`` clamped to [-1, 1] unless ``clamp`` is off (05)."""
    images = torch.as_tensor(images).detach().to("cpu", torch.float32)
    images = images.clamp(-1, 1) if clamp else images
    logits, features = predict_logits_and_features(_model(classifier), images, batch_size)
    return logits.softmax(1), features, images


def evaluate_generated(classifier, images: torch.Tensor, labels: torch.Tensor, reference: RealReference,
                       batch_size: int = 500, saturation_tol: float = SATURATION_TOL,
                       neighbours: TrainingNeighbours | None = None, clamp: bool = True) -> dict[str, float]:
    """Score generated ``images`` (clamped to [-1, 1] unless ``clamp`` is off: the reference study scored raw
    samples) against intended ``labels``: one flat dict (05-classifier-eval).

    Keys: n, n_reference, accuracy (+ accuracy_low/high, exact 95% interval), confidence (mean max-softmax),
    intended_probability (mean p(intended class)), intended_log_probability (mean log p, each p floored at 1e-6),
    inception_score, frechet_distance (vs the reference),
    precision, recall (k-NN, vs the reference), diversity (intra-class), saturation (|x| within tol of 1),
    saturation_high (x within tol of +1), accuracy_class_0 ... accuracy_class_9; with ``neighbours`` also
    nearest_training_pixels/features (mean distance to the nearest training digit) and near_copy_pixels/features.
    Frechet distance is biased upwards for small N: compare against :func:`real_data_floor` with the same N.
    """
    probs, features, images = classify(classifier, images, batch_size, clamp)
    return score(probs, features, images, labels, reference, saturation_tol, neighbours)


def _check_same_split(real_split: ImageSplit, reference: RealReference) -> None:
    if real_split.source != reference.source or len(real_split) != reference.split_size:
        raise UserInputError(f"the reference was built from {reference.source!r} ({reference.split_size} images), "
                             f"not from {real_split.source!r} ({len(real_split)} images)")


def real_data_floor(classifier, real_split: ImageSplit, reference: RealReference, n_per_class: int = 100,
                    seed: int = 1, batch_size: int = 500, saturation_tol: float = SATURATION_TOL,
                    neighbours: TrainingNeighbours | None = None) -> dict[str, float]:
    """Score held-out real images *not* in ``reference`` as if generated: real-data values (05-classifier-eval).

    Use the same ``n_per_class`` as the generated set, since Frechet distance and recall depend on N.
    """
    _check_same_split(real_split, reference)
    indices = stratified_indices(real_split.labels, n_per_class, seed, exclude=reference.indices)
    return evaluate_generated(classifier, real_split.images[indices], real_split.labels[indices], reference,
                              batch_size, saturation_tol, neighbours)


def floor_sets(real_split: ImageSplit, reference: RealReference, n_per_class: int, n_sets: int,
               seed: int = 1) -> list[torch.Tensor]:
    """``n_sets`` disjoint draws of ``n_per_class`` held-out real images per class, none in ``reference`` (05).

    One real-data set per sampling seed, disjoint so that pooled they are ``n_sets * n_per_class`` distinct
    classes per class: the real-data floor at the same N as the pooled generated samples. Each set lists its
    digits grouped by class (class 0 first), the layout of the samples of one seed.
    """
    _check_same_split(real_split, reference)
    positive_int(n_sets, "n_sets")
    positive_int(n_per_class, "n_per_class")
    unused = torch.ones(len(real_split), dtype=torch.bool)
    unused[reference.indices] = False
    left = torch.bincount(real_split.labels[unused], minlength=NUM_CLASSES)[:NUM_CLASSES]
    if int(left.min()) < n_per_class * n_sets:
        raise UserInputError(f"the real-data floor needs {n_per_class} per class x {n_sets} seeds = "
                             f"{n_per_class * n_sets} unused held-out images per class; class {int(left.argmin())} "
                             f"has {int(left.min())} beside the reference set: use fewer samples per class or seeds")
    pooled = stratified_indices(real_split.labels, n_per_class * n_sets, seed, exclude=reference.indices)
    generator = torch.Generator().manual_seed(seed)
    per_class = []
    for digit in range(NUM_CLASSES):  # shuffled within the class: the split's order is not random (MNIST's is not)
        members = pooled[real_split.labels[pooled] == digit]
        per_class.append(members[torch.randperm(members.shape[0], generator=generator)].reshape(n_sets, n_per_class))
    return [torch.cat([rows[k] for rows in per_class]) for k in range(n_sets)]  # grouped by class, as samples are


# --------------------------------------------------------------------------------------------- over seeds
#: proportions of samples (metric -> its number of trials): pooled over seeds, exact (Clopper-Pearson) interval
COUNTED = {"accuracy": "n", "precision": "n", "near_copy_pixels": "n", "near_copy_features": "n"}
#: proportions measured on a whole set (recall covers reference digits): seed interval, widened to the exact one
SET_RATES = {"recall": "n_reference"}
#: every other metric with an interval: the mean over seeds with a Student-t 95% interval
SET_STATISTICS = ("frechet_distance", "diversity", "saturation", "saturation_high", "inception_score", "confidence",
                  "intended_probability", "intended_log_probability", "nearest_training_pixels",
                  "nearest_training_features", "x0_outside")
#: the set statistics that are <= 0 (their interval is cut at 0 from above); every other one is >= 0
NON_POSITIVE = ("intended_log_probability",)


def summarise_seeds(rows: list[dict]) -> dict:
    """One cell measured with several seeds -> each metric with a 95% interval (``<metric>_low/high``) (05).

    Proportions of samples (accuracy, precision, near copies) pool the seeds and take the exact interval;
    set statistics (Frechet distance, recall, diversity, ...) take the Student-t interval over seeds, which
    needs two or more seeds (with one, their interval is NaN: no interval), cut at 0 (and at 1 for recall,
    whose interval also always contains the exact interval of its pooled count). Other keys are averaged.
    """
    if not rows:
        raise UserInputError("no rows to summarise")
    summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]
               if isinstance(rows[0][key], (int, float)) and not isinstance(rows[0][key], bool)
               and all(row.get(key) is not None for row in rows)}
    summary["seeds"] = len(rows)
    for metric, trials_key in COUNTED.items():
        if metric in summary:
            trials = int(sum(row[trials_key] for row in rows))
            successes = int(round(sum(row[metric] * row[trials_key] for row in rows)))
            summary[metric] = successes / trials
            summary[f"{metric}_low"], summary[f"{metric}_high"] = proportion_interval(successes, trials)
    for metric in (*SET_RATES, *SET_STATISTICS):
        if metric not in summary:
            continue
        values = [row[metric] for row in rows]
        low, high = seed_interval(values)[1:] if len(values) > 1 else (float("nan"), float("nan"))
        if metric in SET_RATES and len(values) > 1:
            trials = int(sum(row[SET_RATES[metric]] for row in rows))
            hits = int(round(sum(v * row[SET_RATES[metric]] for v, row in zip(values, rows))))
            exact_low, exact_high = proportion_interval(hits, trials)
            low, high = min(low, exact_low), min(max(high, exact_high), 1.0)
        if metric in NON_POSITIVE:
            summary[f"{metric}_low"], summary[f"{metric}_high"] = low, min(high, 0.0)
        else:
            summary[f"{metric}_low"], summary[f"{metric}_high"] = max(low, 0.0), high
    summary.pop("seed", None)
    return summary
