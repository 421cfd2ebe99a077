"""Samplers: DDPM, DDIM, DPM-Solver++(2M) and the reference study's ancestral sampler as pure step functions,
and :func:`generate` (notebook 04).

Each sampler is one function x_t -> x_{t_prev} of the guided predictions (:func:`ddpm_step`,
:func:`ddim_step`, :func:`dpmpp_2m_step`, :func:`ancestral_step`); :data:`SAMPLER_STEPS` dispatches to them, and
:func:`sample_chunk` is the one loop that all three share: predict with guidance, step.

Every sampler is deterministic for a given seed and batch size: samples are drawn in chunks of
``batch_size``, chunk ``k`` using its own ``torch.Generator`` seeded from ``(seed, k)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UserInputError, finite_number, one_of, positive_int
from .diffusion import GaussianDiffusion, half_log_snr
from .guidance import Guidance, GuidanceContext, WrappedGuidance, guided_prediction, per_sample_norm
from .seeding import derived_generator

SAMPLERS = ("ddpm", "ddim", "dpmpp", "ancestral")
SPACINGS = ("uniform", "trailing")
#: default number of model evaluations per sampler (DDPM: the full chain; ancestral: t = 999 .. 1, as the
#: reference study sampled)
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpmpp": 12, "ancestral": 999}
DEFAULT_SAMPLER = "dpmpp"
#: the shape of one sample: a 28x28 grey image
IMAGE_SHAPE = (1, 28, 28)


def sampling_timesteps(num_steps: int, timesteps: int = 1000, spacing: str = "trailing") -> list[int]:
    """The decreasing timesteps a K-step sampler evaluates the model at (04-cfg-sampling).

    ``uniform`` = 0, T/K, 2T/K, ... reversed (diffusers' "leading"); ``trailing`` = T-1, T-1-T/K, ...
    (diffusers' "trailing", which starts from pure noise). K = T gives every step T-1..0.
    """
    positive_int(num_steps, "steps")
    if num_steps > timesteps:
        raise UserInputError(f"steps ({num_steps}) cannot exceed the model's T = {timesteps}")
    if spacing == "uniform":
        stride = timesteps // num_steps
        return [i * stride for i in reversed(range(num_steps))]
    if spacing == "trailing":
        stride = timesteps / num_steps
        return [int(round(timesteps - i * stride)) - 1 for i in range(num_steps)]
    raise UserInputError(f"unknown spacing {spacing!r}: use one of {', '.join(SPACINGS)}")


@dataclass
class SamplerSettings:
    """How to sample: sampler, model evaluations, DDIM eta, spacing, x0 clipping, clamping (04-cfg-sampling).

    x0 clipping defaults to on for every sampler: MNIST pixels live in [-1, 1], and clipping the
    predicted x0 keeps guided overshoot at high s from compounding over the steps. ``clamp_output``
    clamps the final samples to [-1, 1] (the reference study returned them unclamped).
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int | None = None  # None = DEFAULT_STEPS[sampler]
    eta: float = 0.0  # DDIM only: 0 = deterministic DDIM, 1 = DDPM-like noise
    spacing: str = "trailing"
    clip_x0: bool = True
    clamp_output: bool = True

    def resolved_steps(self) -> int:
        return DEFAULT_STEPS[self.sampler] if self.steps is None else self.steps

    def timesteps(self, timesteps: int = 1000) -> list[int]:
        """The decreasing timesteps this sampler evaluates the model at, for a model of ``timesteps`` levels.

        The ancestral sampler stops at t = 1 (its last step goes to t = 0): K steps spaced over 1 .. T-1.
        """
        if self.sampler == "ancestral":
            return [t + 1 for t in sampling_timesteps(self.resolved_steps(), timesteps - 1, self.spacing)]
        return sampling_timesteps(self.resolved_steps(), timesteps, self.spacing)

    def validate(self, timesteps: int = 1000) -> "SamplerSettings":
        one_of(self.sampler, SAMPLERS, "sampler")
        finite_number(self.eta, "eta", low=0.0)
        self.timesteps(timesteps)
        return self

    def describe(self) -> dict:
        return {"sampler": self.sampler, "steps": self.resolved_steps(), "eta": self.eta,
                "spacing": self.spacing, "clip_x0": self.clip_x0, "clamp_output": self.clamp_output}


#: the reference study's sampler: ancestral steps t = 999 .. 1, no x0 clipping, the final samples unclamped
REFERENCE_SAMPLER = SamplerSettings("ancestral", clip_x0=False, clamp_output=False)


StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def ddpm_step(diffusion: GaussianDiffusion, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step x_t -> x_{t_prev} from the posterior q(x_prev | x_t, x0), variance "fixed small"."""
    ab_t = float(diffusion.alpha_bar64[t])
    ab_prev = float(diffusion.alpha_bar64[t_prev]) if t_prev >= 0 else 1.0
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    mean = (math.sqrt(ab_prev) * beta / (1 - ab_t)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)) * x_t
    if t_prev < 0 or noise is None:
        return mean
    variance = beta * (1 - ab_prev) / (1 - ab_t)
    return mean + math.sqrt(variance) * noise


def ddim_step(diffusion: GaussianDiffusion, x_t: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, t: int,
              t_prev: int, eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021) with stochasticity ``eta``; t_prev < 0 means "to clean data"."""
    ab_t = float(diffusion.alpha_bar64[t])
    ab_prev = float(diffusion.alpha_bar64[t_prev]) if t_prev >= 0 else 1.0
    noise_std = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
    direction = math.sqrt(max(1 - ab_prev - noise_std ** 2, 0.0)) * eps
    x_prev = math.sqrt(ab_prev) * x0 + direction
    if noise_std > 0 and noise is not None:
        x_prev = x_prev + noise_std * noise
    return x_prev


def dpmpp_2m_step(diffusion: GaussianDiffusion, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
                  previous: tuple[torch.Tensor, float] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, float]]:
    """One DPM-Solver++(2M) step (Lu et al. 2022), data-prediction form; returns x_{t_prev} and what the next
    step needs, ``(x0, h)``. First order when there is no ``previous``; t_prev < 0 returns the data prediction."""
    if t_prev < 0:
        return x0, (x0, 0.0)
    h = half_log_snr(diffusion, t_prev) - half_log_snr(diffusion, t)
    denoised = x0
    if previous is not None:  # second order: extrapolate the data prediction from the last two steps
        previous_x0, previous_h = previous
        r = previous_h / h
        denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
    ab_t, ab_prev = float(diffusion.alpha_bar64[t]), float(diffusion.alpha_bar64[t_prev])
    x_prev = (math.sqrt(1 - ab_prev) / math.sqrt(1 - ab_t)) * x_t - math.sqrt(ab_prev) * math.expm1(-h) * denoised
    return x_prev, (x0, h)


def ancestral_step(diffusion: GaussianDiffusion, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
                   noise: torch.Tensor | None) -> torch.Tensor:
    """The reference study's step in epsilon form, variance "fixed large" (sigma^2 = beta) (07-ablations):

        x_prev = (x_t - beta / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha) + sqrt(beta) z,   alpha = 1 - beta,

    with alpha = alpha_bar_t / alpha_bar_prev (one DDPM step when t_prev = t - 1). ``noise`` None (the
    last step) adds no z. Nothing is clipped: a large eps error at t near T is multiplied by 1/sqrt(alpha).
    """
    ab_t, ab_prev = float(diffusion.alpha_bar64[t]), float(diffusion.alpha_bar64[max(t_prev, 0)])
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    x_prev = (x_t - (beta / math.sqrt(1 - ab_t)) * eps) / math.sqrt(alpha)
    return x_prev if noise is None else x_prev + math.sqrt(beta) * noise


# --------------------------------------------------------------------------------------------- dispatch
@dataclass
class SamplerRun:
    """The per-run state a sampler step may use: settings, the chunk's generator, DPM-Solver++'s history."""

    diffusion: GaussianDiffusion
    settings: SamplerSettings
    generator: torch.Generator
    history: tuple | None = None

    def noise_like(self, x: torch.Tensor) -> torch.Tensor:
        """Fresh Gaussian noise shaped like ``x``, drawn on the CPU from the run's generator."""
        return torch.randn(x.shape, generator=self.generator).to(x.device)


def _ddpm(run: SamplerRun, x_t, eps, x0, t: int, t_prev: int) -> torch.Tensor:
    return ddpm_step(run.diffusion, x_t, x0, t, t_prev, run.noise_like(x_t) if t_prev >= 0 else None)


def _ddim(run: SamplerRun, x_t, eps, x0, t: int, t_prev: int) -> torch.Tensor:
    noisy = run.settings.eta > 0 and t_prev >= 0
    return ddim_step(run.diffusion, x_t, eps, x0, t, t_prev, run.settings.eta, run.noise_like(x_t) if noisy else None)


def _dpmpp(run: SamplerRun, x_t, eps, x0, t: int, t_prev: int) -> torch.Tensor:
    x_prev, run.history = dpmpp_2m_step(run.diffusion, x_t, x0, t, t_prev, run.history)
    return x_prev


def _ancestral(run: SamplerRun, x_t, eps, x0, t: int, t_prev: int) -> torch.Tensor:
    # the last step (to t = 0; the loop marks it t_prev = -1) adds no noise
    return ancestral_step(run.diffusion, x_t, eps, t, t_prev, run.noise_like(x_t) if t_prev >= 0 else None)


#: sampler name -> one step x_t -> x_{t_prev} given the guided (eps, x0); the only place samplers differ
SAMPLER_STEPS = {"ddpm": _ddpm, "ddim": _ddim, "dpmpp": _dpmpp, "ancestral": _ancestral}


@torch.no_grad()
def sample_chunk(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
                 settings: SamplerSettings, generator: torch.Generator, guidance: Guidance | None = None,
                 callback: StepCallback | None = None, sample_shape: tuple[int, ...] = IMAGE_SHAPE) -> torch.Tensor:
    """Sample one batch for ``labels`` with guidance scale ``s``; returns x_0 in [-1, 1] (04-cfg-sampling).

    All randomness comes from ``generator`` (a CPU generator), so results do not depend on the device's
    RNG. ``callback(step_index, t, x_t, x0_pred)`` sees every step (for trajectories). ``sample_shape``
    other than an image's (the 2-D toy of notebook 09), or ``settings.clamp_output`` off, returns the samples
    unclamped.
    """
    guidance = guidance or Guidance()
    timesteps = settings.timesteps(diffusion.timesteps)
    x = torch.randn((labels.shape[0], *sample_shape), generator=generator).to(labels.device)
    run, step = SamplerRun(diffusion, settings, generator), SAMPLER_STEPS[settings.sampler]
    state = {"chunk_generator": generator}  # per-run state the guidance rules may use (APG, ICG)
    for index, t in enumerate(timesteps):
        t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        context = GuidanceContext(float(diffusion.alpha_bar64[t]), index, len(timesteps), state)
        eps, x0 = guided_prediction(model, diffusion, x, t, labels, scale, guidance, context, settings.clip_x0)
        if callback is not None:
            callback(index, t, x, x0)
        x = step(run, guidance.step_from(x, eps, x0, context), eps, x0, t, t_prev)  # CFG++ steps from its own x_t
        guidance.after_step(run, context)  # ... and keeps its negative x0 in DPM-Solver++'s history
    return x.clamp(-1.0, 1.0) if tuple(sample_shape) == IMAGE_SHAPE and settings.clamp_output else x


def chunk_count(n_samples: int, batch_size: int) -> int:
    """How many chunks of ``batch_size`` samples :func:`generate` draws ``n_samples`` in (the last may be shorter)."""
    return math.ceil(n_samples / batch_size)


def chunk_generator(seed: int, chunk_index: int) -> torch.Generator:
    """The CPU generator of chunk ``chunk_index`` for ``seed`` (same pixels every run) (04-cfg-sampling)."""
    return derived_generator(seed, chunk_index)


def class_labels(label: int | str, n: int) -> torch.Tensor:
    """Labels for ``n`` samples of one class index 0-9, or for ``"all"``: n of each class, grouped by class."""
    positive_int(n, "n")
    if isinstance(label, str) and label.strip() == "all":
        return torch.arange(10).repeat_interleave(n)
    text = str(label).strip() if isinstance(label, (str, int)) and not isinstance(label, bool) else ""
    if len(text) != 1 or text not in "0123456789":
        raise UserInputError(f"class must be an index 0-9 or 'all', got {label!r}")
    return torch.full((n,), int(text), dtype=torch.long)


@torch.no_grad()
def generate(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
             settings: SamplerSettings | None = None, seed: int = 0, batch_size: int = 500,
             guidance: Guidance | None = None, progress: bool = False, chunk_indices: list[int] | None = None,
             callback: StepCallback | None = None, sample_shape: tuple[int, ...] = IMAGE_SHAPE) -> torch.Tensor:
    """Guided samples for ``labels`` (any length), in chunks of ``batch_size``; x_0 in [-1, 1] (04-cfg-sampling).

    ``chunk_indices`` restricts the work to some chunks (used to split sampling across processes).
    """
    settings = (settings or SamplerSettings()).validate(diffusion.timesteps)
    scale = (guidance or Guidance()).validate_scale(scale)
    positive_int(batch_size, "batch size")
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    if guidance is not None and guidance.guide is not None:  # autoguidance: the guide samples where the model does
        guidance.guide[0].to(device).eval()
    labels = labels.to(device)
    was_training = model.training
    model.eval()
    chunks = range(chunk_count(labels.shape[0], batch_size)) if chunk_indices is None else chunk_indices
    outputs = []
    iterator = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc=f"sampling s={scale:g}", unit="batch", leave=False)
    try:
        for chunk in iterator:
            chunk_labels = labels[chunk * batch_size:(chunk + 1) * batch_size]
            outputs.append(sample_chunk(model, diffusion, chunk_labels, scale, settings,
                                        chunk_generator(seed, chunk), guidance, callback, sample_shape))
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty((0, *sample_shape), device=device)
    return torch.cat(outputs)


@torch.no_grad()
def trajectory(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
               settings: SamplerSettings | None = None, seed: int = 0, guidance: Guidance | None = None
               ) -> dict[str, torch.Tensor]:
    """Sample once and keep every step: timesteps, x_t and predicted x0 per step, and the final x_0 (04-cfg-sampling)."""
    steps: list[int] = []
    xs: list[torch.Tensor] = []
    x0s: list[torch.Tensor] = []

    def record(index: int, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        steps.append(t)
        xs.append(x_t.detach().cpu().clone())
        x0s.append(x0.detach().cpu().clone())

    final = generate(model, diffusion, labels, scale, settings, seed, batch_size=max(1, labels.shape[0]),
                     guidance=guidance, callback=record)
    return {"timesteps": torch.tensor(steps), "x_t": torch.stack(xs), "x0_pred": torch.stack(x0s),
            "final": final.cpu()}


class _RecordingGuidance(WrappedGuidance):
    """Wraps a guidance rule and records, per step, the sizes of what it mixes (for :func:`guidance_norms`)."""

    def __init__(self, inner: Guidance):
        super().__init__(inner)
        self.rows, self.sigmas = {}, []

    def effective_scale(self, scale, context):
        self.sigmas.append(context.edm_sigma)  # called once in every step
        return self.inner.effective_scale(scale, context)

    def combine(self, x0_cond, x0_uncond, scale, context):
        guided = self.inner.combine(x0_cond, x0_uncond, scale, context)
        self.rows[context.step_index] = (
            per_sample_norm(x0_cond - x0_uncond).mean().item(), per_sample_norm(guided - x0_cond).mean().item(),
            (guided.abs() > 1).float().mean().item())
        return guided


@torch.no_grad()
def guidance_norms(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
                   settings: SamplerSettings | None = None, seed: int = 0, guidance: Guidance | None = None
                   ) -> dict[str, list[float]]:
    """Sample once and record per step: EDM sigma, mean L2 norm of x0_c - x0_u, of the guided update
    (guided x0 - x0_c, before any clipping) and the fraction of guided x0 pixels outside [-1, 1] (06-guidance-variants).

    Steps where the rule used one prediction only (s = 1, or outside a guidance interval) record zeros.
    """
    settings = (settings or SamplerSettings()).validate(diffusion.timesteps)
    recorder = _RecordingGuidance(guidance or Guidance())
    generate(model, diffusion, labels, scale, settings, seed, batch_size=max(1, labels.shape[0]), guidance=recorder)
    rows = [recorder.rows.get(index, (0.0, 0.0, 0.0)) for index in range(len(recorder.sigmas))]
    return {"edm_sigma": recorder.sigmas, "difference_norm": [r[0] for r in rows], "update_norm": [r[1] for r in rows],
            "outside_fraction": [r[2] for r in rows]}
