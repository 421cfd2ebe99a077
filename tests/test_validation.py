"""Does the set distance measure what it claims? Corruptions of real digits, and a second feature network."""

import pytest
import torch
from scipy.stats import spearmanr
from test_evaluation import real_test_split  # noqa: F401 - fixture

from cfgutils.core.samplers import SamplerSettings
from cfgutils.errors import UserInputError
from cfgutils.plumbing import paths
from cfgutils.plumbing.checkpoint import load_model
from cfgutils.workflows import validation
from cfgutils.workflows.classifier import load_classifier
from cfgutils.workflows.evaluation import build_reference
from cfgutils.workflows.experiments import guidance_sweep


@pytest.fixture(scope="module")
def test_split(real_test_split):  # noqa: F811 - 1,000 real test digits, 100 per class
    return real_test_split


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(paths.PRETRAINED_CLASSIFIER, "cpu")


def test_corruptions_keep_the_set_size_and_do_what_they_say():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 28, 28, generator=generator) * 2 - 1
    labels = torch.arange(10).repeat(2)
    spare, spare_labels = torch.rand(20, 1, 28, 28, generator=generator) * 2 - 1, torch.arange(10).repeat(2)
    assert torch.equal(validation.blur(images, 0.0), images) and torch.equal(validation.add_noise(images, 0.0), images)
    blurred = validation.blur(images, 1.0)
    assert blurred.shape == images.shape and blurred[:, :, 8:20, 8:20].std() < images[:, :, 8:20, 8:20].std() / 2
    flat = torch.full((1, 1, 28, 28), 0.3)
    assert torch.allclose(validation.blur(flat, 1.5)[..., 10:18, 10:18], flat[..., 10:18, 10:18])  # a mean filter
    noisy = validation.add_noise(images, 0.5, seed=1)
    assert noisy.min() >= -1 and noisy.max() <= 1 and torch.equal(noisy, validation.add_noise(images, 0.5, seed=1))
    dropped = validation.drop_classes(images, labels, spare, spare_labels, 3)
    kept = labels >= 3
    assert torch.equal(dropped[kept], images[kept])
    replaced = dropped[~kept].flatten(1)
    sources = [torch.nonzero((spare.flatten(1) == row).all(1)).item() for row in replaced]
    assert all(spare_labels[i] >= 3 for i in sources) and len(set(sources)) == len(sources)  # no image twice
    with pytest.raises(UserInputError, match="spare images"):
        validation.drop_classes(images, labels, spare[:6], spare_labels[:6], 5)
    copied = validation.duplicate(images, 0.5, copies_of=2)
    assert torch.equal(copied[:10], images[:10]) and torch.equal(copied[10], images[0]) and torch.equal(
        copied[11], images[1]) and torch.equal(copied[19], images[1])
    with pytest.raises(UserInputError, match="unknown corruption"):
        validation.corrupt("rotate", 1, images, labels, spare, spare_labels)


def test_spearman_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 7, generator=generator, dtype=torch.float64), torch.rand(4, 7, generator=generator,
                                                                                  dtype=torch.float64)
    expected = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    assert validation.spearman(a, b).tolist() == pytest.approx(expected)
    assert validation.spearman(a, 3 * a + 1).tolist() == pytest.approx([1.0] * 4)


def test_the_distances_grow_with_every_corruption_of_real_digits(test_split, classifier):
    reference = build_reference(classifier.model, test_split, n_per_class=30, seed=0)
    corruptions = {"noise": (0.0, 0.2, 0.8), "blur": (0.0, 1.0, 2.0), "classes dropped": (0, 3),
                   "duplicated share": (0.0, 0.5)}
    rows = validation.corruption_study(classifier, test_split, reference, n_per_class=15, corruptions=corruptions)
    assert [(row["corruption"], row["level"]) for row in rows] == [
        (kind, float(level)) for kind, levels in corruptions.items() for level in levels]
    assert all(row["n_set"] == 150 for row in rows)
    for metric in ("kid", "frechet_distance"):
        found = validation.monotone(rows, metric)
        assert all(f["grows"] for f in found.values()), (metric, found)
        assert found["noise"]["every_step_decided"] and found["blur"]["every_step_decided"], (metric, found)
    first = rows[1]
    assert first["kid_step"] == pytest.approx(first["kid"] - rows[0]["kid"])
    falling = [{"corruption": "x", "level": 1.0, "kid_step": -1.0, "kid_step_low": -2.0},
               {"corruption": "x", "level": 2.0, "kid_step": 1.0, "kid_step_low": 0.5}]
    assert validation.monotone(falling, "kid") == {"x": {"grows": False, "falls_at": [1.0],
                                                         "every_step_decided": False}}


@pytest.mark.slow
def test_a_second_feature_network_ranks_a_sweep(tmp_path_factory, test_split, classifier):
    model = load_model(paths.PRETRAINED_MODEL, "cpu")
    result = guidance_sweep(model, classifier, [0.0, 1.0, 3.0, 21.0], n_per_class=3,
                            settings=SamplerSettings("dpmpp", 4), seeds=[0], progress=False, real_split=test_split)
    assert result.images[3.0].shape == (30, 1, 28, 28) and result.labels.shape == (30,)
    same = validation.second_opinion(result, classifier, test_split)
    assert same["spearman"][0] == pytest.approx(1.0) and not same["discordant"]  # itself: the same ranking
    assert same["weights"] == [-1.0, 0.0, 2.0, 20.0]
    assert same["first"] == pytest.approx([result.pooled[s]["kid"] for s in (0.0, 1.0, 3.0, 21.0)])
    other = load_classifier(paths.PRETRAINED_SECOND_CLASSIFIER, "cpu")
    found = validation.second_opinion(result, other, test_split, metric="frechet_distance")
    assert -1 <= found["spearman"][1] <= found["spearman"][0] <= found["spearman"][2] <= 1
    assert len(found["second"]) == 4 and all(isinstance(pair, tuple) for pair in found["discordant"])
    with pytest.raises(UserInputError, match="kid or frechet_distance"):
        validation.second_opinion(result, other, test_split, metric="accuracy")
