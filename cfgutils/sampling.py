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

    sigma: float  # sqrt(1 - alpha_bar) at this step (the variance-preserving noise level)
    step_index: int
    num_steps: int
    state: dict = field(default_factory=dict)  # lives for one sampling run (one chunk): APG's momentum

    @property
    def edm_sigma(self) -> float:
        """Noise-to-signal ratio sqrt((1 - alpha_bar) / alpha_bar): the sigma of EDM papers (inf at pure noise)."""
        signal_sq = 1.0 - self.sigma ** 2
        return math.inf if signal_sq <= 0 else self.sigma / math.sqrt(signal_sq)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per sample, (n,), shaped (n, 1, 1, 1) to broadcast over the (n, c, h, w) batch ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of every sample of an (n, c, h, w) tensor, shaped (n, 1, 1, 1)."""
    return _per_sample(x.flatten(1).norm(dim=1), x)


def _check_number(value, name: str, low: float = -math.inf, high: float = math.inf, allow_inf: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{name} must be a number, got {value!r}") from error
    if math.isnan(number) or (math.isinf(number) and not allow_inf) or not low <= number <= high:
        raise UserInputError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number


class Guidance:
    """Plain classifier-free guidance: x0 = x0_u + s (x0_c - x0_u) (Ho & Salimans 2021) (04-cfg-sampling).

    The variants of notebook 06 subclass it and override one of the three hooks that
    :func:`guided_prediction` calls in every step: :meth:`effective_scale` (which s applies at this
    noise level), :meth:`combine` (how the two predictions are mixed) and :meth:`finalize` (what is done to
    the mixed prediction).
    """

    name = "cfg"

    def effective_scale(self, scale: float, context: GuidanceContext) -> float:
        """The scale used in this step (plain CFG: the same in every step)."""
        return scale

    def combine(self, x0_cond: torch.Tensor, x0_uncond: torch.Tensor, scale: float,
                context: GuidanceContext) -> torch.Tensor:
        return x0_uncond + scale * (x0_cond - x0_uncond)

    def finalize(self, x0: torch.Tensor, context: GuidanceContext) -> torch.Tensor:
        """Post-process the guided x0 (plain CFG: nothing)."""
        return x0

    def needs_both(self, scale: float, context: GuidanceContext) -> bool:
        """Whether this step needs both predictions (plain CFG at s = 0 or 1 needs only one)."""
        return scale not in (0.0, 1.0)

    def parameters(self) -> dict:
        """The variant's parameters by name (none for plain CFG)."""
        return {}

    def describe(self) -> dict:
        return {"guidance": self.name, **{f"guidance_{k}": v for k, v in self.parameters().items()}}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.parameters().items())
        return f"{type(self).__name__}({params})"


class RescaledGuidance(Guidance):
    """CFG rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", eq. 15-16) (06).

    The guided prediction is rescaled to the standard deviation of the conditional one, and mixed
    back with factor ``phi``: x = phi * x_cfg * std(x_c) / std(x_cfg) + (1 - phi) * x_cfg. Large s
    inflates the spread of x0 (over-exposure: saturated strokes); rescaling undoes the inflation while
    keeping the guided direction. ``phi = 0`` is plain CFG. Applied to predicted x0, where cfgutils guides.
    """

    name = "rescale"

    def __init__(self, phi: float = 0.7):
        self.phi = _check_number(phi, "rescale phi", 0.0, 1.0)

    def combine(self, x0_cond, x0_uncond, scale, context):
        guided = super().combine(x0_cond, x0_uncond, scale, context)
        ratio = _per_sample(x0_cond.flatten(1).std(dim=1) / guided.flatten(1).std(dim=1).clamp_min(1e-8), guided)
        return self.phi * guided * ratio + (1.0 - self.phi) * guided

    def needs_both(self, scale, context):
        return scale != 1.0  # at s = 0 the rescale still needs the conditional spread

    def parameters(self):
        return {"phi": self.phi}


class IntervalGuidance(Guidance):
    """Guidance in a limited interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval
    Improves Sample and Distribution Quality in Diffusion Models") (06-guidance-variants).

    The scale s applies only at noise levels sigma_lo < sigma <= sigma_hi, with sigma the EDM noise-to-signal
    ratio sqrt((1 - alpha_bar) / alpha_bar); elsewhere the step is plain conditional (s = 1). Guidance at
    high noise collapses the variety of shapes, at low noise it only sharpens what is already decided.
    An interval containing every step's sigma is plain CFG. The default (0.5, 2.0] was the best of five
    intervals tried on the shipped model (the paper's ImageNet interval, (0.28, 5.42], is one of them).
    """

    name = "interval"

    def __init__(self, sigma_lo: float = 0.5, sigma_hi: float = 2.0):
        self.sigma_lo = _check_number(sigma_lo, "interval sigma_lo", 0.0, allow_inf=False)
        self.sigma_hi = _check_number(sigma_hi, "interval sigma_hi", 0.0, allow_inf=True)
        if not self.sigma_lo < self.sigma_hi:
            raise UserInputError(f"the guidance interval needs sigma_lo < sigma_hi, got ({sigma_lo}, {sigma_hi})")

    def inside(self, context: GuidanceContext) -> bool:
        return self.sigma_lo < context.edm_sigma <= self.sigma_hi

    def effective_scale(self, scale, context):
        return scale if self.inside(context) else 1.0

    def parameters(self):
        return {"sigma_lo": self.sigma_lo, "sigma_hi": self.sigma_hi}


