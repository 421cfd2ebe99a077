"""Notebook 08's guidance rules: each reduces to a known case, works with every sampler, matches diffusers'
guiders where they compute the same thing, and the CLI selects them or refuses bad flags in one line."""

import json
import math

import numpy as np
import pytest
import torch
from test_guidance_variants import LABELS, SAMPLERS, context, pair, sample, tiny_model  # noqa: F401 - fixture
from test_model_and_diffusion import TINY, randomized
from test_sample_cli import cli, tiny_checkpoint  # noqa: F401 - fixture
from test_sampling import diffusion  # noqa: F401 - fixture
from test_train import small_split  # noqa: F401 - fixture

from cfgutils.core.diffusion import DiffusionConfig, GaussianDiffusion
from cfgutils.core.guidance import Guidance, GuidanceContext, OvershootMeter, guided_prediction, predict_x0
from cfgutils.core.rules import (GUIDANCES, SCHEDULE_SHAPES, VARIANTS_06, AutoGuidance, CFGPlusPlus,
                                 IndependentConditionGuidance, ScheduledGuidance, ZeroStarGuidance, cfgpp_scale_factors,
                                 make_guidance, scheduled_weight, zero_star_alpha)
from cfgutils.core.samplers import SamplerSettings, chunk_generator, ddim_step, sampling_timesteps
from cfgutils.core.unet import ConditionalUNet, UNetConfig
from cfgutils.errors import UserInputError
from cfgutils.plumbing.checkpoint import check_guide_fits

NEWER = [name for name in GUIDANCES if name not in VARIANTS_06]


@pytest.fixture(scope="module")
def weaker_model():
    """A different tiny network to guide with (the weights of the tiny model, shrunk)."""
    model = randomized(ConditionalUNet(TINY)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.9)
    return model


