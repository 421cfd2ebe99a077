"""Classifier-free guidance: the CFG rule and the published variants of it (notebooks 04 and 06).

Guidance-scale convention used everywhere in cfgutils: **s**, with

    eps = eps_u + s * (eps_c - eps_u)       s = 0 unconditional, s = 1 conditional, s > 1 guided;

the classifier-free guidance paper's ``w`` is ``s - 1`` (``eps = (1 + w) eps_c - w eps_u``).
Since x_t is shared, combining eps, v or x0 predictions linearly is the same thing; cfgutils combines
predicted x0 (where the variants act) and converts back to eps. Each rule is one class with its paper
cited; every rule reduces to plain CFG in a tested special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import UserInputError, finite_number
from .diffusion import GaussianDiffusion


def w_from_s(scale: float) -> float:
    """The paper's guidance weight w = s - 1 for the cfgutils scale s (04-cfg-sampling)."""
    return float(scale) - 1.0


def s_from_w(weight: float) -> float:
    """The cfgutils scale s = w + 1 for the paper's weight w (04-cfg-sampling)."""
    return float(weight) + 1.0


def check_scale(scale: float) -> float:
    """Validate a guidance scale s: a finite number (04-cfg-sampling)."""
    return finite_number(scale, "guidance scale")


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The CFG formula, uncond + s (cond - uncond), for eps, v or x0 predictions alike (04-cfg-sampling)."""
    return uncond + scale * (cond - uncond)


@dataclass
class GuidanceContext:
    """What a guidance rule may look at in one step: the noise level and a per-run state dict."""

    alpha_bar: float  # alpha_bar[t] at this step: x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps
    step_index: int
    num_steps: int
    state: dict = field(default_factory=dict)  # lives for one sampling run (one chunk): APG's momentum
    x_t: torch.Tensor | None = None  # this step's input, set by guided_prediction (None: predictions are outputs)
    prediction: str | None = None  # what the network outputs: "eps" or "v" (set with x_t)

    @property
    def noise_std(self) -> float:
        """sqrt(1 - alpha_bar): the standard deviation of the noise in x_t."""
        return math.sqrt(1.0 - self.alpha_bar)

    @property
    def edm_sigma(self) -> float:
        """Noise-to-signal ratio sqrt((1 - alpha_bar) / alpha_bar): the sigma of EDM papers (inf at pure noise)."""
        return math.inf if self.alpha_bar <= 0 else math.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)


    def to_output(self, x0: torch.Tensor) -> torch.Tensor:
        """The network output (eps or v, whichever it predicts) that means ``x0`` at this step's x_t; ``x0``
        itself where the context knows no x_t (08)."""
        if self.x_t is None:
            return x0
        signal, sigma = math.sqrt(self.alpha_bar), self.noise_std
        return (self.x_t - signal * x0) / sigma if self.prediction == "eps" else (signal * self.x_t - x0) / sigma

    def from_output(self, output: torch.Tensor) -> torch.Tensor:
        """The predicted x0 that the network output ``output`` means at this step's x_t (inverse of
        :meth:`to_output`) (08)."""
        if self.x_t is None:
            return output
        signal, sigma = math.sqrt(self.alpha_bar), self.noise_std
        return (self.x_t - sigma * output) / signal if self.prediction == "eps" else signal * self.x_t - sigma * output


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per sample, (n,), shaped (n, 1, 1, 1) to broadcast over the (n, c, h, w) batch ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of every sample of an (n, c, h, w) tensor, shaped (n, 1, 1, 1)."""
    return per_sample(x.flatten(1).norm(dim=1), x)


