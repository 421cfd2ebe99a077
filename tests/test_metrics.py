"""Metrics on known inputs: intervals, Frechet distance, IS, k-NN precision/recall, diversity, saturation, near copies."""

import math

import pytest
import torch

from cfgutils.errors import UserInputError
from cfgutils.plumbing.data import ImageSplit
from cfgutils.core import metrics
from cfgutils.workflows import evaluation
from cfgutils.core.classifier import build_classifier


def one_hot(labels, classes=10):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), classes).double()


def cluster(n, dim, centre, seed, spread=1.0):
    generator = torch.Generator().manual_seed(seed)
    return centre + spread * torch.randn(n, dim, generator=generator, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ classification
def test_accuracy_per_class_and_confidence_on_known_predictions():
    labels = torch.arange(10).repeat(10)
    probs = one_hot(labels)
    probs[labels == 3] = one_hot([5])  # every 3 is read as a 5
    acc, low, high = metrics.accuracy_with_ci(probs, labels)
    assert acc == pytest.approx(0.9)
    assert low <= acc <= high
    per_class = metrics.per_class_accuracy(probs, labels)
    assert per_class[3] == 0 and per_class[5] == 1 and per_class.sum() == 9
    assert metrics.mean_confidence(probs) == 1.0  # one-hot: sure of something
    assert metrics.mean_intended_probability(probs, labels) == pytest.approx(0.9)
    soft = torch.full((4, 10), 0.05, dtype=torch.float64)
    soft[:, 0] = 0.55
    assert metrics.mean_confidence(soft) == pytest.approx(0.55)
    assert metrics.mean_intended_probability(soft, torch.tensor([0, 1, 1, 1])) == pytest.approx((0.55 + 3 * 0.05) / 4)


def test_per_class_accuracy_is_nan_for_absent_classes():
    per_class = metrics.per_class_accuracy(one_hot([1, 1, 2]), torch.tensor([1, 1, 2]))
    assert per_class[1] == 1 and per_class[2] == 1 and torch.isnan(per_class[0])


def test_shuffled_labels_give_chance_accuracy():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (5000,), generator=generator)
    shuffled = labels[torch.randperm(5000, generator=generator)]
    acc, low, high = metrics.accuracy_with_ci(one_hot(labels), shuffled)
    assert acc == pytest.approx(0.1, abs=0.02)
    assert low < acc < high and high - low < 0.03


@pytest.mark.parametrize("successes, trials, method, expected", [
    # Clopper-Pearson: 0/n and n/n have the closed forms 1 - (alpha/2)^(1/n) and (alpha/2)^(1/n)
    (0, 10, "exact", (0.0, 1 - 0.025 ** (1 / 10))),
    (10, 10, "exact", (0.025 ** (1 / 10), 1.0)),
    (300, 300, "exact", (0.025 ** (1 / 300), 1.0)),  # about [0.988, 1]: 300 of 300 is not certainty
    # published values: Newcombe (1998), Statistics in Medicine 17:857, table I (methods 3 and 5)
    (81, 263, "exact", (0.2527, 0.3676)),
    (0, 20, "wilson", (0.0, 0.1611)),
    (1, 29, "wilson", (0.0061, 0.1718)),
    (1, 29, "exact", (0.0009, 0.1776)),
    (81, 263, "wilson", (0.2553, 0.3662)),
    (15, 148, "wilson", (0.0624, 0.1605)),
    (15, 148, "exact", (0.0578, 0.1617)),
])
def test_proportion_interval_on_known_cases(successes, trials, method, expected):
    low, high = metrics.proportion_interval(successes, trials, method=method)
    assert (low, high) == pytest.approx(expected, abs=6e-4)
    assert high - low > 0


@pytest.mark.parametrize("successes, trials, message", [(3, 0, "trials"), (4, 3, "successes"), (-1, 3, "successes"),
                                                        (1.5, 3, "successes")])
def test_proportion_interval_rejects_bad_counts(successes, trials, message):
    with pytest.raises(UserInputError, match=message):
        metrics.proportion_interval(successes, trials)


def test_accuracy_interval_never_collapses():
    labels = torch.arange(10).repeat(30)
    acc, low, high = metrics.accuracy_with_ci(one_hot(labels), labels)  # 300 of 300 right
    assert acc == 1.0 and high == 1.0 and low == pytest.approx(0.9878, abs=1e-4)
    acc, low, high = metrics.accuracy_with_ci(one_hot((labels + 1) % 10), labels)  # 0 of 300 right
    assert acc == 0.0 and low == 0.0 and high == pytest.approx(0.0122, abs=1e-4)


