"""Classifier-free guided sampling: DDPM, DDIM and DPM-Solver++(2M) (notebook 04-cfg-sampling).

Guidance-scale convention used everywhere in cfgutils: **s**, with

    eps = eps_u + s * (eps_c - eps_u)       s = 0 unconditional, s = 1 conditional, s > 1 guided;

the classifier-free guidance paper's ``w`` is ``s - 1`` (``eps = (1 + w) eps_c - w eps_u``).
Since x_t is shared, combining eps, v or x0 predictions linearly is the same thing; cfgutils combines
predicted x0 (where the guidance variants of notebook 06 act) and converts back to eps.

Every sampler is deterministic for a given seed and batch size: samples are drawn in chunks of
``batch_size``, chunk ``k`` using its own ``torch.Generator`` seeded from ``(seed, k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .diffusion import GaussianDiffusion
from .errors import UserInputError

SAMPLERS = ("ddpm", "ddim", "dpmpp")
SPACINGS = ("uniform", "trailing")
#: default number of model evaluations per sampler (DDPM: the full chain)
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpmpp": 12}
DEFAULT_SAMPLER = "dpmpp"


def w_from_s(scale: float) -> float:
    """The paper's guidance weight w = s - 1 for the cfgutils scale s (04-cfg-sampling)."""
    return float(scale) - 1.0


def s_from_w(weight: float) -> float:
    """The cfgutils scale s = w + 1 for the paper's weight w (04-cfg-sampling)."""
    return float(weight) + 1.0


# --------------------------------------------------------------------------------------------- guidance
@dataclass
class GuidanceContext:
    """What a guidance rule may look at in one step: the noise level and a per-run state dict."""

    sigma: float  # sqrt(1 - alpha_bar) at this step
    step_index: int
    num_steps: int
    state: dict = field(default_factory=dict)


class Guidance:
    """Plain classifier-free guidance: x0 = x0_u + s (x0_c - x0_u) (Ho & Salimans 2021) (04-cfg-sampling)."""

    name = "cfg"

    def combine(self, x0_cond: torch.Tensor, x0_uncond: torch.Tensor, scale: float,
                context: GuidanceContext) -> torch.Tensor:
        return x0_uncond + scale * (x0_cond - x0_uncond)

    def needs_both(self, scale: float, context: GuidanceContext) -> bool:
        """Whether this step needs both predictions (plain CFG at s = 0 or 1 needs only one)."""
        return scale not in (0.0, 1.0)

    def describe(self) -> dict:
        return {"guidance": self.name}


def check_scale(scale: float) -> float:
    """Validate a guidance scale s: a finite number (04-cfg-sampling)."""
    try:
        value = float(scale)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"guidance scale must be a number, got {scale!r}") from error
    if not math.isfinite(value):
        raise UserInputError(f"guidance scale must be finite, got {scale!r}")
    return value