class Guidance:
    """Plain classifier-free guidance: x0 = x0_u + s (x0_c - x0_u) (Ho & Salimans 2021) (04-cfg-sampling).

    The variants of notebooks 06 and 08 subclass it and override the hooks that
    :func:`guided_prediction` calls in every step: :meth:`effective_scale` (which s applies at this
    noise level), :meth:`combine` (how the two predictions are mixed) and :meth:`finalize` (what is done to
    the mixed prediction).
    """

    name = "cfg"

    def validate_scale(self, scale: float) -> float:
        """The scale s if this rule accepts it (plain CFG: any finite number), else a :class:`UserInputError`."""
        return check_scale(scale)

    def effective_scale(self, scale: float, context: GuidanceContext) -> float:
        """The scale used in this step (plain CFG: the same in every step)."""
        return scale

    def combine(self, x0_cond: torch.Tensor, x0_uncond: torch.Tensor, scale: float,
                context: GuidanceContext) -> torch.Tensor:
        """Mix the conditional and unconditional predictions (plain CFG: :func:`classifier_free_guidance`)."""
        return classifier_free_guidance(x0_uncond, x0_cond, scale)

    def finalize(self, x0: torch.Tensor, context: GuidanceContext) -> torch.Tensor:
        """Post-process the guided x0 (plain CFG: nothing)."""
        return x0

    def needs_both(self, scale: float, context: GuidanceContext) -> bool:
        """Whether this step needs both predictions (plain CFG at s = 0 or 1 needs only one)."""
        return scale not in (0.0, 1.0)

    #: the network of the branch guidance pushes away from, as ``(model, diffusion)``; None = the sampled model
    #: itself (autoguidance sets a weaker model here)
    guide = None

    #: whether the eps returned with the guided x0 is the negative branch's noise instead of the guided one (CFG++)
    renoise_with_negative = False

    def step_from(self, x_t: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor,
                  context: GuidanceContext) -> torch.Tensor:
        """The x_t the sampler takes its step from (plain CFG: x_t itself)."""
        return x_t

    def after_step(self, run, context: GuidanceContext) -> None:
        """Adjust the sampler run's state after its step (plain CFG: nothing)."""

    #: the (lowest, highest) scale the rule accepts, or None for any finite s (CFG++: lambda in [0, 1])
    scale_range = None

    def negative_labels(self, labels: torch.Tensor, null_label: int, context: GuidanceContext) -> torch.Tensor:
        """The labels of the branch guidance pushes away from (plain CFG: the null label, "no label")."""
        return torch.full_like(labels, null_label)

    def parameters(self) -> dict:
        """The variant's parameters by name (none for plain CFG)."""
        return {}

    def describe(self) -> dict:
        """The rule and its parameters as flat ``guidance_*`` fields (for meta.json and result tables)."""
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
    The paper uses phi = 0.7; the default here was chosen for MNIST on validation data (``benchmarks/README.md``).
    """

    name = "rescale"

    def __init__(self, phi: float = 0.3):
        self.phi = finite_number(phi, "rescale phi", 0.0, 1.0)

    def combine(self, x0_cond, x0_uncond, scale, context):
        guided = super().combine(x0_cond, x0_uncond, scale, context)
        ratio = per_sample(x0_cond.flatten(1).std(dim=1) / guided.flatten(1).std(dim=1).clamp_min(1e-8), guided)
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
    An interval containing every step's sigma is plain CFG. The paper's ImageNet interval is (0.28, 5.42];
    the default here was chosen for MNIST (how: ``benchmarks/README.md``).
    """

    name = "interval"

    def __init__(self, sigma_lo: float = 1.0, sigma_hi: float = 5.0):
        self.sigma_lo = finite_number(sigma_lo, "interval sigma_lo", 0.0, allow_inf=False)
        self.sigma_hi = finite_number(sigma_hi, "interval sigma_hi", 0.0, allow_inf=True)
        if not self.sigma_lo < self.sigma_hi:
            raise UserInputError(f"the guidance interval needs sigma_lo < sigma_hi, got ({sigma_lo}, {sigma_hi})")

    def inside(self, context: GuidanceContext) -> bool:
        """Whether this step's EDM sigma lies in (sigma_lo, sigma_hi]."""
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
    so the default is lower (how it was chosen: ``benchmarks/README.md``).
    """

    name = "threshold"

    def __init__(self, percentile: float = 0.95):
        self.percentile = finite_number(percentile, "threshold percentile", 0.0, 1.0)
        if self.percentile == 0.0:
            raise UserInputError("threshold percentile must be in (0, 1], got 0")

    def finalize(self, x0, context):
        q = per_sample(torch.quantile(x0.flatten(1).abs().float(), self.percentile, dim=1).clamp_min(1.0), x0)
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
    x0 has a norm of about 25); how the default was chosen: ``benchmarks/README.md``.
    """

    name = "apg"

    def __init__(self, eta: float = 0.0, norm_threshold: float = 5.0, momentum: float = 0.0):
        self.eta = finite_number(eta, "apg eta", 0.0, 1.0)
        self.norm_threshold = finite_number(norm_threshold, "apg norm threshold", 0.0)
        self.momentum = finite_number(momentum, "apg momentum", -1.0, 1.0)

    def combine(self, x0_cond, x0_uncond, scale, context):
        update = x0_cond - x0_uncond
        if self.momentum != 0.0:
            previous = context.state.get("apg_running")
            if previous is not None:
                update = update + self.momentum * previous
            context.state["apg_running"] = update
        if self.norm_threshold > 0:
            update = update * (self.norm_threshold / per_sample_norm(update).clamp_min(1e-12)).clamp(max=1.0)
        unit = x0_cond / per_sample_norm(x0_cond).clamp_min(1e-12)
        parallel = per_sample((update * unit).flatten(1).sum(dim=1), update) * unit
        orthogonal = update - parallel
        return x0_cond + (scale - 1.0) * (orthogonal + self.eta * parallel)

    def needs_both(self, scale, context):
        return scale != 1.0  # s = 0 is not the null-label prediction under APG

    def parameters(self):
        return {"eta": self.eta, "norm_threshold": self.norm_threshold, "momentum": self.momentum}


