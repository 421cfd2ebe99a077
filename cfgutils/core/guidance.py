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

from ..errors import finite_number
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
