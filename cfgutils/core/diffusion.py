"""The Gaussian diffusion: noise schedule, forward process, training loss, label dropout (notebook 03-train).

Notation (DDPM): ``alpha_bar[t]`` is the fraction of signal variance left at step t, and

    x_t = sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps,    eps ~ N(0, I).

The network predicts either the noise ``eps`` (Ho et al. 2020) or the velocity
``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0`` (Salimans & Ho 2022); both convert to the
other and to a prediction of x_0, which is what the samplers and guidance use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from ..errors import UserInputError, config_from_dict

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")
WEIGHTINGS = ("uniform", "min-snr")


@dataclass(frozen=True)
class DiffusionConfig:
    """Schedule and loss settings; saved with every checkpoint (03-train)."""

    timesteps: int = 1000  # T, the number of discrete noise levels
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal 2021) or "linear" (Ho et al. 2020)
    prediction: str = "v"  # what the network predicts: "eps" or "v"
    loss_weighting: str = "min-snr"  # "uniform" (plain MSE on the target) or "min-snr" (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # the clamp gamma of min-SNR weighting

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DiffusionConfig":
        """Build and validate from a plain dict (YAML, a checkpoint), refusing unknown keys (03-train)."""
        return config_from_dict(cls, values, "diffusion")

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserInputError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.prediction not in PREDICTIONS:
            raise UserInputError(f"unknown prediction {self.prediction!r}: use one of {', '.join(PREDICTIONS)}")
        if self.loss_weighting not in WEIGHTINGS:
            raise UserInputError(f"unknown loss weighting {self.loss_weighting!r}: use one of {', '.join(WEIGHTINGS)}")
        if self.timesteps < 2:
            raise UserInputError("timesteps must be at least 2")


def alpha_bar_schedule(timesteps: int = 1000, schedule: str = "cosine") -> torch.Tensor:
    """alpha_bar[t] for t = 0..T-1 in float64 (03-train).

    cosine: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t+1)/T + s)/(1 + s) * pi/2), s = 0.008, with each
    step's beta clipped to 0.999 (Nichol & Dhariwal 2021). linear: betas from 1e-4 to 0.02 (Ho et al. 2020).
    """
    if schedule == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    elif schedule == "linear":
        betas = torch.linspace(1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps, timesteps, dtype=torch.float64)
    else:
        raise UserInputError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    return torch.cumprod(1 - betas, dim=0)


class GaussianDiffusion:
    """Schedule tensors plus the conversions between eps, v and x0 predictions (03-train)."""

    def __init__(self, config: DiffusionConfig | None = None):
        config = config or DiffusionConfig()
        config.validate()
        self.config = config
        self.timesteps = config.timesteps
        self.alpha_bar64 = alpha_bar_schedule(config.timesteps, config.schedule)
        self.alpha_bar = self.alpha_bar64.float()

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar[t]) and sqrt(1 - alpha_bar[t]), shaped to broadcast over a batch ``like`` (any shape)."""
        alpha_bar = self.alpha_bar.to(like.device)[t].view(-1, *([1] * (like.dim() - 1)))
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The forward process: draw x_t ~ q(x_t | x_0) for integer timesteps ``t`` (N,) (03-train)."""
        signal, sigma = self._coefficients(t, x0)
        return signal * x0 + sigma * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output: eps, or v = sqrt(ab) eps - sqrt(1-ab) x0."""
        if self.config.prediction == "eps":
            return noise
        signal, sigma = self._coefficients(t, x0)
        return signal * noise - sigma * x0

    def to_eps_and_x0(self, model_output: torch.Tensor, x_t: torch.Tensor,
                      t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the network's output at (x_t, t) to predicted noise and predicted x_0 (04-cfg-sampling)."""
        signal, sigma = self._coefficients(t, x_t)
        if self.config.prediction == "eps":
            eps = model_output
            x0 = (x_t - sigma * eps) / signal
        else:
            eps = sigma * x_t + signal * model_output
            x0 = signal * x_t - sigma * model_output
        return eps, x0

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weight: 1, or min-SNR-gamma expressed for the chosen target (03-train)."""
        if self.config.loss_weighting == "uniform":
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        alpha_bar = self.alpha_bar.to(t.device)[t]
        snr = alpha_bar / (1 - alpha_bar)
        clipped = snr.clamp(max=self.config.min_snr_gamma)
        # min-SNR weights the x0-error by min(snr, gamma); in units of the eps error that is /snr,
        # in units of the v error /(snr + 1).
        return clipped / snr if self.config.prediction == "eps" else clipped / (snr + 1)

    def training_loss(self, model, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                      noise: torch.Tensor) -> torch.Tensor:
        """Weighted MSE between the network output and its target at noised inputs (03-train)."""
        x_t = self.q_sample(x0, t, noise)
        prediction = model(x_t, t, y)
        per_sample = F.mse_loss(prediction, self.target(x0, t, noise), reduction="none").mean(dim=(1, 2, 3))
        return (self.loss_weights(t) * per_sample).mean()


def drop_labels(labels: torch.Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Replace each label by the null label independently with probability ``p_uncond`` (03-train).

    Dropping per sample (not per batch) is what lets one network learn both eps(x, y) and eps(x, null).
    """
    if not 0.0 <= p_uncond <= 1.0:
        raise UserInputError(f"p_uncond must be in [0, 1], got {p_uncond}")
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def half_log_snr(diffusion: GaussianDiffusion, t: int) -> float:
    """lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)) at integer t (DPM-Solver's time variable); +inf at 'clean' (t < 0)."""
    if t < 0:
        return math.inf
    ab = float(diffusion.alpha_bar64[t])
    return 0.5 * (math.log(ab) - math.log1p(-ab))