@torch.no_grad()
def guided_prediction(model, diffusion: GaussianDiffusion, x_t: torch.Tensor, t: int, labels: torch.Tensor,
                      scale: float, guidance: Guidance | None = None, context: GuidanceContext | None = None,
                      clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided (eps, x0) at integer timestep ``t``: conditional and null labels in ONE batch of 2n (04-cfg-sampling)."""
    guidance = guidance or Guidance()
    n = x_t.shape[0]
    null = torch.full_like(labels, model.config.null_label)
    sigma = float((1 - diffusion.alpha_bar64[t]).sqrt())
    context = context or GuidanceContext(sigma=sigma, step_index=0, num_steps=1)
    t_batch = torch.full((n,), t, device=x_t.device, dtype=torch.long)
    if guidance.needs_both(scale, context):
        output = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([labels, null]))
        _, x0_both = diffusion.to_eps_and_x0(output, torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]))
        x0_cond, x0_uncond = x0_both[:n], x0_both[n:]
        x0 = guidance.combine(x0_cond, x0_uncond, scale, context)
    else:
        # s = 0 is exactly the null-label prediction and s = 1 exactly the conditional one
        output = model(x_t, t_batch, null if scale == 0.0 else labels)
        _, x0 = diffusion.to_eps_and_x0(output, x_t, t_batch)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    signal = float(diffusion.alpha_bar64[t].sqrt())
    eps = (x_t - signal * x0) / sigma
    return eps, x0


# --------------------------------------------------------------------------------------------- timesteps
def sampling_timesteps(num_steps: int, timesteps: int = 1000, spacing: str = "trailing") -> list[int]:
    """The decreasing timesteps a K-step sampler evaluates the model at (04-cfg-sampling).

    ``uniform`` = 0, T/K, 2T/K, ... reversed (diffusers' "leading"); ``trailing`` = T-1, T-1-T/K, ...
    (diffusers' "trailing", which starts from pure noise). K = T gives every step T-1..0.
    """
    if not isinstance(num_steps, int) or num_steps <= 0:
        raise UserInputError(f"steps must be a positive integer, got {num_steps!r}")
    if num_steps > timesteps:
        raise UserInputError(f"steps ({num_steps}) cannot exceed the model's T = {timesteps}")
    if spacing == "uniform":
        stride = timesteps // num_steps
        return [i * stride for i in reversed(range(num_steps))]
    if spacing == "trailing":
        stride = timesteps / num_steps
        return [int(round(timesteps - i * stride)) - 1 for i in range(num_steps)]
    raise UserInputError(f"unknown spacing {spacing!r}: use one of {', '.join(SPACINGS)}")


# --------------------------------------------------------------------------------------------- samplers
@dataclass
class SamplerSettings:
    """How to sample: sampler, model evaluations, DDIM eta, spacing, x0 clipping (04-cfg-sampling).

    x0 clipping defaults to on for every sampler: MNIST pixels live in [-1, 1], and clipping the
    predicted x0 keeps guided overshoot at high s from compounding over the steps.
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int | None = None  # None = DEFAULT_STEPS[sampler]
    eta: float = 0.0  # DDIM only: 0 = deterministic DDIM, 1 = DDPM-like noise
    spacing: str = "trailing"
    clip_x0: bool = True

    def resolved_steps(self) -> int:
        return DEFAULT_STEPS[self.sampler] if self.steps is None else self.steps

    def validate(self, timesteps: int = 1000) -> "SamplerSettings":
        if self.sampler not in SAMPLERS:
            raise UserInputError(f"unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        eta = float(self.eta)
        if not math.isfinite(eta) or eta < 0:
            raise UserInputError(f"eta must be a finite number >= 0, got {self.eta!r}")
        sampling_timesteps(self.resolved_steps(), timesteps, self.spacing)
        return self

    def describe(self) -> dict:
        return {"sampler": self.sampler, "steps": self.resolved_steps(), "eta": self.eta,
                "spacing": self.spacing, "clip_x0": self.clip_x0}


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
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
    direction = math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
    x_prev = math.sqrt(ab_prev) * x0 + direction
    if sigma > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def _log_snr_half(diffusion: GaussianDiffusion, t: int) -> float:
    """lambda = log(alpha / sigma) at integer t (DPM-Solver's time variable); +inf at 'clean' (t < 0)."""
    if t < 0:
        return math.inf
    ab = float(diffusion.alpha_bar64[t])
    return 0.5 * (math.log(ab) - math.log1p(-ab))


@torch.no_grad()
def sample_chunk(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
                 settings: SamplerSettings, generator: torch.Generator, guidance: Guidance | None = None,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """Sample one batch for ``labels`` with guidance scale ``s``; returns x_0 in [-1, 1] (04-cfg-sampling).

    All randomness comes from ``generator`` (a CPU generator), so results do not depend on the device's
    RNG. ``callback(step_index, t, x_t, x0_pred)`` sees every step (for trajectories).
    """
    guidance = guidance or Guidance()
    device = labels.device
    n = labels.shape[0]
    timesteps = sampling_timesteps(settings.resolved_steps(), diffusion.timesteps, settings.spacing)
    x = torch.randn((n, 1, 28, 28), generator=generator).to(device)
    state: dict = {}
    previous_x0: torch.Tensor | None = None
    previous_h: float | None = None
    for index, t in enumerate(timesteps):
        t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        sigma = float((1 - diffusion.alpha_bar64[t]).sqrt())
        context = GuidanceContext(sigma=sigma, step_index=index, num_steps=len(timesteps), state=state)
        eps, x0 = guided_prediction(model, diffusion, x, t, labels, scale, guidance, context, settings.clip_x0)
        if callback is not None:
            callback(index, t, x, x0)
        if settings.sampler == "ddpm":
            noise = torch.randn((n, 1, 28, 28), generator=generator).to(device) if t_prev >= 0 else None
            x = ddpm_step(diffusion, x, x0, t, t_prev, noise)
        elif settings.sampler == "ddim":
            noise = (torch.randn((n, 1, 28, 28), generator=generator).to(device)
                     if settings.eta > 0 and t_prev >= 0 else None)
            x = ddim_step(diffusion, x, eps, x0, t, t_prev, settings.eta, noise)
        else:  # DPM-Solver++(2M), data-prediction form (Lu et al. 2022), first order on the first/last step
            if t_prev < 0:
                x = x0  # the last step goes to sigma = 0 at first order: the data prediction itself
                break
            lam_t, lam_prev = _log_snr_half(diffusion, t), _log_snr_half(diffusion, t_prev)
            h = lam_prev - lam_t
            ab_prev = float(diffusion.alpha_bar64[t_prev])
            sigma_prev, alpha_prev = math.sqrt(1 - ab_prev), math.sqrt(ab_prev)
            if previous_x0 is None:
                denoised = x0
            else:
                r = previous_h / h
                denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
            x = (sigma_prev / sigma) * x - alpha_prev * math.expm1(-h) * denoised
            previous_x0, previous_h = x0, h
    return x.clamp(-1.0, 1.0)


def chunk_generator(seed: int, chunk_index: int) -> torch.Generator:
    """The CPU generator of chunk ``chunk_index`` for ``seed`` (same pixels every run) (04-cfg-sampling)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(chunk_index)) % (2 ** 63))


def digit_labels(digit: int | str, n: int) -> torch.Tensor:
    """Labels for ``n`` samples of one digit 0-9, or for ``"all"``: n of each digit, grouped by digit."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise UserInputError(f"n must be a positive integer, got {n!r}")
    if isinstance(digit, str) and digit.strip() == "all":
        return torch.arange(10).repeat_interleave(n)
    text = str(digit).strip() if isinstance(digit, (str, int)) and not isinstance(digit, bool) else ""
    if len(text) != 1 or text not in "0123456789":
        raise UserInputError(f"digit must be 0-9 or 'all', got {digit!r}")
    return torch.full((n,), int(text), dtype=torch.long)


@torch.no_grad()
def generate(model, diffusion: GaussianDiffusion, labels: torch.Tensor, scale: float,
             settings: SamplerSettings | None = None, seed: int = 0, batch_size: int = 500,
             guidance: Guidance | None = None, progress: bool = False, chunk_indices: list[int] | None = None,
             callback: StepCallback | None = None) -> torch.Tensor:
    """Guided samples for ``labels`` (any length), in chunks of ``batch_size``; x_0 in [-1, 1] (04-cfg-sampling).

    ``chunk_indices`` restricts the work to some chunks (used to split sampling across processes).
    """
    settings = (settings or SamplerSettings()).validate(diffusion.timesteps)
    scale = check_scale(scale)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise UserInputError(f"batch size must be a positive integer, got {batch_size!r}")
    device = next(model.parameters()).device
    labels = labels.to(device)
    was_training = model.training
    model.eval()
    n_chunks = math.ceil(labels.shape[0] / batch_size)
    chunks = range(n_chunks) if chunk_indices is None else chunk_indices
    outputs = []
    iterator = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc=f"sampling s={scale:g}", unit="batch", leave=False)
    try:
        for chunk in iterator:
            chunk_labels = labels[chunk * batch_size:(chunk + 1) * batch_size]
            outputs.append(sample_chunk(model, diffusion, chunk_labels, scale, settings,
                                        chunk_generator(seed, chunk), guidance, callback))
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty((0, 1, 28, 28), device=device)
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
