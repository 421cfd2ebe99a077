"""Guidance rules that reshape or replace the unconditional branch (notebook 08-newer-guidance).

Notebook 06's fixes act on the guided prediction; these act on what guidance is measured against or on
how the sampler uses it. Each is one class with its paper cited, built on the hooks of
:class:`~cfgutils.core.guidance.Guidance`, and each reduces to plain CFG or to conditional sampling in a
tested special case (``tests/test_newer_guidance.py``).

============  ===========================================  ==============================  ===================
rule          what changes                                 network calls per step          special case
============  ===========================================  ==============================  ===================
autoguidance  negative branch = a weaker model, same label  2 (model + guide, two calls)    guide = model: cond.
cfgpp         sampler re-noises with the negative's noise   2 (one batch of 2n)             lambda = 0: uncond.
icg           negative branch = a random label              2 (one batch of 2n)             label-blind: cond.
schedule      the weight ramps up as the noise falls        2 (one batch of 2n)             constant: CFG
zerostar      negative output scaled by its projection;     2 (one batch of 2n)             alpha* = 1: CFG
              output 0 in the first steps
============  ===========================================  ==============================  ===================
"""

from __future__ import annotations

import math

import torch

from ..errors import UserInputError, finite_number, one_of, positive_int
from .diffusion import half_log_snr
from .guidance import Guidance, GuidanceContext, classifier_free_guidance, per_sample


class AutoGuidance(Guidance):
    """Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself") (08).

    The negative branch is the *conditional* prediction of a weaker model of the same task (smaller and
    trained for less): x0 = x0_guide + s (x0_c - x0_guide). Where both models make the same error the
    difference cancels it; where the strong model knows better, guidance pushes further that way; the
    label is kept on both sides, so variety is not traded away as with the unconditional branch. With the
    model itself as guide it is conditional sampling at every s. The guide is a second network: two calls
    per step instead of one batch of 2n.
    """

    name = "autoguidance"

    def __init__(self, guide_model=None, guide_diffusion=None, guide_name: str = "guide"):
        if guide_model is None or guide_diffusion is None:
            raise UserInputError("autoguidance needs a guide model (--guide-model PATH)")
        self.guide = (guide_model, guide_diffusion)
        self.guide_name = str(guide_name)

    def negative_labels(self, labels, null_label, context):
        return labels

    def parameters(self):
        return {"guide_model": self.guide_name}


