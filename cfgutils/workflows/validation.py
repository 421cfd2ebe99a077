"""Does the set distance measure what it claims? Two checks of the instrument itself (05-classifier-eval).

1. **Controlled corruptions.** Real held-out images, made worse step by step in four ways (Gaussian noise of
   growing sigma, Gaussian blur, whole classes replaced by others, a growing share of the set replaced by copies
   of a few images): KID and the Fréchet distance should grow at every step. :func:`corruption_study` measures
   each level against the real reference set, with paired differences between consecutive levels (they share
   their base images), and :func:`monotone` says where the growth holds and where not.
2. **A second feature network.** :func:`second_opinion` measures the same generated samples in the features of
   an independently trained classifier and asks whether it ranks the guidance weights the same way: Spearman's
   rank correlation of the per-weight distances, with a bootstrap interval (the same resamples of samples in both
   feature spaces).

Every corrupted set has the same size as the uncorrupted one, so the Fréchet distance's small-sample bias
stays fixed along a corruption and only the corruption moves it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.data import ImageSplit
from .classifier import LoadedClassifier, extract_features, load_classifier
from .evaluation import RealReference, _model, floor_sets
from ..core.metrics import SetDistances, centred_interval

#: the corruptions and their levels: noise and blur sigma (in [-1, 1] pixel units and pixels), the number of
#: classes replaced by others, and the share of the set replaced by copies of a few images
CORRUPTIONS = {
    "noise": (0.0, 0.1, 0.2, 0.4, 0.8),
    "blur": (0.0, 0.5, 1.0, 1.5, 2.0),
    "classes dropped": (0, 1, 3, 5),
    "duplicated share": (0.0, 0.1, 0.25, 0.5),
}
#: how many distinct images the duplicated share is made of
DUPLICATED_IMAGES = 5


# --------------------------------------------------------------------------------------------- corruptions
def add_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """``images`` plus N(0, sigma^2) noise on every pixel, clamped to [-1, 1]."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + sigma * noise).clamp(-1, 1)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of standard deviation ``sigma`` pixels (separable, kernel radius ceil(3 sigma)),
    the border padded with background (-1); sigma 0 leaves the images as they are."""
    if sigma == 0:
        return images.clone()
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius,) * 4, value=-1.0)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))


def drop_classes(images: torch.Tensor, labels: torch.Tensor, spare_images: torch.Tensor,
                 spare_labels: torch.Tensor, dropped: int) -> torch.Tensor:
    """Replace the images of classes 0 ... ``dropped`` - 1 by unused (``spare``) images of the other classes,
    as evenly as the spare set allows; the set keeps its size, and no image appears twice."""
    replace = torch.nonzero(labels < dropped).flatten()
    donors = torch.nonzero(spare_labels >= dropped).flatten()
    kept = int(spare_labels.max()) + 1 - dropped
    usable = min(int((spare_labels == c).sum()) for c in range(dropped, dropped + kept)) * kept if kept > 0 else 0
    if dropped and usable < replace.shape[0]:
        raise UserInputError(f"dropping {dropped} classes needs {replace.shape[0]} spare images of the other "
                             f"classes taken evenly, only {usable} are there")
    by_class = [donors[spare_labels[donors] == c] for c in range(dropped, int(spare_labels.max()) + 1)]
    size = min(len(members) for members in by_class)
    interleaved = torch.stack([members[:size] for members in by_class], 1).flatten()  # one of each class in turn
    out = images.clone()
    out[replace] = spare_images[interleaved[:replace.shape[0]]]
    return out


def duplicate(images: torch.Tensor, share: float, copies_of: int = DUPLICATED_IMAGES) -> torch.Tensor:
    """Replace the last ``share`` of the set by copies of its first ``copies_of`` images (a set with the
    same size and less variety)."""
    out = images.clone()
    count = int(round(share * images.shape[0]))
    if count:
        out[images.shape[0] - count:] = images[torch.arange(count) % copies_of]
    return out


def corrupt(kind: str, level, images: torch.Tensor, labels: torch.Tensor, spare_images: torch.Tensor,
            spare_labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One corruption of :data:`CORRUPTIONS` at ``level``."""
    if kind == "noise":
        return add_noise(images, level, seed)
    if kind == "blur":
        return blur(images, level)
    if kind == "classes dropped":
        return drop_classes(images, labels, spare_images, spare_labels, int(level))
    if kind == "duplicated share":
        return duplicate(images, level)
    raise UserInputError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")