class LabelBlind(torch.nn.Module):
    """A network whose prediction ignores the label (every label gives the prediction for 0)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, x, t, y):
        return self.inner(x, t, torch.zeros_like(y))


def newer_rule(name, guide, diffusion):  # noqa: F811
    return make_guidance(name, guide_model=guide, guide_diffusion=diffusion) if name == "autoguidance" \
        else make_guidance(name)


def test_the_registry_lists_every_newer_rule():
    assert NEWER == ["autoguidance", "cfgpp", "icg", "schedule", "zerostar"]


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
@pytest.mark.parametrize("name", NEWER)
def test_every_newer_rule_works_with_every_sampler(tiny_model, weaker_model, diffusion, settings, name):  # noqa: F811
    scale = 0.7 if name == "cfgpp" else 4.0
    first = sample(tiny_model, diffusion, newer_rule(name, weaker_model, diffusion), scale, settings)
    again = sample(tiny_model, diffusion, newer_rule(name, weaker_model, diffusion), scale, settings)
    plain = sample(tiny_model, diffusion, Guidance(), scale, settings)
    assert first.shape == (10, 1, 28, 28) and torch.isfinite(first).all()
    assert torch.equal(first, again)  # deterministic for a seed
    assert not torch.allclose(first, plain, atol=1e-3)  # and not plain CFG


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
def test_autoguidance_by_the_model_itself_is_conditional_sampling(tiny_model, diffusion, settings):  # noqa: F811
    itself = AutoGuidance(tiny_model, diffusion)
    torch.testing.assert_close(sample(tiny_model, diffusion, itself, 6.0, settings),
                               sample(tiny_model, diffusion, Guidance(), 1.0, settings), atol=1e-5, rtol=0)


def test_autoguidance_mixes_the_guides_conditional_prediction(tiny_model, weaker_model, diffusion):  # noqa: F811
    x_t, labels, t = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), 600
    t_batch = torch.full((4,), t)
    _, x0 = guided_prediction(tiny_model, diffusion, x_t, t, labels, 3.0, AutoGuidance(weaker_model, diffusion),
                              clip_x0=False)
    strong, weak = (predict_x0(m, diffusion, x_t, t_batch, labels) for m in (tiny_model, weaker_model))
    torch.testing.assert_close(x0, weak + 3.0 * (strong - weak))
    _, at_zero = guided_prediction(tiny_model, diffusion, x_t, t, labels, 0.0, AutoGuidance(weaker_model, diffusion),
                                   clip_x0=False)
    torch.testing.assert_close(at_zero, weak)  # s = 0 samples the guide, conditionally


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
def test_cfgpp_at_lambda_zero_is_unconditional_sampling(tiny_model, diffusion, settings):  # noqa: F811
    settings = SamplerSettings(settings.sampler, settings.steps, settings.eta, clip_x0=False)
    torch.testing.assert_close(sample(tiny_model, diffusion, CFGPlusPlus(), 0.0, settings),
                               sample(tiny_model, diffusion, Guidance(), 0.0, settings), atol=1e-4, rtol=0)


def test_cfgpp_renoises_the_guided_x0_with_the_unconditional_noise(tiny_model, diffusion):  # noqa: F811
    x_t, labels, t, lam = torch.randn(3, 1, 28, 28), torch.tensor([5, 6, 7]), 700, 0.6
    t_batch = torch.full((3,), t)
    eps, x0 = guided_prediction(tiny_model, diffusion, x_t, t, labels, lam, CFGPlusPlus(), clip_x0=False)
    x0_c = predict_x0(tiny_model, diffusion, x_t, t_batch, labels)
    x0_u = predict_x0(tiny_model, diffusion, x_t, t_batch, torch.full_like(labels, 10))
    eps_u = diffusion.to_eps_and_x0(tiny_model(x_t, t_batch, torch.full_like(labels, 10)), x_t, t_batch)[0]
    torch.testing.assert_close(x0, x0_u + lam * (x0_c - x0_u))
    torch.testing.assert_close(eps, eps_u, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("clip", [False, True])
def test_cfgpp_takes_ddims_step_in_every_sampler(tiny_model, diffusion, clip):  # noqa: F811
    """DDPM from the re-noised x0 is DDIM with eta = 1, and two DPM-Solver++ steps (the first is first order)
    are two DDIM steps: the re-noising in sample_chunk makes every sampler take CFG++'s step."""
    rule = CFGPlusPlus()
    ddpm = sample(tiny_model, diffusion, rule, 0.6, SamplerSettings("ddpm", 4, clip_x0=clip))
    ddim_noisy = sample(tiny_model, diffusion, rule, 0.6, SamplerSettings("ddim", 4, eta=1.0, clip_x0=clip))
    torch.testing.assert_close(ddpm, ddim_noisy, atol=1e-4, rtol=0)
    dpmpp = sample(tiny_model, diffusion, rule, 0.6, SamplerSettings("dpmpp", 2, clip_x0=clip))
    ddim = sample(tiny_model, diffusion, rule, 0.6, SamplerSettings("ddim", 2, clip_x0=clip))
    torch.testing.assert_close(dpmpp, ddim, atol=1e-4, rtol=0)
    plain = sample(tiny_model, diffusion, Guidance(), 0.6, SamplerSettings("ddim", 2, clip_x0=clip))
    torch.testing.assert_close(ddim, plain, atol=1e-4, rtol=0)  # with 2 steps every factor is 1 (see below)
    assert not torch.allclose(ddim_noisy, sample(tiny_model, diffusion, Guidance(), 0.6,
                                                 SamplerSettings("ddim", 4, eta=1.0, clip_x0=clip)), atol=1e-3)