class CFGPlusPlus(Guidance):
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models") (08).

    The scale is lambda in [0, 1] (passed as s): x0 = x0_u + lambda (x0_c - x0_u), and the sampler then
    re-noises this x0 with the *unconditional* noise eps_u instead of the guided eps (DDIM:
    x_prev = sqrt(ab_prev) x0_lambda + sqrt(1 - ab_prev) eps_u). Plain CFG's guided eps at large s points
    off the data manifold and the error compounds; CFG++ stays on it. Written out, a CFG++ DDIM step is a
    plain CFG step at s_k = lambda / (1 - exp(-h_k)), h_k the step's gain in half-log-SNR
    (:func:`cfgpp_scale_factors`): 1 x lambda at the first and last step, several times lambda in between,
    and more the more steps the sampler takes. lambda = 0 is unconditional sampling (plain CFG at s = 0).
    DDPM and DPM-Solver++ take their step from x0_lambda re-noised with eps_u (:meth:`step_from`), which is
    DDIM's rule applied to them. DPM-Solver++(2M)'s second-order term follows the official CFG++ solver
    (``sample_dpmpp_2m_cfg_pp``): it extrapolates from the current guided x0 and the *previous unconditional*
    x0, (1 - e^-h) / (2 r) (x0_lambda - x0_u,prev), not from the previous guided x0.
    """

    name = "cfgpp"
    renoise_with_negative = True
    scale_range = (0.0, 1.0)

    def validate_scale(self, scale):
        return finite_number(scale, "cfg++ scale lambda (its s)", *self.scale_range)

    def needs_both(self, scale, context):
        return scale != 0.0  # lambda = 1 still re-noises with eps_u

    def step_from(self, x_t, eps, x0, context):
        """x0_lambda re-noised with eps_u; remembers x0_u, the x0 that eps_u implies, for :meth:`after_step`."""
        signal = math.sqrt(context.alpha_bar)
        context.state["x0_negative"] = (x_t - context.noise_std * eps) / signal
        return signal * x0 + context.noise_std * eps

    def after_step(self, run, context):
        """DPM-Solver++(2M) as the official CFG++ solver: the next step extrapolates from the negative x0."""
        if getattr(run, "history", None) is not None:
            run.history = (context.state.pop("x0_negative"), run.history[1])


def cfgpp_scale_factors(diffusion, timesteps: list[int]) -> list[float]:
    """Per step of a sampler visiting ``timesteps``, the plain-CFG scale one unit of CFG++'s lambda amounts to:
    1 / (1 - exp(-h_k)), h_k = half-log-SNR(t_prev) - half-log-SNR(t); exact for DDIM (eta = 0) and
    first-order DPM-Solver++, 1 at the last step (to clean data) (08)."""
    following = [*timesteps[1:], -1]  # -1: the last step goes to clean data, where the half-log-SNR is infinite
    return [1.0 / -math.expm1(-(half_log_snr(diffusion, t_prev) - half_log_snr(diffusion, t)))
            for t, t_prev in zip(timesteps, following)]


class IndependentConditionGuidance(Guidance):
    """Independent condition guidance, ICG (Sadat et al. 2024, "No Training, No Problem: Rethinking
    Classifier-Free Guidance for Diffusion Models") (08).

    The negative branch is the conditional prediction for a label drawn at random, independently of x_t:
    a stand-in for the unconditional prediction that needs no null label, so a model trained *without*
    label dropout, whose null label was never learned, can still be guided. It is a stand-in, not the same
    thing: the unconditional denoiser weighs the classes by how likely each is given x_t, a random label by
    their frequency (notebook 09 computes the difference exactly). Labels are drawn uniformly from the
    classes, fresh in every step, from a generator seeded by ``seed`` and the sampling chunk's seed (same
    pixels every run, different labels per chunk and sampling seed). For a model whose predictions ignore
    the label it is conditional sampling at every s.
    """

    name = "icg"

    def __init__(self, seed: int = 0):
        self.seed = positive_int(seed, "icg seed", minimum=0)

    def negative_labels(self, labels, null_label, context):
        if "icg_generator" not in context.state:
            chunk = context.state.get("chunk_generator")  # set by samplers.sample_chunk
            seed = self.seed if chunk is None else hash((self.seed, chunk.initial_seed())) % 2 ** 63
            context.state["icg_generator"] = torch.Generator().manual_seed(seed)
        generator = context.state["icg_generator"]
        return torch.randint(null_label, tuple(labels.shape), generator=generator).to(labels.device)

    def parameters(self):
        return {"seed": self.seed}


#: schedule shape f(u) over the position u in (0, 1) of a step in the sampling run; each averages to 1
SCHEDULE_SHAPES = {
    "constant": lambda u: 1.0,
    "linear": lambda u: 2.0 * u,
    "cosine": lambda u: 1.0 - math.cos(math.pi * u),
}


def scheduled_weight(weight: float, shape: str, step_index: int, num_steps: int) -> float:
    """The value v f(u_k) of step k of K for a scheduled ``weight`` v (the scale s, or the weight w),
    u_k = (k + 1/2) / K; the mean over the K steps is v (08)."""
    return weight * SCHEDULE_SHAPES[shape]((step_index + 0.5) / num_steps)


class ScheduledGuidance(Guidance):
    """Guidance-weight schedules (Wang et al. 2024, "Analysis of Classifier-Free Guidance Weight Schedulers") (08).

    The paper writes guidance as eps_u + omega (eps_c - eps_u), the convention of the Stable Diffusion models it
    studies, so its omega is our s, and its increasing schedules ramp omega itself: step k of K uses
    s_k = s f(u_k) (see :func:`scheduled_weight`), f(u) = 2u (linear) or 1 - cos(pi u) (cosine), each averaging to
    1, so the mean scale over the run is the constant scale's. With the paper's convention (``schedules="s"``) the
    first steps are close to *unconditional* (s_k near 0) and guidance grows past s as the noise falls.
    ``schedules="w"`` ramps the weight w = s - 1 instead (1 + w f(u_k)): the first steps are close to
    *conditional*. The paper indexes the schedule by the noise level t; here it runs over the sampler's steps,
    which visit t in order. ``shape="constant"`` is plain CFG in both conventions. The default (linear, on w) was
    chosen on validation data among both shapes and both conventions (``benchmarks/README.md``).
    """

    name = "schedule"

    def __init__(self, shape: str = "linear", schedules: str = "w"):
        self.shape = one_of(shape, tuple(SCHEDULE_SHAPES), "schedule shape")
        self.schedules = one_of(schedules, ("s", "w"), "what the schedule ramps (s, the paper's; or w)")

    def effective_scale(self, scale, context):
        if self.schedules == "s":
            return scheduled_weight(scale, self.shape, context.step_index, context.num_steps)
        return 1.0 + scheduled_weight(scale - 1.0, self.shape, context.step_index, context.num_steps)

    def parameters(self):
        return {"shape": self.shape, "schedules": self.schedules}


def zero_star_alpha(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """CFG-Zero*'s optimised scale alpha* = <c, u> / ||u||^2 per sample, shaped to broadcast (08)."""
    dot = (cond * uncond).flatten(1).sum(dim=1)
    return per_sample(dot / (uncond.flatten(1).pow(2).sum(dim=1) + 1e-8), cond)


class ZeroStarGuidance(Guidance):
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models") (08).

    Both parts act on the network's raw output, as in the paper (there a flow velocity; here eps or v,
    whichever the model predicts; :meth:`GuidanceContext.to_output`): (1) optimised scale: the negative output
    u is first multiplied by alpha* (:func:`zero_star_alpha`, the least-squares fit of u to the conditional c),
    out = alpha* u + s (c - alpha* u), so guidance acts only on what the two outputs do not share; (2) zero-init:
    the first ``zero_steps`` steps output 0 (for a v model, x0 = sqrt(alpha_bar) x_t: the step barely moves
    x_t; for an eps model, x0 = x_t / sqrt(alpha_bar), which clipping then bounds). ``zero_steps = 0`` is plain
    CFG wherever alpha* = 1, that is <c, u> = ||u||^2. The paper zeroes the first step; the default here (none)
    was chosen on validation data among 0-3 zeroed steps (``benchmarks/README.md``).
    """

    name = "zerostar"

    def __init__(self, zero_steps: int = 0):
        self.zero_steps = positive_int(zero_steps, "zerostar zero steps", minimum=0)

    def combine(self, x0_cond, x0_uncond, scale, context):
        cond, uncond = context.to_output(x0_cond), context.to_output(x0_uncond)
        return context.from_output(classifier_free_guidance(zero_star_alpha(cond, uncond) * uncond, cond, scale))

    def finalize(self, x0, context: GuidanceContext):
        return context.from_output(torch.zeros_like(x0)) if context.step_index < self.zero_steps else x0

    def needs_both(self, scale, context):
        return scale != 1.0 and context.step_index >= self.zero_steps  # s = 0 is alpha* u, not u

    def parameters(self):
        return {"zero_steps": self.zero_steps}
