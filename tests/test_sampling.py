"""Guided sampling: the s = 0 / s = 1 identities, determinism, reference-scheduler equality, closed forms."""

import math

import pytest
import torch
from test_model_and_diffusion import TINY, randomized
from torch import nn

from cfgutils.core.diffusion import DiffusionConfig, GaussianDiffusion
from cfgutils.core.guidance import Guidance, guided_prediction, s_from_w, w_from_s
from cfgutils.core.samplers import (
    SAMPLER_STEPS,
    SAMPLERS,
    SamplerSettings,
    chunk_generator,
    ddim_step,
    ddpm_step,
    class_labels,
    dpmpp_2m_step,
    generate,
    sampling_timesteps,
    trajectory,
)
from cfgutils.core.unet import ConditionalUNet, UNetConfig
from cfgutils.errors import UserInputError


class AlwaysBoth(Guidance):
    """Plain CFG that never takes the s = 0 / s = 1 shortcut, so the batched 2n path is what is tested."""

    def needs_both(self, scale, context):
        return True


class GaussianDenoiser(nn.Module):
    """The exact x0-predictor for data x0 ~ N(mu_y, std^2 I), returned as an eps prediction.

    Label y has mean mu_y = (y - 4.5) / 5; the null label has mean 0 (its own Gaussian).
    """

    def __init__(self, diffusion: GaussianDiffusion, std: float = 0.3):
        super().__init__()
        self.diffusion, self.std = diffusion, std
        self.config = UNetConfig()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        mean = torch.where(y == 10, torch.zeros_like(y, dtype=torch.float32), (y.float() - 4.5) / 5)[:, None, None, None]
        alpha_bar = self.diffusion.alpha_bar64.float()[t][:, None, None, None]
        a, s2 = alpha_bar.sqrt(), (1 - alpha_bar)
        x0 = mean + a * self.std ** 2 / (alpha_bar * self.std ** 2 + s2) * (x - a * mean)
        return (x - a * x0) / s2.sqrt()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return randomized(ConditionalUNet(TINY)).eval()


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(DiffusionConfig(prediction="v"))


def test_convention_helpers():
    assert w_from_s(3.0) == 2.0 and s_from_w(2.0) == 3.0 and w_from_s(0.0) == -1.0


@pytest.mark.parametrize("scale, label_for", [(0.0, "null"), (1.0, "cond")])
def test_s0_is_unconditional_and_s1_is_conditional(tiny_model, diffusion, scale, label_for):
    x_t = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 7, 9])
    t = 600
    eps_batched, x0_batched = guided_prediction(tiny_model, diffusion, x_t, t, labels, scale, AlwaysBoth(),
                                                clip_x0=False)
    eps_short, _ = guided_prediction(tiny_model, diffusion, x_t, t, labels, scale, clip_x0=False)
    direct_labels = torch.full_like(labels, 10) if label_for == "null" else labels
    t_batch = torch.full((4,), t)
    with torch.no_grad():
        eps_direct, _ = diffusion.to_eps_and_x0(tiny_model(x_t, t_batch, direct_labels), x_t, t_batch)
    torch.testing.assert_close(eps_batched, eps_direct, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_short, eps_direct, atol=1e-4, rtol=1e-4)


def test_guidance_formula_in_eps(tiny_model, diffusion):
    x_t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([2, 5])
    eps_u, _ = guided_prediction(tiny_model, diffusion, x_t, 500, labels, 0.0, clip_x0=False)
    eps_c, _ = guided_prediction(tiny_model, diffusion, x_t, 500, labels, 1.0, clip_x0=False)
    eps_s, _ = guided_prediction(tiny_model, diffusion, x_t, 500, labels, 3.5, clip_x0=False)
    torch.testing.assert_close(eps_s, eps_u + 3.5 * (eps_c - eps_u), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 20), ("ddim", 10), ("dpmpp", 8)])
def test_samplers_are_deterministic_for_a_seed(tiny_model, diffusion, sampler, steps):
    settings = SamplerSettings(sampler, steps, eta=0.5 if sampler == "ddim" else 0.0)
    labels = class_labels("all", 1)
    a = generate(tiny_model, diffusion, labels, 3.0, settings, seed=7)
    b = generate(tiny_model, diffusion, labels, 3.0, settings, seed=7)
    c = generate(tiny_model, diffusion, labels, 3.0, settings, seed=8)
    assert a.shape == (10, 1, 28, 28) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_chunks_do_not_depend_on_what_follows(tiny_model, diffusion):
    labels = class_labels("all", 2)
    settings = SamplerSettings("ddpm", 10)
    all_of_them = generate(tiny_model, diffusion, labels, 2.0, settings, seed=3, batch_size=6)
    first_chunk = generate(tiny_model, diffusion, labels[:6], 2.0, settings, seed=3, batch_size=6)
    torch.testing.assert_close(all_of_them[:6], first_chunk)
    second_only = generate(tiny_model, diffusion, labels, 2.0, settings, seed=3, batch_size=6, chunk_indices=[1])
    torch.testing.assert_close(all_of_them[6:12], second_only)