def test_cfgpp_with_dpmpp_2m_follows_the_official_solver():
    """Three DPM-Solver++(2M) steps of CFG++ against the official solver's update written out by hand in its own
    variables (x~ = x / alpha, h = the step's gain in log(alpha / sigma)): x~' = D + e^-h (x~ - U) +
    (1 - e^-h) / (2 r) (D - U_prev), D the guided x0, U the unconditional x0, U_prev the previous step's."""
    from cfgutils.core.samplers import sample_chunk

    cond, uncond = pair(seed=10)
    model, v_model, lam = _FixedOutputs(cond, uncond), GaussianDiffusion(DiffusionConfig(prediction="v")), 0.6
    settings = SamplerSettings("dpmpp", 3, clip_x0=False, clamp_output=False)
    labels = torch.tensor([1, 2, 3])
    ours = sample_chunk(model, v_model, labels, lam, settings, torch.Generator().manual_seed(11), CFGPlusPlus())
    x = torch.randn((3, 1, 28, 28), generator=torch.Generator().manual_seed(11))
    timesteps, previous = settings.timesteps(v_model.timesteps), None
    for index, t in enumerate(timesteps):
        alpha, sigma = math.sqrt(float(v_model.alpha_bar64[t])), math.sqrt(1 - float(v_model.alpha_bar64[t]))
        x0_c, x0_u = (alpha * x - sigma * out for out in (cond, uncond))  # v-prediction's x0
        guided = x0_u + lam * (x0_c - x0_u)
        if index + 1 == len(timesteps):
            x = guided
            break
        t_next = timesteps[index + 1]
        alpha_next = math.sqrt(float(v_model.alpha_bar64[t_next]))
        h = math.log(alpha_next / math.sqrt(1 - alpha_next ** 2)) - math.log(alpha / sigma)
        x_ve = guided + math.exp(-h) * (x / alpha - x0_u)
        if previous is not None:
            x_ve = x_ve - math.expm1(-h) / (2 * previous[1] / h) * (guided - previous[0])
        previous = (x0_u, h)
        x = alpha_next * x_ve
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_cfgpp_scale_factors_make_a_ddim_step_a_plain_cfg_step(tiny_model, diffusion):  # noqa: F811
    timesteps = sampling_timesteps(5)
    factors = cfgpp_scale_factors(diffusion, timesteps)
    assert factors[0] == pytest.approx(1.0, abs=1e-3) and factors[-1] == 1.0 and max(factors) > 2
    x_t, labels, lam = torch.randn(3, 1, 28, 28), torch.tensor([1, 2, 3]), 0.4
    for index in (1, 2):
        t, t_prev = timesteps[index], timesteps[index + 1]
        eps, x0 = guided_prediction(tiny_model, diffusion, x_t, t, labels, lam, CFGPlusPlus(), clip_x0=False)
        eps_s, x0_s = guided_prediction(tiny_model, diffusion, x_t, t, labels, lam * factors[index], Guidance(),
                                        clip_x0=False)
        torch.testing.assert_close(ddim_step(diffusion, x_t, eps, x0, t, t_prev, 0.0, None),
                                   ddim_step(diffusion, x_t, eps_s, x0_s, t, t_prev, 0.0, None), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [-0.1, 1.5, math.nan])
def test_cfgpp_refuses_a_lambda_outside_zero_one(tiny_model, diffusion, scale):  # noqa: F811
    with pytest.raises(UserInputError, match="lambda"):
        sample(tiny_model, diffusion, CFGPlusPlus(), scale)


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
def test_icg_on_a_label_blind_model_is_conditional_sampling(tiny_model, diffusion, settings):  # noqa: F811
    blind = LabelBlind(tiny_model)
    torch.testing.assert_close(sample(blind, diffusion, IndependentConditionGuidance(), 6.0, settings),
                               sample(blind, diffusion, Guidance(), 1.0, settings), atol=1e-5, rtol=0)


def test_icg_draws_real_labels_fresh_each_step_and_the_same_each_run():
    rule, labels = IndependentConditionGuidance(seed=3), torch.zeros(2000, dtype=torch.long)
    state = {}
    first = rule.negative_labels(labels, 10, GuidanceContext(0.5, 0, 2, state))
    second = rule.negative_labels(labels, 10, GuidanceContext(0.5, 1, 2, state))
    assert first.min() == 0 and first.max() == 9  # every class, never the null label 10
    assert abs(first.float().mean().item() - 4.5) < 0.3 and not torch.equal(first, second)
    assert torch.equal(first, rule.negative_labels(labels, 10, GuidanceContext(0.5, 0, 2, {})))
    chunks = [rule.negative_labels(labels, 10, GuidanceContext(0.5, 0, 2, {"chunk_generator": chunk_generator(0, k)}))
              for k in (0, 0, 1)]
    assert torch.equal(chunks[0], chunks[1]) and not torch.equal(chunks[0], chunks[2])  # per chunk, reproducibly


