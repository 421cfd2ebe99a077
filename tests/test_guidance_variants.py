"""Guidance variants (notebook 06): each reduces to a known case, works with every sampler, rejects bad input."""

import json
import math

import numpy as np
import pytest
import torch
from test_model_and_diffusion import TINY, randomized
from test_sample_cli import cli, tiny_checkpoint  # noqa: F401 - fixture
from test_sampling import diffusion  # noqa: F401 - fixture
from test_train import small_split  # noqa: F401 - fixture

from cfgutils.core.guidance import Guidance, GuidanceContext
from cfgutils.core.rules import (VARIANTS_06, IntervalGuidance, ProjectedGuidance, RescaledGuidance, ThresholdGuidance,
                                 make_guidance)
from cfgutils.core.samplers import (
    SamplerSettings,
    class_labels,
    generate,
    guidance_norms,
)
from cfgutils.core.unet import ConditionalUNet
from cfgutils.errors import UserInputError

SAMPLERS = [SamplerSettings("ddpm", 6), SamplerSettings("ddim", 5, eta=0.5), SamplerSettings("dpmpp", 5)]
LABELS = class_labels("all", 1)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return randomized(ConditionalUNet(TINY)).eval()


def sample(model, diffusion, guidance, scale=4.0, settings=SAMPLERS[2], seed=0):  # noqa: F811
    return generate(model, diffusion, LABELS, scale, settings, seed, guidance=guidance)


def context(noise_std=0.8, step_index=0, num_steps=1, state=None):
    """A guidance context at the step where x_t's noise has standard deviation ``noise_std``."""
    return GuidanceContext(1 - noise_std ** 2, step_index, num_steps, {} if state is None else state)


def pair(seed=0, n=3):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=generator) * 0.6, torch.randn(n, 1, 28, 28, generator=generator) * 0.6


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
@pytest.mark.parametrize("variant", [RescaledGuidance(phi=0.0), IntervalGuidance(0.0, math.inf),
                                     ProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.0)],
                         ids=["rescale-phi0", "interval-everything", "apg-eta1-no-momentum"])
def test_variants_reduce_to_plain_cfg(tiny_model, diffusion, settings, variant):  # noqa: F811
    torch.testing.assert_close(sample(tiny_model, diffusion, variant, settings=settings),
                               sample(tiny_model, diffusion, Guidance(), settings=settings), atol=1e-5, rtol=0)


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
@pytest.mark.parametrize("name", VARIANTS_06)
def test_every_variant_works_with_every_sampler(tiny_model, diffusion, settings, name):  # noqa: F811
    first = sample(tiny_model, diffusion, make_guidance(name), settings=settings)
    again = sample(tiny_model, diffusion, make_guidance(name), settings=settings)
    assert first.shape == (10, 1, 28, 28) and torch.isfinite(first).all()
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again)  # deterministic for a seed


def test_an_empty_interval_is_conditional_sampling(tiny_model, diffusion):  # noqa: F811
    torch.testing.assert_close(sample(tiny_model, diffusion, IntervalGuidance(1e6, 2e6)),
                               sample(tiny_model, diffusion, Guidance(), scale=1.0), atol=1e-5, rtol=0)


def test_interval_guides_only_inside():
    rule = IntervalGuidance(0.5, 2.0)
    # noise std -> EDM sigma sqrt((1 - a) / a) with a = 1 - std^2: 0.3 -> 0.314, 0.6 -> 0.75, 0.9 -> 2.065
    contexts = [context(std) for std in (0.3, 0.6, 0.9)]
    assert [round(c.noise_std, 3) for c in contexts] == [0.3, 0.6, 0.9]
    assert [round(c.edm_sigma, 3) for c in contexts] == [0.314, 0.75, 2.065]
    assert [rule.effective_scale(5.0, c) for c in contexts] == [1.0, 5.0, 1.0]
    assert context(1.0).edm_sigma == math.inf


def test_rescale_matches_the_conditional_spread():
    cond, uncond = pair()
    full = RescaledGuidance(phi=1.0).combine(cond, uncond, 7.0, context())
    torch.testing.assert_close(full.flatten(1).std(dim=1), cond.flatten(1).std(dim=1))
    plain = Guidance().combine(cond, uncond, 7.0, context())
    half = RescaledGuidance(phi=0.5).combine(cond, uncond, 7.0, context())
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)