def test_trajectory_records_every_step(tiny_model, diffusion):
    record = trajectory(tiny_model, diffusion, torch.tensor([3, 4]), 2.0, SamplerSettings("dpmpp", 6), seed=0)
    assert record["x_t"].shape == (6, 2, 1, 28, 28) and record["x0_pred"].shape == (6, 2, 1, 28, 28)
    assert record["timesteps"].tolist() == sampling_timesteps(6)
    again = generate(tiny_model, diffusion, torch.tensor([3, 4]), 2.0, SamplerSettings("dpmpp", 6), seed=0)
    torch.testing.assert_close(record["final"], again)


def test_every_sampler_is_one_step_function():
    assert set(SAMPLER_STEPS) == set(SAMPLERS)


def test_first_order_dpmpp_step_is_a_deterministic_ddim_step():
    """DPM-Solver++ without history is DDIM with eta = 0 (Lu et al. 2022, sec. 4): same x_{t_prev}."""
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    generator = torch.Generator().manual_seed(3)
    x_t, x0 = torch.randn(2, 1, 28, 28, generator=generator), torch.rand(2, 1, 28, 28, generator=generator) * 2 - 1
    for t, t_prev in ((999, 899), (500, 400), (120, 20)):
        ab = float(diffusion.alpha_bar64[t])
        eps = (x_t - ab ** 0.5 * x0) / (1 - ab) ** 0.5
        x_prev, (kept_x0, h) = dpmpp_2m_step(diffusion, x_t, x0, t, t_prev, None)
        torch.testing.assert_close(x_prev, ddim_step(diffusion, x_t, eps, x0, t, t_prev, 0.0, None), atol=1e-5, rtol=1e-5)
        assert kept_x0 is x0 and h > 0
    assert dpmpp_2m_step(diffusion, x_t, x0, 20, -1, None)[0] is x0  # the last step returns the data prediction


def test_timestep_spacings():
    assert sampling_timesteps(4, 1000, "uniform") == [750, 500, 250, 0]
    assert sampling_timesteps(4, 1000, "trailing") == [999, 749, 499, 249]
    assert sampling_timesteps(1000) == list(range(999, -1, -1))


@pytest.mark.parametrize("call, message", [
    (lambda m, d: generate(m, d, class_labels(3, 2), float("nan")), "finite"),
    (lambda m, d: generate(m, d, class_labels(3, 2), float("inf")), "finite"),
    (lambda m, d: generate(m, d, class_labels(3, 2), 1.0, SamplerSettings("ddim", 0)), "positive"),
    (lambda m, d: generate(m, d, class_labels(3, 2), 1.0, SamplerSettings("ddim", 5, eta=-1)), "eta"),
    (lambda m, d: generate(m, d, class_labels(3, 2), 1.0, SamplerSettings("euler")), "unknown sampler"),
    (lambda m, d: class_labels(10, 2), "class must be"),
    (lambda m, d: class_labels("x", 2), "class must be"),
    (lambda m, d: class_labels(3, 0), "positive"),
])
def test_bad_sampling_input(tiny_model, diffusion, call, message):
    with pytest.raises(UserInputError, match=message):
        call(tiny_model, diffusion)


# -------------------------------------------------------------------------------- closed-form checks
@pytest.mark.parametrize("sampler, steps, tolerance", [("ddim", 50, 0.1), ("ddim", 250, 0.02), ("dpmpp", 20, 0.05), ("dpmpp", 50, 0.002)])
def test_deterministic_samplers_solve_the_gaussian_ode(sampler, steps, tolerance):
    """For Gaussian data the probability-flow ODE is solvable: x_t = a mu + sqrt(a^2 std^2 + sigma^2) z."""
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    model = GaussianDenoiser(diffusion)
    labels = torch.tensor([0, 9, 4, 10])
    settings = SamplerSettings(sampler, steps, clip_x0=False)
    out = generate(model, diffusion, labels, 1.0, settings, seed=0)
    x_T = torch.randn((4, 1, 28, 28), generator=chunk_generator(0, 0))
    t_start = sampling_timesteps(steps, 1000, "trailing")[0]
    ab = float(diffusion.alpha_bar64[t_start])
    mean = torch.tensor([(0 - 4.5) / 5, (9 - 4.5) / 5, (4 - 4.5) / 5, 0.0])[:, None, None, None]
    z = (x_T - math.sqrt(ab) * mean) / math.sqrt(ab * 0.3 ** 2 + 1 - ab)
    exact = mean + 0.3 * z
    assert (out - exact.clamp(-1, 1)).abs().max() < tolerance