# --------------------------------------------------------------------------------------------- check 1
def corruption_study(classifier, real_split: ImageSplit, reference: RealReference, n_per_class: int = 50,
                     corruptions: dict | None = None, seed: int = 1) -> list[dict]:
    """KID and Fréchet distance of real held-out images at every corruption level, against ``reference`` (05).

    The base set is ``n_per_class`` unused test images of every class (none in the reference set); the
    classes-dropped corruption fills in from a second, disjoint set of as many. Each row: corruption, level,
    n, kid, frechet_distance (with ``_low``/``_high``) and, from the second level on, the paired difference
    from the previous level (``kid_step``, ``frechet_distance_step``, each with ``_low``/``_high``).
    """
    corruptions = CORRUPTIONS if corruptions is None else corruptions
    base, spare = floor_sets(real_split, reference, n_per_class, 2, seed)
    images, labels = real_split.images[base], real_split.labels[base]
    spare_images, spare_labels = real_split.images[spare], real_split.labels[spare]
    distances = reference.distances
    rows = []
    for kind, levels in corruptions.items():
        previous = None
        for level in levels:
            corrupted = corrupt(kind, level, images, labels, spare_images, spare_labels, seed)
            features = extract_features(_model(classifier), corrupted)
            row = {"corruption": kind, "level": float(level), **distances.measure(features, labels)}
            if previous is not None:  # the resamples keep the base set's class layout: positions stay paired
                step = distances.difference(features, previous, labels)
                for metric in ("kid", "frechet_distance"):
                    for end in ("", "_low", "_high"):
                        row[f"{metric}_step{end}"] = step[f"{metric}_difference{end}"]
            rows.append(row)
            previous = features
    return rows


def monotone(rows: list[dict], metric: str) -> dict[str, dict]:
    """Per corruption: does ``metric`` grow at every level (``grows``), does every step's paired interval
    exclude 0 (``every_step_decided``), and the levels where it does not grow (``falls_at``)."""
    found = {}
    for kind in dict.fromkeys(row["corruption"] for row in rows):
        steps = [row for row in rows if row["corruption"] == kind and f"{metric}_step" in row]
        falls = [row["level"] for row in steps if row[f"{metric}_step"] <= 0]
        found[kind] = {"grows": not falls, "falls_at": falls,
                       "every_step_decided": all(row[f"{metric}_step_low"] > 0 for row in steps)}
    return found


# --------------------------------------------------------------------------------------------- check 2
def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (0 ... S-1, ties broken by order) of each row of a B x S matrix."""
    return values.argsort(dim=1).argsort(dim=1).double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between matching rows of two B x S matrices (one value per row)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.square().sum(1) * rb.square().sum(1)).sqrt()


def second_classifier(dataset: str, device=None) -> LoadedClassifier:
    """The shipped second classifier of ``dataset`` (the default recipe, another training seed): the feature
    network :func:`second_opinion` re-ranks a sweep with."""
    return load_classifier(paths.for_dataset(paths.PRETRAINED_SECOND_CLASSIFIER, dataset), device)


def second_opinion(result, other_classifier, real_split: ImageSplit, metric: str = "kid",
                   level: float = 0.95) -> dict:
    """Do the features of ``other_classifier`` rank the weights of a guidance sweep as the sweep's did? (05)

    Measures every scale's pooled samples (``result.images``) and the same real reference digits in the
    other network's features, with the same bootstrap resamples as the sweep's distances, and returns
    ``spearman`` ([rho, low, high]: the rank correlation across scales, and its interval over the resamples),
    ``weights``, ``first`` and ``second`` (each network's ``metric`` per weight) and ``discordant`` (pairs of
    weights the two order differently).
    """
    from ..core.guidance import w_from_s

    if metric not in ("kid", "frechet_distance"):
        raise UserInputError(f"metric must be kid or frechet_distance, got {metric!r}")
    if not result.images or result.reference is None:
        raise UserInputError("this result holds no pooled images to measure again (sample it with guidance_sweep)")
    reference = result.reference
    if real_split.source != reference.source or len(real_split) != reference.split_size:
        raise UserInputError(f"the sweep's reference came from {reference.source!r}, not {real_split.source!r}")
    scales = sorted(result.images)
    if len(scales) < 3:
        raise UserInputError(f"a rank correlation needs at least 3 scales, got {len(scales)}")
    own = reference.distances
    other_reference = extract_features(_model(other_classifier), real_split.images[reference.indices])
    other = SetDistances(other_reference, own.replicates, own.seed, own.level, real_labels=reference.labels)
    first = torch.stack([own.resampled(result.features[s], result.labels)[metric] for s in scales], 1)
    second = torch.stack([other.resampled(extract_features(_model(other_classifier), result.images[s]),
                                          result.labels)[metric] for s in scales], 1)
    rho = spearman(first, second)
    low, high = centred_interval(float(rho[0]), rho[1:], level)
    weights = [w_from_s(s) for s in scales]
    discordant = [(weights[i], weights[j]) for i in range(len(scales)) for j in range(i + 1, len(scales))
                  if (first[0, i] - first[0, j]) * (second[0, i] - second[0, j]) < 0]
    return {"metric": metric, "spearman": [float(rho[0]), max(low, -1.0), min(high, 1.0)], "weights": weights,
            "first": first[0].tolist(), "second": second[0].tolist(), "discordant": discordant}