class ThresholdGuidance(Guidance):
    """Dynamic thresholding of the predicted x0 (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion
    Models with Deep Language Understanding" (Imagen), sec. 2.3) (06-guidance-variants).

    Per sample, q = the ``percentile`` quantile of |x0|; if q > 1, x0 is clipped to [-q, q] and divided by
    q. Saturated pixels are pulled inwards instead of piling up at +-1, as static clipping does. Imagen used
    p = 0.995; on MNIST, where most pixels are background at -1, that rescales whole images towards grey,
    and p = 0.9 measured better on the shipped model.
    """

    name = "threshold"

    def __init__(self, percentile: float = 0.9):
        self.percentile = _check_number(percentile, "threshold percentile", 0.0, 1.0)
        if self.percentile == 0.0:
            raise UserInputError("threshold percentile must be in (0, 1], got 0")

    def finalize(self, x0, context):
        q = _per_sample(torch.quantile(x0.flatten(1).abs().float(), self.percentile, dim=1).clamp_min(1.0), x0)
        q = q.to(x0.dtype)
        return torch.maximum(torch.minimum(x0, q), -q) / q

    def parameters(self):
        return {"percentile": self.percentile}


class ProjectedGuidance(Guidance):
    """Adaptive projected guidance, APG (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
    Guidance Scales in Diffusion Models") (06-guidance-variants).

    The update d = x0_c - x0_u is (1) averaged with reverse momentum (d <- d + momentum * previous d, with a
    negative ``momentum``), (2) shrunk to an L2 norm of at most ``norm_threshold`` (0 = no limit), (3)
    split into its component parallel to x0_c, which mostly raises contrast and saturates, and the
    orthogonal rest; the result is x0_c + (s - 1) (d_orth + eta d_par). ``eta = 1``, ``momentum = 0`` and
    no norm threshold is plain CFG. The norm threshold is in pixels of a [-1, 1] image (a 28x28 digit's
    x0 has a norm of about 25); 5 measured better than 15 or 3 on the shipped model.
    """

    name = "apg"

    def __init__(self, eta: float = 0.0, norm_threshold: float = 5.0, momentum: float = -0.5):
        self.eta = _check_number(eta, "apg eta", 0.0, 1.0)
        self.norm_threshold = _check_number(norm_threshold, "apg norm threshold", 0.0)
        self.momentum = _check_number(momentum, "apg momentum", -1.0, 1.0)

    def combine(self, x0_cond, x0_uncond, scale, context):
        update = x0_cond - x0_uncond
        if self.momentum != 0.0:
            previous = context.state.get("apg_running")
            if previous is not None:
                update = update + self.momentum * previous
            context.state["apg_running"] = update
        if self.norm_threshold > 0:
            update = update * (self.norm_threshold / _per_sample_norm(update).clamp_min(1e-12)).clamp(max=1.0)
        unit = x0_cond / _per_sample_norm(x0_cond).clamp_min(1e-12)
        parallel = _per_sample((update * unit).flatten(1).sum(dim=1), update) * unit
        orthogonal = update - parallel
        return x0_cond + (scale - 1.0) * (orthogonal + self.eta * parallel)

    def needs_both(self, scale, context):
        return scale != 1.0  # s = 0 is not the null-label prediction under APG

    def parameters(self):
        return {"eta": self.eta, "norm_threshold": self.norm_threshold, "momentum": self.momentum}


#: the guidance rules by name; the first is the default everywhere
GUIDANCES: dict[str, type[Guidance]] = {"cfg": Guidance, "rescale": RescaledGuidance, "interval": IntervalGuidance,
                                        "threshold": ThresholdGuidance, "apg": ProjectedGuidance}


def make_guidance(name: str = "cfg", **parameters) -> Guidance:
    """A guidance rule by name (cfg, rescale, interval, threshold, apg) with its parameters (06-guidance-variants)."""
    if name not in GUIDANCES:
        raise UserInputError(f"unknown guidance {name!r}: use one of {', '.join(GUIDANCES)}")
    try:
        return GUIDANCES[name](**parameters)
    except TypeError as error:
        raise UserInputError(f"guidance {name!r} does not take {sorted(parameters)}: {error}") from error


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
    scale = guidance.effective_scale(scale, context)
    if guidance.needs_both(scale, context):
        output = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([labels, null]))
        _, x0_both = diffusion.to_eps_and_x0(output, torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]))
        x0_cond, x0_uncond = x0_both[:n], x0_both[n:]
        x0 = guidance.combine(x0_cond, x0_uncond, scale, context)
    else:
        # s = 0 is exactly the null-label prediction and s = 1 exactly the conditional one
        output = model(x_t, t_batch, null if scale == 0.0 else labels)
        _, x0 = diffusion.to_eps_and_x0(output, x_t, t_batch)
    x0 = guidance.finalize(x0, context)
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


class _RecordingGuidance(Guidance):
    """Wraps a guidance rule and records, per step, the sizes of what it mixes (for :func:`guidance_norms`)."""

    def __init__(self, inner: Guidance):
        self.inner, self.name, self.rows, self.sigmas = inner, inner.name, {}, []

    def effective_scale(self, scale, context):
        self.sigmas.append(context.edm_sigma)  # called once in every step
        return self.inner.effective_scale(scale, context)

    def needs_both(self, scale, context):
        return self.inner.needs_both(scale, context)

    def finalize(self, x0, context):
        return self.inner.finalize(x0, context)

    def combine(self, x0_cond, x0_uncond, scale, context):
        guided = self.inner.combine(x0_cond, x0_uncond, scale, context)
        self.rows[context.step_index] = (
            _per_sample_norm(x0_cond - x0_uncond).mean().item(), _per_sample_norm(guided - x0_cond).mean().item(),
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
