"""How good are generated images? Classifier-based metrics, each with a real-data reference point (05-classifier-eval).

Pure functions on tensors (unit-testable without a model):

* :func:`proportion_interval` (exact Clopper-Pearson or Wilson) and :func:`seed_interval` (Student t over
  seeds): the 95% intervals every reported number carries; :func:`paired_proportion_difference`: the
  interval of a difference of two proportions measured on the same samples;
* :func:`accuracy_with_ci` - accuracy against the *intended* labels, with an exact 95% interval;
  :func:`per_class_accuracy`; :func:`mean_confidence` (mean max-softmax) and :func:`mean_intended_probability`
  (mean probability of the intended class);
* :func:`frechet_distance` - between Gaussian fits of two feature sets (the FID formula, here on the MNIST
  classifier's penultimate features, so the numbers are not comparable to Inception FIDs);
* :func:`kernel_inception_distance` - KID, the unbiased MMD^2 with the cubic polynomial kernel (Binkowski et
  al. 2018) in the same features: unbiased at every N for independent draws (class-balanced sets of real data
  read slightly below 0, by an amount that depends on the class sizes: compare with the floor at the same N);
* :class:`SetDistances` - KID and the Fréchet distance of feature sets against one real set, each with a
  bootstrap interval over samples, and paired differences of two sets drawn from the same noise;
* :func:`inception_score` - the classifier-based analogue exp(E_x[KL(p(y|x) || p(y))]), between 1 and 10;
* :func:`precision_recall` - k-NN precision and recall (Kynkaenniemi et al. 2019, k = 3) in feature space;
* :func:`intra_class_diversity` - mean pairwise feature distance within each intended class, averaged over classes;
* :func:`saturation_fraction` - the fraction of pixels within ``tol`` of -1 or +1 after clamping to [-1, 1];
* :func:`nearest_distances`, :func:`near_copy_threshold`, :func:`near_copy_fraction` - memorisation: how close
  samples come to a training digit, against how close real held-out images come.

The classifier-based scoring that combines them lives in :mod:`cfgutils.workflows.evaluation`.
Every computation runs in batches; distances and covariances use float64.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserInputError

NUM_CLASSES = 10
#: default tolerance of :func:`saturation_fraction`: 0.02 in [-1, 1] is 2.55 of 255 grey levels
SATURATION_TOL = 0.02
#: rows per block of pairwise-distance computations (keeps memory at a few tens of MB)
DISTANCE_BLOCK = 1024


# --------------------------------------------------------------------------------------------- helpers
def as_2d(features: torch.Tensor, name: str) -> torch.Tensor:
    """``features`` as an N x D float64 CPU tensor, or a one-line error."""
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise UserInputError(f"{name} must be a 2-D tensor (N x D), got shape {tuple(features.shape)}")
    return features.detach().to("cpu", torch.float64)


def as_labels(labels: torch.Tensor, n: int, name: str = "labels") -> torch.Tensor:
    """``labels`` as N int64 on the CPU, checked against the number of samples."""
    labels = torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(-1)
    if labels.shape[0] != n:
        raise UserInputError(f"{name} has {labels.shape[0]} entries but there are {n} samples")
    return labels


def as_probs(probs: torch.Tensor) -> torch.Tensor:
    """Class probabilities as a non-empty N x C float64 tensor."""
    probs = as_2d(probs, "probabilities")
    if probs.shape[0] == 0:
        raise UserInputError("no samples to score")
    return probs


# --------------------------------------------------------------------------------------------- intervals
def proportion_interval(successes: int, trials: int, level: float = 0.95, method: str = "exact") -> tuple[float, float]:
    """Interval of a proportion ``successes / trials``: Clopper-Pearson ("exact") or "wilson" (05-classifier-eval).

    Computed by :func:`scipy.stats.binomtest`; never zero-width: 300 of 300 gives [0.988, 1.000].
    """
    from scipy.stats import binomtest

    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise UserInputError(f"trials must be a positive integer, got {trials!r}")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= trials:
        raise UserInputError(f"successes must be an integer between 0 and {trials}, got {successes!r}")
    if method not in ("exact", "wilson"):
        raise UserInputError(f"method must be exact or wilson, got {method!r}")
    if not 0 < level < 1:
        raise UserInputError(f"level must be in (0, 1), got {level!r}")
    interval = binomtest(successes, trials).proportion_ci(confidence_level=level, method=method)
    return float(interval.low), float(interval.high)


def paired_proportion_difference(correct_a, correct_b, level: float = 0.95) -> tuple[float, float, float]:
    """(p_a - p_b, low, high) for two proportions measured on the *same* samples (05-classifier-eval).

    ``correct_a[i]`` and ``correct_b[i]`` are two outcomes of sample i (two settings from the same starting
    noise and label, or two scorers of one image). Newcombe's (1998) method 10: the Wilson intervals of both
    proportions, combined through the correlation phi of the paired outcomes (its numerator corrected for
    continuity), so the interval reflects the discordant pairs only; never zero-width.
    """
    a = torch.as_tensor(correct_a).to(torch.bool).reshape(-1)
    b = torch.as_tensor(correct_b).to(torch.bool).reshape(-1)
    if a.shape != b.shape or a.shape[0] == 0:
        raise UserInputError(f"paired outcomes need two non-empty sets of equal length, got {a.shape[0]} and "
                             f"{b.shape[0]}")
    n = int(a.shape[0])
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = proportion_interval(both + only_a, n, level, "wilson")
    low_b, high_b = proportion_interval(both + only_b, n, level, "wilson")
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    numerator = both * neither - only_a * only_b
    numerator = max(numerator - n / 2, 0.0) if numerator > 0 else numerator
    phi = numerator / math.sqrt(margins) if margins > 0 else 0.0
    difference = p_a - p_b
    below = math.sqrt(max((p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2, 0.0))
    above = math.sqrt(max((high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2, 0.0))
    return difference, max(difference - below, -1.0), min(difference + above, 1.0)


def seed_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of one metric measured with several seeds (05).

    Each seed is one independent repetition of the whole measurement; needs at least two.
    """
    from scipy.stats import t

    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.shape[0] < 2:
        raise UserInputError(f"an interval over seeds needs at least 2 seeds, got {values.shape[0]}")
    if not 0 < level < 1:
        raise UserInputError(f"level must be in (0, 1), got {level!r}")
    mean = float(values.mean())
    half = float(t.ppf((1 + level) / 2, values.shape[0] - 1) * values.std() / values.shape[0] ** 0.5)
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------------------------- classification
def correct_predictions(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample: does the argmax of ``probs`` (or logits) equal the intended label? (bool) (05-classifier-eval)."""
    probs = as_probs(probs)
    return probs.argmax(1) == as_labels(labels, probs.shape[0])


def accuracy_with_ci(probs: torch.Tensor, labels: torch.Tensor, level: float = 0.95,
                     method: str = "exact") -> tuple[float, float, float]:
    """(accuracy, low, high) against the intended ``labels``, with a :func:`proportion_interval` (05-classifier-eval)."""
    correct = correct_predictions(probs, labels)
    low, high = proportion_interval(int(correct.sum()), int(correct.shape[0]), level, method)
    return float(correct.double().mean()), low, high


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Accuracy of the samples of each intended class (float64, NaN where a class has none) (05-classifier-eval)."""
    probs = as_probs(probs)
    labels = as_labels(labels, probs.shape[0])
    correct = (probs.argmax(1) == labels).double()
    totals = torch.bincount(labels, minlength=num_classes).double()[:num_classes]
    hits = torch.bincount(labels, weights=correct, minlength=num_classes)[:num_classes]
    return torch.where(totals > 0, hits / totals.clamp(min=1), torch.full_like(totals, float("nan")))


def mean_confidence(probs: torch.Tensor) -> float:
    """Mean max-softmax probability: how sure the classifier is of *some* class, right or wrong (05-classifier-eval)."""
    return float(as_probs(probs).max(1).values.mean())


def mean_intended_probability(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean probability the classifier gives the *intended* class (05-classifier-eval)."""
    probs = as_probs(probs)
    labels = as_labels(labels, probs.shape[0])
    return float(probs.gather(1, labels[:, None]).mean())


def mean_intended_log_probability(probs: torch.Tensor, labels: torch.Tensor, floor: float = 1e-6) -> float:
    """Mean log-probability of the *intended* class, each probability floored at ``floor`` (05, 06, 08).

    Accuracy stops moving once every sample is classified as intended; this keeps moving as guidance makes the
    classifier surer (0 is certainty), so fidelity curves do not saturate. The floor bounds what one sample the
    classifier is sure is another class can contribute (log 1e-6 = -13.8).
    """
    probs = as_probs(probs)
    labels = as_labels(labels, probs.shape[0])
    return float(probs.gather(1, labels[:, None]).clamp_min(floor).log().mean())


def inception_score(probs: torch.Tensor) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]), p(y) the mean prediction: 1 (all alike) to 10 (05-classifier-eval).

    10 means confident and balanced over the ten digits. Computed on all samples at once (no splits);
    ``probs`` rows must be probability vectors.
    """
    probs = as_probs(probs)
    marginal = probs.mean(0, keepdim=True)
    kl = (torch.xlogy(probs, probs) - torch.xlogy(probs, marginal.expand_as(probs))).sum(1)
    return float(torch.exp(kl.mean()))


# --------------------------------------------------------------------------------------------- feature space
def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64, unbiased) of N x D features (05-classifier-eval)."""
    features = as_2d(features, "features")
    if features.shape[0] < 2:
        raise UserInputError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    mean = features.mean(0)
    centered = features - mean
    return mean, centered.T @ centered / (features.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (or of each of a batch) via its eigendecomposition."""
    values, vectors = torch.linalg.eigh((matrix + matrix.mT) / 2)
    return (vectors * values.clamp(min=0).sqrt().unsqueeze(-2)) @ vectors.mT


def frechet_distance_from_stats(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                                sigma2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64 (05-classifier-eval).

    Tr((S1 S2)^(1/2)) is computed as Tr((A S2 A)^(1/2)) with A = S1^(1/2): the same eigenvalues, but a
    symmetric PSD matrix, so two eigendecompositions replace a general (unstable) matrix square root.
    """
    mu1, mu2 = (torch.as_tensor(m).to("cpu", torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s).to("cpu", torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise UserInputError(f"feature statistics do not match: means {tuple(mu1.shape)} and {tuple(mu2.shape)}, "
                             f"covariances {tuple(sigma1.shape)} and {tuple(sigma2.shape)}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = eigenvalues.clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt
    return float(distance.clamp(min=0))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two N x D feature sets (FID's formula) (05-classifier-eval)."""
    return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _blocked_distances(a: torch.Tensor, b: torch.Tensor, reduce) -> torch.Tensor:
    """Apply ``reduce(distances_block, row_offset)`` to blocks of rows of cdist(a, b) and concatenate."""
    return torch.cat([reduce(torch.cdist(a[start:start + DISTANCE_BLOCK], b), start)
                      for start in range(0, a.shape[0], DISTANCE_BLOCK)])


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance of each feature vector to its k-th nearest *other* vector of the same set (05-classifier-eval)."""
    features = as_2d(features, "features")
    if not isinstance(k, int) or k <= 0:
        raise UserInputError(f"k must be a positive integer, got {k!r}")
    if features.shape[0] <= k:
        raise UserInputError(f"need more than k = {k} feature vectors for k-NN radii, got {features.shape[0]}")

    def kth(distances: torch.Tensor, offset: int) -> torch.Tensor:
        rows = torch.arange(distances.shape[0])
        distances[rows, rows + offset] = float("inf")  # a point is not its own neighbour (duplicates still are)
        return distances.kthvalue(k, dim=1).values

    return _blocked_distances(features, features, kth)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point: is it inside at least one ball (centre, radius)?"""
    return _blocked_distances(points, centres, lambda d, _: (d <= radii[None, :]).any(1))


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """k-NN precision and recall (Kynkaenniemi et al. 2019) (05-classifier-eval).

    Precision: the fraction of generated samples inside the real manifold (the union of balls around each
    real sample reaching its k-th nearest real neighbour). Recall: the fraction of real samples inside the
    generated manifold, built the same way. ``real_radii`` may pass precomputed :func:`knn_radii`.
    """
    real = as_2d(real_features, "real features")
    fake = as_2d(fake_features, "generated features")
    if real.shape[1] != fake.shape[1]:
        raise UserInputError(f"feature sizes differ: real {real.shape[1]}, generated {fake.shape[1]}")
    real_radii = knn_radii(real, k) if real_radii is None else torch.as_tensor(real_radii, dtype=torch.float64)
    fake_radii = knn_radii(fake, k)
    precision = _coverage(fake, real, real_radii).double().mean()
    recall = _coverage(real, fake, fake_radii).double().mean()
    return float(precision), float(recall)


def intra_class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise feature distance within each intended class (i != j), averaged over classes (05-classifier-eval).

    Classes with fewer than two samples are skipped; 0 means every sample of a class is identical.
    """
    features = as_2d(features, "features")
    labels = as_labels(labels, features.shape[0])
    per_class = []
    for digit in torch.unique(labels).tolist():
        members = features[labels == digit]
        n = members.shape[0]
        if n < 2:
            continue
        total = _blocked_distances(members, members, lambda d, _: d.sum(1)).sum()
        per_class.append(total / (n * (n - 1)))
    if not per_class:
        raise UserInputError("intra-class diversity needs at least two samples of some class")
    return float(torch.stack(per_class).mean())


def saturation_fraction(images: torch.Tensor, tol: float = SATURATION_TOL, side: str = "both") -> float:
    """Fraction of pixels within ``tol`` of -1 or +1 after clamping to [-1, 1] (05-classifier-eval).

    ``side``: "both" (|x| >= 1 - tol), "high" (x >= 1 - tol: saturated ink) or "low" (x <= -1 + tol:
    pure background). Real MNIST is mostly background, so compare with :func:`real_data_floor`.
    """
    if side not in ("both", "high", "low"):
        raise UserInputError(f"side must be both, high or low, got {side!r}")
    if not 0 <= tol < 1:
        raise UserInputError(f"tol must be in [0, 1), got {tol!r}")
    images = torch.as_tensor(images).detach().to("cpu", torch.float32).clamp(-1, 1)
    if images.numel() == 0:
        raise UserInputError("no pixels to measure")
    high = images >= 1 - tol
    low = images <= -1 + tol
    mask = {"both": high | low, "high": high, "low": low}[side]
    return float(mask.double().mean())


# --------------------------------------------------------------------------------------------- memorisation
#: a sample is a near copy when it is closer to a training digit than this fraction of real held-out images is
NEAR_COPY_QUANTILE = 0.01


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance from each row of ``queries`` to its nearest row of ``bank``, and that row's index (05)."""
    queries = as_2d(queries, "queries")
    bank = as_2d(bank, "bank")
    if bank.shape[0] == 0 or queries.shape[1] != bank.shape[1]:
        raise UserInputError(f"cannot compare {tuple(queries.shape)} queries with a {tuple(bank.shape)} bank")
    found = _blocked_distances(queries, bank, lambda d, _: torch.stack(d.min(1), 1))
    return found[:, 0], found[:, 1].long()


def near_copy_threshold(real_distances: torch.Tensor, quantile: float = NEAR_COPY_QUANTILE) -> float:
    """The distance to the training set that only ``quantile`` of real held-out images undercut (05)."""
    real_distances = torch.as_tensor(real_distances, dtype=torch.float64).reshape(-1)
    if real_distances.shape[0] == 0:
        raise UserInputError("no real distances to take a quantile of")
    if not 0 < quantile < 1:
        raise UserInputError(f"quantile must be in (0, 1), got {quantile!r}")
    return float(torch.quantile(real_distances, quantile))


def near_copy_fraction(distances: torch.Tensor, threshold: float) -> float:
    """Fraction of samples whose distance to the nearest training digit is below ``threshold`` (05-classifier-eval)."""
    distances = torch.as_tensor(distances, dtype=torch.float64).reshape(-1)
    if distances.shape[0] == 0:
        raise UserInputError("no distances to score")
    return float((distances < threshold).double().mean())


# --------------------------------------------------------------------------------------------- set distances
#: bootstrap replicates behind every set-distance interval
BOOTSTRAP_REPLICATES = 200


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(x, y) = (x . y / D + 1)^3 between every row of ``a`` and of ``b`` (Binkowski et al. 2018) (05)."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def _mean_within(kernel: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of k(x_i, x_j) over pairs of *different* samples of the multisets ``counts`` (B x N) of one set.

    With every count 1 this is the U-statistic's mean over i != j; two copies of one sample (a bootstrap
    draw) are not a pair. With ``labels`` (a resample that keeps every class's count) the mean is taken per
    pair of classes and recombined with the set's own class-pair weights: otherwise the share of same-class
    pairs would move with the number of duplicates, and with it (features cluster by class) the estimate.
    """
    if labels is None:
        pairs = ((counts @ kernel) * counts).sum(1) - (counts.square() * kernel.diagonal()).sum(1)
        return pairs / (counts.sum(1).square() - counts.square().sum(1))
    n = labels.shape[0]
    classes = [labels == value for value in torch.unique(labels)]
    total = torch.zeros(counts.shape[0], dtype=torch.float64)
    for rows in classes:
        sums = counts[:, rows] @ kernel[rows, :]  # B x N: sum over the class's resampled rows i of k(x_i, x_j)
        size = int(rows.sum())
        for other in classes:
            block = (sums[:, other] * counts[:, other]).sum(1)
            if other is rows:
                block = block - (counts[:, rows].square() * kernel.diagonal()[rows]).sum(1)
                pairs = counts[:, rows].sum(1).square() - counts[:, rows].square().sum(1)
                weight = size * (size - 1)
            else:
                pairs = counts[:, rows].sum(1) * counts[:, other].sum(1)
                weight = size * int(other.sum())
            if weight:  # a tiny class resampled to copies of one sample has no pair: its block takes the mean
                mean = torch.where(pairs > 0, block / pairs.clamp(min=1e-12), torch.nan)
                total = total + weight / (n * (n - 1)) * torch.nan_to_num(mean, nan=float(mean.nanmean()))
    return total


def _mean_between(kernel: torch.Tensor, counts_a: torch.Tensor, counts_b: torch.Tensor) -> torch.Tensor:
    """Mean of k(a_i, b_j) over the multisets ``counts_a`` (B x Na) and ``counts_b`` (B x Nb)."""
    return ((counts_a @ kernel) * counts_b).sum(1) / (counts_a.sum(1) * counts_b.sum(1))


def kernel_inception_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """KID: the unbiased estimate of MMD^2 between two N x D feature sets, cubic polynomial kernel (05-classifier-eval).

    mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j). Its expectation is the
    population MMD^2 at every sample size for independent draws, so it is near 0 (and may be negative) for two
    sets of one distribution, whatever their N. Sets drawn balanced by class are not independent draws: two
    such sets of real data read slightly below 0, so compare with the real-data floor at the same N. Named after the Inception features of its paper; here the features are
    the classifier's, as for the Fréchet distance.
    """
    a, b = as_2d(features_a, "features"), as_2d(features_b, "features")
    _check_pair(a, b)
    ones_a, ones_b = torch.ones(1, a.shape[0], dtype=a.dtype), torch.ones(1, b.shape[0], dtype=b.dtype)
    value = (_mean_within(polynomial_kernel(a, a), ones_a) + _mean_within(polynomial_kernel(b, b), ones_b)
             - 2 * _mean_between(polynomial_kernel(a, b), ones_a, ones_b))
    return float(value[0])


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserInputError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise UserInputError(f"a set distance needs at least 2 feature vectors per set, got {a.shape[0]} and "
                             f"{b.shape[0]}")


def bootstrap_counts(n: int, replicates: int, seed: int, strata: torch.Tensor | None = None) -> torch.Tensor:
    """``replicates`` x ``n`` float64 counts: how often each of n samples is drawn in each bootstrap resample.

    With ``strata`` (one class label per sample) every class is resampled within itself, so each resample
    keeps the set's class counts: the sets here are drawn balanced by class, and a resample that let the class
    mix vary would add spread the real sampling never has (and that KID and the Fréchet distance feel strongly).
    """
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(replicates, n, dtype=torch.float64)
    groups = [torch.arange(n)] if strata is None else [
        torch.nonzero(strata == value).flatten() for value in torch.unique(torch.as_tensor(strata).reshape(-1))]
    if strata is not None and torch.as_tensor(strata).numel() != n:
        raise UserInputError(f"strata has {torch.as_tensor(strata).numel()} labels for {n} samples")
    for members in groups:
        draws = members[torch.randint(members.shape[0], (replicates, members.shape[0]), generator=generator)]
        counts.scatter_add_(1, draws, torch.ones(draws.shape, dtype=torch.float64))
    return counts


#: resamples per block when second moments are accumulated (bounds the memory to a few tens of MB)
STATS_BLOCK = 8


def _weighted_stats(features: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B x D) and unbiased covariance (B x D x D) of each resample ``counts`` (B x N) of ``features``."""
    size = counts.sum(1, keepdim=True)
    mean = counts @ features / size
    centred = features - features.mean(0)  # a one-pass covariance is exact in float64 once the data are centred
    second = torch.cat([(block[:, :, None] * centred).mT @ centred for block in counts.split(STATS_BLOCK)])
    shifted = mean - features.mean(0)
    covariance = (second - size[:, :, None] * shifted[:, :, None] * shifted[:, None, :]) / (size[:, :, None] - 1)
    return mean, covariance


def triple(values: dict, key: str) -> list[float]:
    """[value, low, high] of ``key`` from a mapping that holds ``key``, ``key_low`` and ``key_high``."""
    return [float(values[key]), float(values[f"{key}_low"]), float(values[f"{key}_high"])]


def paired_verdict(difference) -> str:
    """"lower", "higher" or "not distinguishable": the sign of a difference [value, low, high] where its interval
    excludes 0 (the series' one reading of a paired comparison)."""
    return "lower" if difference[2] < 0 else "higher" if difference[1] > 0 else "not distinguishable"


def rank_by_differences(best, value: list[float], differences: dict) -> dict:
    """A ranking read off paired differences from the best (05, 08): ``best``, ``value``, ``differences``,
    ``not_distinguishable`` (the best and every key whose difference interval contains 0) and ``winner`` (the
    best where every difference excludes 0, else None)."""
    overlapping = [key for key, difference in differences.items()
                   if paired_verdict(difference) == "not distinguishable"]
    return {"best": best, "value": value, "differences": differences, "not_distinguishable": [best, *overlapping],
            "winner": best if differences and not overlapping else None}


def centred_interval(point: float, replicates: torch.Tensor, level: float) -> tuple[float, float]:
    """The bootstrap distribution's central ``level`` range, moved so that its median sits on ``point`` (05).

    For an unbiased statistic (KID) the median of the resamples is close to the estimate, so this is close to
    the percentile interval. The Fréchet distance is biased upwards
    at small N, and a resample (with its duplicates) roughly doubles that bias, so its raw percentile
    interval would not even contain the estimate; centring keeps the spread and leaves the bias where it
    is visible: in the real-data floor measured at the same N.
    """
    q_low, median, q_high = torch.quantile(replicates, torch.tensor([(1 - level) / 2, 0.5, (1 + level) / 2],
                                                                    dtype=replicates.dtype)).tolist()
    return point + q_low - median, point + q_high - median


class SetDistances:
    """KID and Fréchet distance of generated feature sets against one real set, with bootstrap intervals (05).

    The real set's kernel, its resamples and their statistics are computed once. Resamples keep each set's
    class counts (``labels``: one class per row; the sets are drawn balanced by class). Every generated set of
    the same size and class layout is resampled with the same seeded draws, so two sets drawn from the same
    noise and labels are compared *paired* (:meth:`difference`): one resample of rows serves both.
    Each interval covers the sampling noise of both sets (generated and real), not the training of the network.
    """

    def __init__(self, real_features: torch.Tensor, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0,
                 level: float = 0.95, real_labels: torch.Tensor | None = None):
        if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 10:
            raise UserInputError(f"replicates must be an integer >= 10, got {replicates!r}")
        if not 0 < level < 1:
            raise UserInputError(f"level must be in (0, 1), got {level!r}")
        self.real = as_2d(real_features, "real features")
        if self.real.shape[0] < 2:
            raise UserInputError(f"the real set needs at least 2 feature vectors, got {self.real.shape[0]}")
        self.replicates, self.seed, self.level = replicates, seed, level
        self.real_labels = None if real_labels is None else as_labels(real_labels, self.real.shape[0], "real labels")
        self.real_kernel = polynomial_kernel(self.real, self.real)
        self.real_counts = torch.cat([torch.ones(1, self.real.shape[0], dtype=torch.float64),
                                      bootstrap_counts(self.real.shape[0], replicates, seed, self.real_labels)])
        self.real_within = _mean_within(self.real_kernel, self.real_counts, self.real_labels)
        mean, covariance = _weighted_stats(self.real, self.real_counts)
        self.real_mean = mean
        self.real_covariance = covariance
        self.real_root = _sqrt_psd(covariance)
        self._last: list = []  # (features, labels, replicates) of the sets measured last: a ranking reuses each

    def resampled(self, fake_features: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """KID and Fréchet distance of ``fake_features``: element 0 on the sets as they are, then one per
        resample (the same resamples for every set of the same size and ``labels``)."""
        for seen, seen_labels, found in self._last:
            if seen is fake_features and (seen_labels is labels or (seen_labels is not None and labels is not None
                                                                    and torch.equal(seen_labels, labels))):
                return found
        found = self._compute(fake_features, labels)
        self._last = [*self._last[-47:], (fake_features, labels, found)]
        return found

    def _compute(self, fake_features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        fake = as_2d(fake_features, "generated features")
        _check_pair(self.real, fake)
        labels = None if labels is None else as_labels(labels, fake.shape[0])
        counts = torch.cat([torch.ones(1, fake.shape[0], dtype=torch.float64),
                            bootstrap_counts(fake.shape[0], self.replicates, self.seed + 1, labels)])
        kid = (self.real_within + _mean_within(polynomial_kernel(fake, fake), counts, labels)
               - 2 * _mean_between(polynomial_kernel(self.real, fake), self.real_counts, counts))
        mean, covariance = _weighted_stats(fake, counts)
        middle = self.real_root @ covariance @ self.real_root
        trace_sqrt = torch.linalg.eigvalsh((middle + middle.mT) / 2).clamp(min=0).sqrt().sum(1)
        frechet = ((self.real_mean - mean).square().sum(1) + torch.diagonal(self.real_covariance, dim1=1, dim2=2).sum(1)
                   + torch.diagonal(covariance, dim1=1, dim2=2).sum(1) - 2 * trace_sqrt).clamp(min=0)
        return {"kid": kid, "frechet_distance": frechet}

    def measure(self, fake_features: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """kid, frechet_distance, each with ``_low``/``_high`` (:func:`centred_interval`; the distance's cut at 0),
        and n_set, the number of generated samples; ``labels`` (one class per row) keep the resamples' class counts."""
        result = {"n_set": int(torch.as_tensor(fake_features).shape[0])}
        for name, values in self.resampled(fake_features, labels).items():
            result.update(self._with_interval(name, values))
        result["frechet_distance_low"] = max(result["frechet_distance_low"], 0.0)
        return result

    def _with_interval(self, name: str, values: torch.Tensor) -> dict[str, float]:
        """``name`` (the estimate, element 0) and ``name_low``/``name_high`` (:func:`centred_interval` of the rest)."""
        point = float(values[0])
        low, high = centred_interval(point, values[1:], self.level)
        return {name: point, f"{name}_low": low, f"{name}_high": high}

    def difference(self, features_a: torch.Tensor, features_b: torch.Tensor,
                   labels: torch.Tensor | None = None) -> dict[str, float]:
        """Paired difference a - b of KID and Fréchet distance, with bootstrap intervals (05-classifier-eval).

        Row i of ``features_a`` and of ``features_b`` should come from the same starting noise and label (or at
        least the same class, ``labels[i]``), so one resample of rows serves both sets; the real set's resample
        is shared too.
        """
        shapes = [tuple(torch.as_tensor(f).shape) for f in (features_a, features_b)]
        if shapes[0] != shapes[1]:
            raise UserInputError(f"a paired difference needs sets of equal shape, got {shapes[0]} and {shapes[1]}")
        first, second = self.resampled(features_a, labels), self.resampled(features_b, labels)
        result = {}
        for name in first:
            result.update(self._with_interval(f"{name}_difference", first[name] - second[name]))
        return result