def test_wrapped_rules_keep_their_branch_and_scale_range(tiny_model, weaker_model, diffusion):  # noqa: F811
    """guidance_sweep wraps every rule in an OvershootMeter: the wrapper must not turn a rule into plain CFG."""
    for rule, scale in ((AutoGuidance(weaker_model, diffusion), 3.0), (CFGPlusPlus(), 0.5),
                        (IndependentConditionGuidance(), 3.0), (ScheduledGuidance("cosine"), 3.0)):
        wrapped = OvershootMeter(rule)
        assert (wrapped.guide, wrapped.renoise_with_negative, wrapped.scale_range) == (
            rule.guide, rule.renoise_with_negative, rule.scale_range)
        torch.testing.assert_close(sample(tiny_model, diffusion, wrapped, scale),
                                   sample(tiny_model, diffusion, rule, scale))
        assert wrapped.fraction() > 0
    with pytest.raises(UserInputError, match="lambda"):
        OvershootMeter(CFGPlusPlus()).validate_scale(2.0)


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: s.sampler)
def test_a_constant_schedule_is_plain_cfg(tiny_model, diffusion, settings):  # noqa: F811
    torch.testing.assert_close(sample(tiny_model, diffusion, ScheduledGuidance("constant"), 5.0, settings),
                               sample(tiny_model, diffusion, Guidance(), 5.0, settings), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", list(SCHEDULE_SHAPES))
@pytest.mark.parametrize("num_steps", [5, 12, 50])
def test_schedules_keep_the_mean_weight_and_ramp_up(shape, num_steps):
    weights = [scheduled_weight(4.0, shape, k, num_steps) for k in range(num_steps)]
    assert sum(weights) / num_steps == pytest.approx(4.0)
    assert weights == sorted(weights)
    of_w = ScheduledGuidance(shape, schedules="w")
    scales = [of_w.effective_scale(5.0, GuidanceContext(0.5, k, num_steps)) for k in range(num_steps)]
    assert scales == pytest.approx([1.0 + w for w in weights])  # w = 4 ramped: s_k = 1 + w_k
    of_s = ScheduledGuidance(shape, schedules="s")  # the scale itself ramps, s_k = s f(u_k)
    scales = [of_s.effective_scale(4.0, GuidanceContext(0.5, k, num_steps)) for k in range(num_steps)]
    assert scales == pytest.approx(weights) and sum(scales) / num_steps == pytest.approx(4.0)
    if shape != "constant":
        assert weights[0] < 4.0 < weights[-1]
        assert scales[0] < 1.0  # the first steps guide less than conditional sampling: nearly unconditional


def test_zero_star_alpha_is_the_least_squares_fit():
    x0_c, x0_u = pair(seed=4)
    alpha = zero_star_alpha(x0_c, x0_u)
    for a, c, u in zip(alpha.flatten(), x0_c, x0_u):
        grid = torch.linspace(a.item() - 0.1, a.item() + 0.1, 21)
        errors = torch.stack([(c - g * u).pow(2).sum() for g in grid])
        assert errors.argmin() == 10  # the fitted value is the best on a grid around it


def test_zero_star_with_alpha_one_and_no_zero_steps_is_plain_cfg():
    x0_u, direction = pair(seed=5)
    direction = direction - (direction * x0_u).flatten(1).sum(1).view(-1, 1, 1, 1) / \
        x0_u.flatten(1).pow(2).sum(1).view(-1, 1, 1, 1) * x0_u  # orthogonal to x0_u, so alpha* = 1
    x0_c = x0_u + direction
    torch.testing.assert_close(zero_star_alpha(x0_c, x0_u).flatten(), torch.ones(3))
    later = context(step_index=3, num_steps=5)
    rule = ZeroStarGuidance(zero_steps=0)
    torch.testing.assert_close(rule.finalize(rule.combine(x0_c, x0_u, 4.0, later), later),
                               Guidance().combine(x0_c, x0_u, 4.0, later))


def test_zero_star_zeroes_the_first_steps():
    x0 = torch.ones(2, 1, 28, 28)
    rule = ZeroStarGuidance(zero_steps=2)
    assert rule.finalize(x0, context(step_index=1, num_steps=5)).abs().sum() == 0
    assert torch.equal(rule.finalize(x0, context(step_index=2, num_steps=5)), x0)
    assert not rule.needs_both(4.0, context(step_index=0, num_steps=5))


@pytest.fixture(scope="module")
def guiders():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is in the test extra; the guider checks need it")
    return diffusers.guiders


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5])
def test_combinations_equal_diffusers_guiders(guiders, scale, weaker_model, diffusion):  # noqa: F811
    """diffusers mixes model outputs, cfgutils predicted x0; fed the same tensors, the rules agree."""
    cond, uncond = pair(seed=6)
    later = context(step_index=3, num_steps=5)
    ours = {
        "cfg": Guidance().combine(cond, uncond, scale, later),
        "auto": AutoGuidance(weaker_model, diffusion).combine(cond, uncond, scale, later),
        "zerostar": ZeroStarGuidance(zero_steps=0).combine(cond, uncond, scale, later),
    }
    theirs = {
        "cfg": guiders.ClassifierFreeGuidance(guidance_scale=scale),
        "auto": guiders.AutoGuidance(guidance_scale=scale, auto_guidance_layers=[0], dropout=0.1),
        "zerostar": guiders.ClassifierFreeZeroStarGuidance(guidance_scale=scale, zero_init_steps=0),
    }
    for name, guider in theirs.items():
        guider.set_state(step=3, num_inference_steps=5, timestep=torch.tensor(500))
        torch.testing.assert_close(ours[name], guider.forward(cond, uncond).pred, msg=name)