def test_threshold_leaves_in_range_images_alone_and_rescales_the_rest():
    inside = torch.linspace(-1, 1, 784).reshape(1, 1, 28, 28)
    assert torch.equal(ThresholdGuidance(0.9).finalize(inside, context()), inside)
    outside = inside * 3  # |x0| up to 3: the maximum (percentile 1.0) becomes 1, so x0 / 3 is the result
    torch.testing.assert_close(ThresholdGuidance(1.0).finalize(outside, context()), inside)
    clipped = ThresholdGuidance(0.5).finalize(outside, context())  # the median of |x| = 1.5
    q = torch.quantile(outside.abs().flatten(), 0.5)
    torch.testing.assert_close(clipped, outside.clamp(-q, q) / q)
    assert clipped.abs().max() == 1.0


def test_apg_drops_the_parallel_part_and_bounds_the_norm():
    cond, uncond = pair(1)
    update = ProjectedGuidance(eta=0.0, norm_threshold=0.0, momentum=0.0).combine(cond, uncond, 3.0, context()) - cond
    dots = (update * cond).flatten(1).sum(1)
    assert dots.abs().max() < 1e-3 * update.flatten(1).norm(dim=1).min() * cond.flatten(1).norm(dim=1).min()
    bounded = ProjectedGuidance(eta=1.0, norm_threshold=2.0, momentum=0.0).combine(cond, uncond, 3.0, context()) - cond
    torch.testing.assert_close(bounded.flatten(1).norm(dim=1), torch.full((3,), 2.0 * 2.0))  # (s - 1) * threshold


def test_apg_momentum_carries_the_previous_update():
    (c1, u1), (c2, u2) = pair(2), pair(3)
    rule, state = ProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=-0.5), {}
    rule.combine(c1, u1, 2.0, context(0.9, 0, 2, state))
    second = rule.combine(c2, u2, 2.0, context(0.5, 1, 2, state))
    torch.testing.assert_close(second, c2 + ((c2 - u2) - 0.5 * (c1 - u1)))


def test_guidance_norms_record_every_step(tiny_model, diffusion):  # noqa: F811
    plain = guidance_norms(tiny_model, diffusion, LABELS, 6.0, SamplerSettings("dpmpp", 5))
    assert all(len(v) == 5 for v in plain.values())
    assert plain["edm_sigma"] == sorted(plain["edm_sigma"], reverse=True)
    torch.testing.assert_close(torch.tensor(plain["update_norm"]), 5.0 * torch.tensor(plain["difference_norm"]))
    conditional = guidance_norms(tiny_model, diffusion, LABELS, 1.0, SamplerSettings("dpmpp", 5))
    assert conditional["update_norm"] == [0.0] * 5


@pytest.mark.parametrize("call, message", [
    (lambda: RescaledGuidance(phi=1.5), "rescale phi"),
    (lambda: RescaledGuidance(phi=math.nan), "rescale phi"),
    (lambda: IntervalGuidance(2.0, 1.0), "sigma_lo < sigma_hi"),
    (lambda: IntervalGuidance(-1.0, 1.0), "sigma_lo"),
    (lambda: ThresholdGuidance(0.0), "percentile"),
    (lambda: ThresholdGuidance(1.5), "percentile"),
    (lambda: ProjectedGuidance(eta=2.0), "apg eta"),
    (lambda: ProjectedGuidance(norm_threshold=-1.0), "norm threshold"),
    (lambda: ProjectedGuidance(momentum=math.inf), "momentum"),
    (lambda: make_guidance("magic"), "unknown guidance"),
    (lambda: make_guidance("rescale", eta=1.0), "does not take"),
])
def test_bad_variant_parameters(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def test_sample_cli_selects_a_variant(tiny_checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "apg"
    result = cli("sample", tiny_checkpoint, "3", out, "--n", "2", "--steps", "3", "-s", "6", "--guidance", "apg",
                 "--apg-norm-threshold", "8", "--apg-momentum", "-0.25")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["guidance"], meta["guidance_norm_threshold"], meta["guidance_momentum"]) == ("apg", 8.0, -0.25)
    plain = tmp_path / "plain"
    assert cli("sample", tiny_checkpoint, "3", plain, "--n", "2", "--steps", "3", "-s", "6").returncode == 0
    assert json.loads((plain / "meta.json").read_text())["guidance"] == "cfg"
    assert not np.array_equal(np.load(out / "samples.npz")["images"], np.load(plain / "samples.npz")["images"])


@pytest.mark.parametrize("args, message", [
    (["--guidance", "rescale", "--rescale-phi", "2"], "rescale phi"),
    (["--guidance", "interval", "--interval-sigma", "3", "1"], "sigma_lo < sigma_hi"),
    (["--guidance", "threshold", "--threshold-percentile", "nan"], "percentile"),
    (["--guidance", "nope"], "invalid choice"),
])
def test_sample_cli_rejects_bad_variant_flags(tiny_checkpoint, tmp_path, args, message):  # noqa: F811
    out = tmp_path / "out"
    result = cli("sample", tiny_checkpoint, "3", out, "--n", "2", "--steps", "3", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()