class WrappedGuidance(Guidance):
    """A guidance rule that passes every hook to ``inner``; subclasses override one hook to observe it."""

    def __init__(self, inner: Guidance):
        self.inner, self.name = inner, inner.name

    def validate_scale(self, scale):
        return self.inner.validate_scale(scale)

    def effective_scale(self, scale, context):
        return self.inner.effective_scale(scale, context)

    def needs_both(self, scale, context):
        return self.inner.needs_both(scale, context)

    def combine(self, x0_cond, x0_uncond, scale, context):
        return self.inner.combine(x0_cond, x0_uncond, scale, context)

    def finalize(self, x0, context):
        return self.inner.finalize(x0, context)

    def negative_labels(self, labels, null_label, context):
        return self.inner.negative_labels(labels, null_label, context)

    @property
    def guide(self):
        return self.inner.guide

    @property
    def renoise_with_negative(self):
        return self.inner.renoise_with_negative

    def step_from(self, x_t, eps, x0, context):
        return self.inner.step_from(x_t, eps, x0, context)

    def after_step(self, run, context):
        self.inner.after_step(run, context)

    @property
    def scale_range(self):
        return self.inner.scale_range

    def parameters(self):
        return self.inner.parameters()

    def describe(self):
        return self.inner.describe()


class OvershootMeter(WrappedGuidance):
    """Wraps a guidance rule and counts the pixels of its final x0 (before any clipping) outside [-1, 1].

    :func:`cfgutils.workflows.experiments.guidance_sweep` reports :meth:`fraction` per cell as ``x0_outside``:
    how far guidance pushes the predicted image out of the data's range, which clipping then hides.
    """

    def __init__(self, inner: Guidance):
        super().__init__(inner)
        self.outside, self.total = 0, 0

    def finalize(self, x0, context):
        x0 = self.inner.finalize(x0, context)
        self.outside += int((x0.abs() > 1).sum())
        self.total += x0.numel()
        return x0

    def fraction(self) -> float:
        """Pixels outside [-1, 1] over all pixels of every step seen since the last call; resets the count."""
        value = self.outside / self.total if self.total else 0.0
        self.outside, self.total = 0, 0
        return value


def predict_x0(model, diffusion: GaussianDiffusion, x_t: torch.Tensor, t_batch: torch.Tensor,
               labels: torch.Tensor) -> torch.Tensor:
    """The network's prediction of x0 for ``labels``, whatever it was trained to predict (eps or v) (04-cfg-sampling)."""
    return diffusion.to_eps_and_x0(model(x_t, t_batch, labels), x_t, t_batch)[1]


@torch.no_grad()
def guided_prediction(model, diffusion: GaussianDiffusion, x_t: torch.Tensor, t: int, labels: torch.Tensor,
                      scale: float, guidance: Guidance | None = None, context: GuidanceContext | None = None,
                      clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided (eps, x0) at integer timestep ``t``: conditional and negative labels in ONE batch of 2n (04-cfg-sampling).

    The rule picks the negative branch (:meth:`Guidance.negative_labels`, :attr:`Guidance.guide`); with a
    separate guide network the two branches are two calls.
    """
    guidance = guidance or Guidance()
    n = x_t.shape[0]
    context = context or GuidanceContext(alpha_bar=float(diffusion.alpha_bar64[t]), step_index=0, num_steps=1)
    context.x_t, context.prediction = x_t, diffusion.config.prediction  # for rules that act on the raw output
    t_batch = torch.full((n,), t, device=x_t.device, dtype=torch.long)
    scale = guidance.effective_scale(scale, context)
    negative = guidance.negative_labels(labels, model.config.null_label, context)
    guide_model, guide_diffusion = guidance.guide or (model, diffusion)
    x0_negative = None
    if guidance.needs_both(scale, context):
        if guidance.guide is None:  # one batch of 2n: [conditional | negative]
            both = predict_x0(model, diffusion, torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]),
                              torch.cat([labels, negative]))
            x0_cond, x0_negative = both[:n], both[n:]
        else:
            x0_cond = predict_x0(model, diffusion, x_t, t_batch, labels)
            x0_negative = predict_x0(guide_model, guide_diffusion, x_t, t_batch, negative)
        x0 = guidance.combine(x0_cond, x0_negative, scale, context)
    elif scale == 0.0:  # s = 0 is exactly the negative branch
        x0 = x0_negative = predict_x0(guide_model, guide_diffusion, x_t, t_batch, negative)
    else:  # s = 1 is exactly the conditional prediction
        x0 = predict_x0(model, diffusion, x_t, t_batch, labels)
    x0 = guidance.finalize(x0, context)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    renoise_from = x0_negative if guidance.renoise_with_negative else x0
    eps = (x_t - math.sqrt(context.alpha_bar) * renoise_from) / context.noise_std
    return eps, x0