def test_dpmpp_beats_ddim_at_equal_steps():
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    model = GaussianDenoiser(diffusion)
    labels = torch.tensor([1, 8])
    reference = generate(model, diffusion, labels, 1.0, SamplerSettings("dpmpp", 200, clip_x0=False), seed=0)
    errors = {s: (generate(model, diffusion, labels, 1.0, SamplerSettings(s, 20, clip_x0=False), seed=0)
                  - reference).abs().max() for s in ("ddim", "dpmpp")}
    assert errors["dpmpp"] < errors["ddim"] / 3
    assert chunk_generator(0, 0).initial_seed() != chunk_generator(0, 1).initial_seed()


# -------------------------------------------------------------------------------- reference schedulers
@pytest.fixture(scope="module")
def diffusers():
    """The diffusers package (in the test extra); only the tests that compare against its schedulers need it."""
    return pytest.importorskip("diffusers", reason="diffusers is in the test extra; reference checks need it")


def _betas(diffusion):
    alpha_bar = diffusion.alpha_bar64
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return (1 - alpha_bar / previous).float()


@pytest.mark.parametrize("spacing, diffusers_spacing", [("uniform", "leading"), ("trailing", "trailing")])
def test_ddpm_step_equals_diffusers(diffusers, spacing, diffusers_spacing):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, trained_betas=_betas(diffusion).numpy(),
                                        prediction_type="epsilon", clip_sample=False, variance_type="fixed_small",
                                        timestep_spacing=diffusers_spacing)
    scheduler.set_timesteps(25)
    ours = sampling_timesteps(25, 1000, spacing)
    assert scheduler.timesteps.tolist() == ours
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 28, 28, generator=generator)
    for index, t in enumerate(ours[:3] + ours[-2:]):
        eps = torch.randn(x.shape, generator=generator)
        expected = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(index)).prev_sample
        position = ours.index(t)
        t_prev = ours[position + 1] if position + 1 < len(ours) else -1
        _, x0 = diffusion.to_eps_and_x0(eps, x, torch.full((3,), t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(index))
        actual = ddpm_step(diffusion, x, x0, t, t_prev, noise)
        torch.testing.assert_close(actual, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("spacing, diffusers_spacing", [("uniform", "leading"), ("trailing", "trailing")])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_equals_diffusers(diffusers, spacing, diffusers_spacing, eta):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=_betas(diffusion).numpy(),
                                        prediction_type="epsilon", clip_sample=False, set_alpha_to_one=True,
                                        timestep_spacing=diffusers_spacing)
    scheduler.set_timesteps(20)
    ours = sampling_timesteps(20, 1000, spacing)
    assert scheduler.timesteps.tolist() == ours
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 28, 28, generator=generator)
    for position, t in enumerate(ours):
        eps = torch.randn(x.shape, generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        expected = scheduler.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        t_prev = ours[position + 1] if position + 1 < len(ours) else -1
        _, x0 = diffusion.to_eps_and_x0(eps, x, torch.full((3,), t))
        actual = ddim_step(diffusion, x, eps, x0, t, t_prev, eta, noise)
        torch.testing.assert_close(actual, expected, atol=2e-4, rtol=1e-4)
        x = expected


def test_dpmpp_trajectory_equals_diffusers(diffusers):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction="eps"))
    model = GaussianDenoiser(diffusion)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=_betas(diffusion).numpy(), prediction_type="epsilon",
        algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", final_sigmas_type="zero",
        lower_order_final=True, thresholding=False)
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == sampling_timesteps(10, 1000, "trailing")
    labels = torch.tensor([2, 6, 10])
    x = torch.randn((3, 1, 28, 28), generator=chunk_generator(0, 0))
    for t in scheduler.timesteps:
        eps = model(x, torch.full((3,), int(t)), labels)
        x = scheduler.step(eps, t, x).prev_sample
    ours = generate(model, diffusion, labels, 1.0, SamplerSettings("dpmpp", 10, clip_x0=False), seed=0)
    torch.testing.assert_close(ours, x.clamp(-1, 1), atol=1e-3, rtol=1e-3)