def test_seed_interval_is_the_student_t_interval():
    mean, low, high = metrics.seed_interval([1.0, 2.0, 3.0])
    # t(0.975, 2 df) = 4.3027; the standard deviation is 1, so the half-width is 4.3027 / sqrt(3)
    assert mean == 2.0 and high - mean == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4) and low == 4 - high
    assert metrics.seed_interval([5.0, 5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(UserInputError, match="at least 2 seeds"):
        metrics.seed_interval([1.0])


def test_near_copies_are_flagged_and_fresh_samples_are_not():
    generator = torch.Generator().manual_seed(0)
    training = torch.rand(500, 784, generator=generator)
    held_out = torch.rand(300, 784, generator=generator)
    threshold = metrics.near_copy_threshold(metrics.nearest_distances(held_out, training)[0])
    assert threshold > 0
    copies = torch.cat([training[:20], torch.rand(80, 784, generator=generator)])
    distances, rows = metrics.nearest_distances(copies, training)
    assert torch.equal(rows[:20], torch.arange(20)) and distances[:20].max() < 1e-4  # float rounding of cdist
    assert metrics.near_copy_fraction(distances, threshold) == pytest.approx(0.2, abs=0.02)
    fresh = torch.rand(100, 784, generator=generator)
    assert metrics.near_copy_fraction(metrics.nearest_distances(fresh, training)[0], threshold) <= 0.05
    with pytest.raises(UserInputError, match="cannot compare"):
        metrics.nearest_distances(fresh, training[:, :10])


def test_inception_score_extremes():
    assert metrics.inception_score(one_hot(torch.arange(10).repeat(7))) == pytest.approx(10.0)
    assert metrics.inception_score(one_hot(torch.full((50,), 4))) == pytest.approx(1.0)
    assert metrics.inception_score(torch.full((20, 10), 0.1, dtype=torch.float64)) == pytest.approx(1.0)
    assert metrics.inception_score(one_hot(torch.tensor([0, 1] * 10))) == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ feature space
def test_frechet_distance_identical_and_shifted():
    a = cluster(500, 16, 0.0, seed=0)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shifted = metrics.frechet_distance(a, a + 5.0)  # same covariance: distance = |shift|^2 = 16 * 25
    assert shifted == pytest.approx(16 * 25.0, rel=1e-6)
    b = cluster(500, 16, 0.0, seed=1)
    assert metrics.frechet_distance(a, b) < 1.0 < shifted
    # scaled covariance: Tr(S + 4S - 2 * 2S) = Tr(S)
    mu, sigma = metrics.gaussian_stats(a)
    assert metrics.frechet_distance(a, 2 * (a - mu) + mu) == pytest.approx(float(torch.trace(sigma)), rel=1e-6)


def test_frechet_distance_matches_known_diagonal_case():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    mu1, mu2 = torch.tensor([1.0]), torch.tensor([3.0])
    s1, s2 = torch.tensor([[4.0]]), torch.tensor([[9.0]])
    assert metrics.frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(4 + 1)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite():
    a, b = cluster(20, 64, 0.0, seed=0), cluster(20, 64, 0.0, seed=1)
    value = metrics.frechet_distance(a, b)
    assert math.isfinite(value) and value > 0
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_precision_recall_identical_and_far_apart():
    a = cluster(300, 8, 0.0, seed=0)
    assert metrics.precision_recall(a, a.clone()) == (1.0, 1.0)
    assert metrics.precision_recall(a, cluster(200, 8, 100.0, seed=1)) == (0.0, 0.0)


def test_precision_recall_detect_mode_collapse():
    real = cluster(400, 4, 0.0, seed=0)
    collapsed = cluster(400, 4, 0.0, seed=1, spread=0.05)  # all near the mode: realistic but not diverse
    precision, recall = metrics.precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2


def test_knn_radii_exclude_self_and_use_blocks(monkeypatch):
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=torch.float64)
    assert metrics.knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert metrics.knn_radii(points, k=3).tolist() == [6.0, 5.0, 3.0, 6.0]
    monkeypatch.setattr(metrics, "DISTANCE_BLOCK", 3)
    assert metrics.knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    with pytest.raises(UserInputError):
        metrics.knn_radii(points, k=4)


def test_intra_class_diversity():
    same = torch.ones(6, 5)
    assert metrics.intra_class_diversity(same, torch.tensor([0, 0, 0, 1, 1, 1])) == 0.0
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 0: distance 5; class 1: identical; class 2: single, skipped
    assert metrics.intra_class_diversity(features, labels) == pytest.approx(2.5)


def test_saturation_fraction_on_hand_made_images():
    image = torch.tensor([-1.0, -0.99, -0.5, 0.0, 0.5, 0.985, 1.0, 1.7]).reshape(1, 1, 2, 4)
    # within 0.02 of -1: -1, -0.99; within 0.02 of +1: 0.985, 1.0, 1.7 (clamped to 1)
    assert metrics.saturation_fraction(image) == pytest.approx(5 / 8)
    assert metrics.saturation_fraction(image, side="high") == pytest.approx(3 / 8)
    assert metrics.saturation_fraction(image, side="low") == pytest.approx(2 / 8)
    assert metrics.saturation_fraction(image, tol=0.0) == pytest.approx(3 / 8)
    assert metrics.saturation_fraction(torch.zeros(2, 1, 28, 28)) == 0.0
    with pytest.raises(UserInputError):
        metrics.saturation_fraction(image, side="middle")


def test_bad_shapes_are_user_errors():
    with pytest.raises(UserInputError):
        metrics.frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(UserInputError):
        metrics.accuracy_with_ci(one_hot([1, 2]), torch.tensor([1]))
    with pytest.raises(UserInputError):
        metrics.precision_recall(torch.zeros(10, 3), torch.zeros(10, 4))


# ------------------------------------------------------------------------------------------ with a classifier
@pytest.fixture(scope="module")
def fake_test_split():
    """40 images of each digit (random blobs, untrained classifier): enough to exercise the wrappers."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(40)
    images = (torch.rand(400, 1, 28, 28, generator=generator) * 2 - 1) * 0.5 + labels.view(-1, 1, 1, 1) / 10
    return ImageSplit(images.clamp(-1, 1), labels, "fake test split", "test")


def test_stratified_indices_are_balanced_disjoint_and_seeded(fake_test_split):
    first = evaluation.stratified_indices(fake_test_split.labels, 10, seed=0)
    assert torch.equal(first, evaluation.stratified_indices(fake_test_split.labels, 10, seed=0))
    assert torch.bincount(fake_test_split.labels[first]).tolist() == [10] * 10
    other = evaluation.stratified_indices(fake_test_split.labels, 30, seed=1, exclude=first)
    assert not set(first.tolist()) & set(other.tolist())
    with pytest.raises(UserInputError, match="only 0 unused"):
        evaluation.stratified_indices(fake_test_split.labels, 1, seed=2, exclude=torch.cat([first, other]))


def test_evaluate_generated_and_real_floor(fake_test_split):
    model = build_classifier(seed=0)
    reference = evaluation.build_reference(model, fake_test_split, n_per_class=20, seed=0)
    assert len(reference) == 200 and reference.source == "fake test split"
    assert reference.features.shape == (200, model.config.feature_dim)
    images, labels = fake_test_split.images[reference.indices], fake_test_split.labels[reference.indices]
    same = evaluation.evaluate_generated(model, images, labels, reference)
    assert same["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    expected = {"n", "n_reference", "accuracy", "accuracy_low", "accuracy_high", "confidence", "intended_probability",
                "intended_log_probability", "inception_score", "frechet_distance", "precision", "recall", "diversity", "saturation",
                "saturation_high"} | {f"accuracy_class_{d}" for d in range(10)}
    assert set(same) == expected and all(isinstance(v, (int, float)) for v in same.values())
    floor = evaluation.real_data_floor(model, fake_test_split, reference, n_per_class=20, seed=1)
    assert floor["n"] == 200 and floor["frechet_distance"] > 0
    assert floor == evaluation.real_data_floor(model, fake_test_split, reference, n_per_class=20, seed=1)
    with pytest.raises(UserInputError, match="unused"):
        evaluation.real_data_floor(model, fake_test_split, reference, n_per_class=21)
    other = ImageSplit(fake_test_split.images, fake_test_split.labels, "another split", "test")
    with pytest.raises(UserInputError, match="reference was built from"):
        evaluation.real_data_floor(model, other, reference, n_per_class=5)
    with pytest.raises(UserInputError, match="held-out"):
        evaluation.build_reference(model, ImageSplit(images, labels, "x", "train"), n_per_class=5)


def test_floor_sets_are_disjoint_balanced_and_outside_the_reference(fake_test_split):
    model = build_classifier(seed=0)
    reference = evaluation.build_reference(model, fake_test_split, n_per_class=20, seed=0)
    sets = evaluation.floor_sets(fake_test_split, reference, n_per_class=5, n_sets=3)
    assert len(sets) == 3 and all(s.shape == (50,) for s in sets)
    drawn = torch.cat(sets)
    assert len(set(drawn.tolist())) == 150 and not set(drawn.tolist()) & set(reference.indices.tolist())
    assert all(torch.bincount(fake_test_split.labels[s], minlength=10).tolist() == [5] * 10 for s in sets)
    assert all(torch.equal(a, b) for a, b in zip(sets, evaluation.floor_sets(fake_test_split, reference, 5, 3)))
    with pytest.raises(UserInputError, match="unused"):
        evaluation.floor_sets(fake_test_split, reference, n_per_class=10, n_sets=3)


# --------------------------------------------------------------------------------------------- KID and bootstrap
def _gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def test_kid_is_the_unbiased_mmd_written_out_by_hand():
    a, b = _gaussian(7, 3, 0), _gaussian(5, 3, 1, shift=0.5)

    def k(x, y):
        return (float(x @ y) / 3 + 1) ** 3

    within_a = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    within_b = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    between = sum(k(a[i], b[j]) for i in range(7) for j in range(5)) / 35
    assert metrics.kernel_inception_distance(a, b) == pytest.approx(within_a + within_b - 2 * between, rel=1e-10)
    assert metrics.kernel_inception_distance(a, b) == pytest.approx(metrics.kernel_inception_distance(b, a))


def test_kid_is_unbiased_where_the_frechet_distance_is_not():
    # two sets of ONE distribution: KID averages to 0 at any N; the Frechet distance is positive and shrinks with N
    for n in (30, 120):
        pairs = [(_gaussian(n, 16, 2 * r), _gaussian(n, 16, 2 * r + 1)) for r in range(40)]
        kids = torch.tensor([metrics.kernel_inception_distance(a, b) for a, b in pairs])
        frechets = torch.tensor([metrics.frechet_distance(a, b) for a, b in pairs])
        assert abs(kids.mean()) < 3 * kids.std() / 40 ** 0.5  # centred on 0
        assert frechets.mean() > 10 * frechets.std() / 40 ** 0.5  # centred well above 0
        assert frechets.mean() == pytest.approx(16 * 16 / n, rel=0.5)  # about D^2 / N here: the bias, not a distance
    shifted = metrics.kernel_inception_distance(_gaussian(120, 16, 0), _gaussian(120, 16, 1, shift=1.0))
    assert shifted > 0.2


def test_set_distances_intervals_cover_the_estimate_and_pair_the_samples():
    real = _gaussian(300, 8, 0)
    distances = metrics.SetDistances(real, replicates=50, seed=0)
    near, far = _gaussian(100, 8, 1, shift=0.1), _gaussian(100, 8, 1, shift=1.0)  # same noise, paired
    for fake in (near, far):
        found = distances.measure(fake)
        assert found["n_set"] == 100
        assert found["kid"] == pytest.approx(metrics.kernel_inception_distance(real, fake))
        assert found["frechet_distance"] == pytest.approx(metrics.frechet_distance(real, fake))
        for name in ("kid", "frechet_distance"):
            assert found[f"{name}_low"] < found[name] < found[f"{name}_high"]
    assert distances.measure(far)["kid_low"] > distances.measure(near)["kid_high"]
    difference = distances.difference(far, near)
    assert difference["kid_difference"] == pytest.approx(distances.measure(far)["kid"] - distances.measure(near)["kid"])
    assert 0 < difference["kid_difference_low"] < difference["kid_difference"] < difference["kid_difference_high"]
    assert difference["frechet_distance_difference_low"] > 0
    same = distances.difference(near, near)
    assert same["kid_difference"] == same["kid_difference_low"] == same["kid_difference_high"] == 0
    assert distances.measure(near) == metrics.SetDistances(real, replicates=50, seed=0).measure(near)  # seeded
    with pytest.raises(UserInputError, match="equal shape"):
        distances.difference(near, near[:50])
    with pytest.raises(UserInputError, match="feature sizes differ"):
        distances.measure(_gaussian(10, 4, 0))
    with pytest.raises(UserInputError, match="replicates"):
        metrics.SetDistances(real, replicates=1)


def test_bootstrap_counts_sum_to_n():
    counts = metrics.bootstrap_counts(13, 40, seed=3)
    assert counts.shape == (40, 13) and (counts.sum(1) == 13).all() and counts.min() >= 0
    assert torch.equal(counts, metrics.bootstrap_counts(13, 40, seed=3))


def test_kid_and_frechet_distance_match_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Features(torch.nn.Identity):  # the features are fed as they are: both libraries see the same vectors
        num_features = 12

    real, fake = _gaussian(80, 12, 0), _gaussian(60, 12, 1, shift=0.3, scale=1.2)
    kid = KernelInceptionDistance(feature=Features(), subsets=1, subset_size=60)
    kid.update(real[:60].float(), real=True)  # one subset of the full size: the subset is the whole set
    kid.update(fake.float(), real=False)
    kid_mean, _ = kid.compute()
    assert float(kid_mean) == pytest.approx(metrics.kernel_inception_distance(real[:60].float(), fake.float()),
                                            rel=1e-4, abs=1e-6)
    fid = FrechetInceptionDistance(feature=Features())
    fid.update(real.float(), real=True)
    fid.update(fake.float(), real=False)
    assert float(fid.compute()) == pytest.approx(metrics.frechet_distance(real, fake), rel=1e-4)


def test_the_bootstrap_keeps_class_counts_and_matches_fresh_balanced_sets():
    # ten well-separated classes, drawn balanced: the resamples must keep each class's count, and the estimate's
    # spread over fresh sets is what the bootstrap has to reproduce
    centres = torch.randn(10, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4

    def draw(per_class: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(10).repeat_interleave(per_class)
        noise = torch.randn(len(labels), 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return (centres[labels] + shift + noise * (1 + shift)).relu(), labels

    counts = metrics.bootstrap_counts(30, 20, seed=1, strata=torch.arange(3).repeat_interleave(10))
    assert (counts.reshape(20, 3, 10).sum(2) == 10).all()  # every resample keeps 10 of each class
    real, real_labels = draw(50, 100)
    distances = metrics.SetDistances(real, replicates=150, real_labels=real_labels)
    for shift, low, high in ((1.0, 0.6, 1.6), (0.0, 1.0, 4.0)):  # a generator off the data; one that matches it
        fake, labels = draw(20, 0, shift)
        replicates = distances.resampled(fake, labels)["kid"]
        fresh = torch.tensor([metrics.kernel_inception_distance(draw(50, 200 + seed)[0], draw(20, seed, shift)[0])
                              for seed in range(40)])
        assert float(replicates[0]) == pytest.approx(metrics.kernel_inception_distance(real, fake))
        assert abs(replicates[1:].mean() - replicates[0]) < 0.3 * replicates[1:].std()  # centred on the estimate
        # off the data the bootstrap's spread is the sampling spread; where the sets match (a degenerate
        # U-statistic) it is wider: the interval is conservative there, never too narrow
        assert low < replicates[1:].std() / fresh.std() < high, (shift, replicates[1:].std(), fresh.std())


def test_intended_log_probability_keeps_moving_after_accuracy_saturates():
    labels = torch.tensor([0, 1])
    unsure = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    sure = torch.tensor([[0.99, 0.01], [0.01, 0.99]])
    assert metrics.accuracy_with_ci(unsure, labels)[0] == metrics.accuracy_with_ci(sure, labels)[0] == 1.0
    assert metrics.mean_intended_log_probability(unsure, labels) == pytest.approx((math.log(0.6) + math.log(0.7)) / 2)
    assert metrics.mean_intended_log_probability(unsure, labels) < metrics.mean_intended_log_probability(sure, labels) < 0
    wrong = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # one sample certain of the other class: floored, not -inf
    assert metrics.mean_intended_log_probability(wrong, labels) == pytest.approx(math.log(1e-6) / 2)