def test_zero_star_first_step_equals_diffusers_zero_init(guiders):
    cond, uncond = pair(seed=7)
    guider = guiders.ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=1)
    guider.set_state(step=0, num_inference_steps=5, timestep=torch.tensor(999))
    first = context(step_index=0, num_steps=5)
    rule = ZeroStarGuidance(zero_steps=1)
    torch.testing.assert_close(rule.finalize(rule.combine(cond, uncond, 4.0, first), first),
                               guider.forward(cond, uncond).pred)


class _FixedOutputs(torch.nn.Module):
    """A stand-in network whose raw output is ``cond`` for every real label and ``uncond`` for the null label."""

    def __init__(self, cond, uncond):
        super().__init__()
        self.cond, self.uncond = cond, uncond
        self.config = UNetConfig(num_classes=10)

    def forward(self, x_t, t, labels):
        null = (labels == self.config.null_label).view(-1, 1, 1, 1)
        return torch.where(null, self.uncond.repeat(x_t.shape[0] // self.cond.shape[0], 1, 1, 1),
                           self.cond.repeat(x_t.shape[0] // self.cond.shape[0], 1, 1, 1))


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_zero_star_mixes_the_raw_outputs_as_diffusers_does(guiders, prediction):
    """Fed the network's raw outputs (v or eps), diffusers' CFG-Zero* and cfgutils' rule inside a sampling step
    give the same guided x0, in a later step and in a zero-init step."""
    cond, uncond = pair(seed=8)
    model, x_t = _FixedOutputs(cond, uncond), torch.randn(cond.shape, generator=torch.Generator().manual_seed(9))
    model_diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    labels = torch.tensor([1, 2, 3])
    for step, t, zero_steps in ((3, 500, 0), (0, 999, 1)):
        guider = guiders.ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=zero_steps)
        guider.set_state(step=step, num_inference_steps=5, timestep=torch.tensor(t))
        expected = model_diffusion.to_eps_and_x0(guider.forward(cond, uncond).pred, x_t, torch.full((3,), t))[1]
        step_context = GuidanceContext(float(model_diffusion.alpha_bar64[t]), step, 5)
        _, x0 = guided_prediction(model, model_diffusion, x_t, t, labels, 4.0, ZeroStarGuidance(zero_steps), step_context,
                                  clip_x0=False)
        torch.testing.assert_close(x0, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        if step == 3:  # the same rule on predicted x0 instead of the raw output gives another image
            x0_c, x0_u = (model_diffusion.to_eps_and_x0(out, x_t, torch.full((3,), t))[1] for out in (cond, uncond))
            on_x0 = x0_u * zero_star_alpha(x0_c, x0_u) + 4.0 * (x0_c - x0_u * zero_star_alpha(x0_c, x0_u))
            assert (on_x0 - x0).abs().max() > 1e-2


def test_a_guide_with_other_classes_or_schedule_is_refused(tiny_model, weaker_model, diffusion):  # noqa: F811
    other = ConditionalUNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, num_classes=5))
    with pytest.raises(UserInputError, match="5 classes"):
        check_guide_fits(AutoGuidance(other, diffusion), tiny_model)
    linear = GaussianDiffusion(DiffusionConfig(schedule="linear", prediction="v"))
    with pytest.raises(UserInputError, match="another noise schedule"):
        check_guide_fits(AutoGuidance(weaker_model, linear), tiny_model, diffusion)
    check_guide_fits(AutoGuidance(weaker_model, diffusion), tiny_model, diffusion)  # same task: accepted
    check_guide_fits(Guidance(), tiny_model)  # no guide: nothing to check


@pytest.mark.parametrize("call, message", [
    (lambda: AutoGuidance(), "guide model"),
    (lambda: IndependentConditionGuidance(seed=-1), "icg seed"),
    (lambda: ScheduledGuidance("quadratic"), "schedule shape"),
    (lambda: ZeroStarGuidance(zero_steps=-1), "zero steps"),
    (lambda: ZeroStarGuidance(zero_steps=1.5), "zero steps"),
])
def test_bad_newer_rule_parameters(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def in_process(*args) -> int:
    """``python -m cfgutils ARGS`` in this process (no interpreter start-up): the exit code."""
    from cfgutils.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        return exit.code


def test_sample_cli_selects_the_newer_rules(tiny_checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "autoguidance"  # the real entry point once
    result = cli("sample", tiny_checkpoint, "3", out, "--n", "2", "--steps", "3", "-s", "3",
                 "--guidance", "autoguidance", "--guide-model", tiny_checkpoint)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["guidance"], meta["guidance_guide_model"]) == ("autoguidance", str(tiny_checkpoint))
    runs = {
        "cfgpp": ["--guidance", "cfgpp", "-s", "0.6"],
        "icg": ["--guidance", "icg", "--icg-seed", "4"],
        "schedule": ["--guidance", "schedule", "--schedule-shape", "cosine"],
        "zerostar": ["--guidance", "zerostar", "--zerostar-steps", "2"],
    }
    for name, flags in runs.items():
        out = tmp_path / name
        assert in_process("sample", tiny_checkpoint, "3", out, "--n", "2", "--steps", "3", "--device", "cpu",
                          *flags) == 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["guidance"] == name and np.load(out / "samples.npz")["images"].shape == (2, 28, 28)
    assert json.loads((tmp_path / "schedule" / "meta.json").read_text())["guidance_shape"] == "cosine"
    assert json.loads((tmp_path / "cfgpp" / "meta.json").read_text())["guidance_scale_s"] == 0.6


@pytest.mark.parametrize("args, message", [
    (["--guidance", "cfgpp", "-s", "3"], "lambda"),
    (["--guidance", "cfg", "--guide-model", "x.pt"], "autoguidance only"),
    (["--guidance", "autoguidance", "--guide-model", "/nonexistent/guide.pt"], "does not exist"),
    (["--guidance", "schedule", "--schedule-shape", "square"], "invalid choice"),
    (["--guidance", "zerostar", "--zerostar-steps", "-1"], "zero steps"),
    (["--guidance", "icg", "--icg-seed", "-2"], "icg seed"),
])
def test_sample_cli_rejects_bad_newer_rule_flags(tiny_checkpoint, tmp_path, args, message, capsys):  # noqa: F811
    out = tmp_path / "out"
    assert in_process("sample", tiny_checkpoint, "3", out, "--n", "2", "--steps", "3", *args) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()


def test_experiment_cli_refuses_a_cfgpp_scale_grid_beyond_one(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    assert in_process("experiment", "guidance", tiny_checkpoint, "3", out, "--scales", "0.5", "2", "--guidance",
                      "cfgpp") == 2
    assert "lambda" in capsys.readouterr().err and not out.exists()
