"""The 2-D toy of notebook 09: exact denoisers against brute-force integrals, the tilted density, the distance."""

import math

import pytest
import torch

from cfgutils.core.diffusion import DiffusionConfig, GaussianDiffusion
from cfgutils.core.guidance import Guidance
from cfgutils.core.samplers import SamplerSettings, generate
from cfgutils.core.toy import (ExactDenoiser, GaussianMixture, bin_probabilities, exact_x0, grid_points,
                               log_density, tilted_log_density, total_variation)
from cfgutils.errors import UserInputError

MIXTURE = GaussianMixture(means=((-1.0, 0.0), (1.0, 0.0), (0.0, 1.6)), stds=(0.45, 0.6, 0.3), weights=(0.5, 0.3, 0.2))
DIFFUSION = GaussianDiffusion(DiffusionConfig(prediction="v"))


def brute_force_x0(x_t, alpha_bar, label=None):
    """E[x_0 | x_t (, c)] by integrating over a fine grid of x_0."""
    _, x0 = grid_points(6.0, 600)
    log_prior = log_density(MIXTURE, x0, label)
    log_likelihood = -0.5 * (x_t - math.sqrt(alpha_bar) * x0).pow(2).sum(1) / (1 - alpha_bar)
    weights = torch.softmax(log_prior + log_likelihood, dim=0)
    return (weights[:, None] * x0).sum(0)


@pytest.mark.parametrize("t", [100, 500, 900])
@pytest.mark.parametrize("label", [0, 2, None])
def test_exact_x0_equals_the_integral(t, label):
    x_t = torch.tensor([[-0.4, 0.7]], dtype=torch.float64)
    alpha_bar = DIFFUSION.alpha_bar64[torch.tensor([t])]
    labels = torch.tensor([MIXTURE.num_classes if label is None else label])
    torch.testing.assert_close(exact_x0(MIXTURE, x_t, alpha_bar, labels)[0],
                               brute_force_x0(x_t[0], float(alpha_bar), label), atol=2e-3, rtol=0)


def test_the_denoiser_returns_v_that_converts_back_to_the_exact_x0():
    denoiser = ExactDenoiser(MIXTURE, DIFFUSION)
    x_t, t, labels = torch.randn(5, 2), torch.tensor([0, 200, 500, 800, 999]), torch.tensor([0, 1, 2, 3, 0])
    _, x0 = DIFFUSION.to_eps_and_x0(denoiser(x_t, t, labels), x_t, t)
    torch.testing.assert_close(x0.double(), exact_x0(MIXTURE, x_t, DIFFUSION.alpha_bar64[t], labels),
                               atol=1e-5, rtol=1e-5)


def test_the_tilted_density_reduces_to_the_conditional_and_the_mixture():
    _, points = grid_points(3.0, 20)
    torch.testing.assert_close(tilted_log_density(MIXTURE, points, 1, 1.0), log_density(MIXTURE, points, 1))
    torch.testing.assert_close(tilted_log_density(MIXTURE, points, 1, 0.0), log_density(MIXTURE, points))
    assert torch.logsumexp(log_density(MIXTURE, points), 0).exp() * (6.0 / 20) ** 2 == pytest.approx(1.0, abs=0.02)


def test_total_variation_of_known_cases():
    edges, centres = grid_points(4.0, 8)
    target = bin_probabilities(torch.zeros(64, dtype=torch.float64))  # uniform over the box
    assert total_variation(centres, target, edges) == pytest.approx(0.0, abs=1e-12)  # one point per bin
    far = torch.full((10, 2), 9.0)
    assert total_variation(far, target, edges) == pytest.approx(1.0)  # all outside the box
    one_bin = torch.zeros(64, dtype=torch.float64)
    one_bin[0] = 1.0
    assert total_variation(centres, one_bin, edges) == pytest.approx(1 - 1 / 64)


def test_sampling_without_guidance_reproduces_the_class():
    denoiser = ExactDenoiser(MIXTURE, DIFFUSION)
    labels = torch.full((3000,), 1)
    points = generate(denoiser, DIFFUSION, labels, 1.0, SamplerSettings("ddim", 40, clip_x0=False), 0,
                      batch_size=3000, guidance=Guidance(), sample_shape=(2,))
    assert points.shape == (3000, 2)
    assert points.mean(0).tolist() == pytest.approx([1.0, 0.0], abs=0.05)
    assert points.std(0).tolist() == pytest.approx([0.6, 0.6], abs=0.05)


@pytest.mark.parametrize("call, message", [
    (lambda: GaussianMixture(((0.0, 0.0),), (1.0, 2.0), (1.0,)), "as many"),
    (lambda: GaussianMixture(((0.0, 0.0),), (-1.0,), (1.0,)), "positive"),
    (lambda: GaussianMixture(((0.0, 0.0), (1.0, 1.0)), (1.0, 1.0), (0.5, 0.6)), "summing to 1"),
    (lambda: ExactDenoiser(MIXTURE, GaussianDiffusion(DiffusionConfig(prediction="eps"))), "predicts v"),
    (lambda: ExactDenoiser(MIXTURE, DIFFUSION, blur=-0.1), "blur"),
])
def test_bad_toy_input(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def test_with_one_class_guidance_changes_nothing():
    """One class: the conditional and unconditional denoisers are the same, so every s samples p(x | c)."""
    single = GaussianMixture(means=((0.5, -0.5),), stds=(0.4,), weights=(1.0,))
    denoiser = ExactDenoiser(single, DIFFUSION)
    labels = torch.zeros(200, dtype=torch.long)
    settings = SamplerSettings("ddim", 10, clip_x0=False)
    guided, plain = (generate(denoiser, DIFFUSION, labels, s, settings, 0, batch_size=200, sample_shape=(2,))
                     for s in (5.0, 1.0))
    torch.testing.assert_close(guided, plain, atol=1e-5, rtol=0)


def test_a_blurred_denoiser_is_a_wider_mixture():
    blurred = ExactDenoiser(MIXTURE, DIFFUSION, blur=0.5)
    assert blurred.mixture.stds == pytest.approx(tuple(1.5 * s for s in MIXTURE.stds))
    x_t, t, labels = torch.randn(4, 2), torch.full((4,), 300), torch.tensor([0, 1, 2, 0])
    assert not torch.allclose(blurred(x_t, t, labels), ExactDenoiser(MIXTURE, DIFFUSION)(x_t, t, labels))
