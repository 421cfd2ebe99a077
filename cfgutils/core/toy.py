"""A 2-D toy where guidance's answer is known: a mixture of Gaussians, one per class (notebook 09).

Class c's data are N(mu_c, std_c^2 I). Noised by the VP process, x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps,
class c stays Gaussian, N(sqrt(ab) mu_c, (ab std_c^2 + 1 - ab) I), so the conditional and unconditional
denoisers E[x_0 | x_t, c] and E[x_0 | x_t] are closed-form. :class:`ExactDenoiser` wraps them as a
"network" that cfgutils' samplers and guidance rules run unchanged; :func:`tilted_log_density` is the
distribution CFG is often said to sample, p(x|c)^s p(x)^(1-s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from .diffusion import GaussianDiffusion


@dataclass(frozen=True)
class GaussianMixture:
    """K isotropic 2-D Gaussians: ``means`` (K, 2), ``stds`` (K,), class ``weights`` (K,) summing to 1."""

    means: tuple[tuple[float, float], ...]
    stds: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if not len(self.means) == len(self.stds) == len(self.weights) or not self.means:
            raise UserInputError("a mixture needs as many means, stds and weights, at least one of each")
        if min(self.stds) <= 0 or min(self.weights) <= 0 or not math.isclose(sum(self.weights), 1.0):
            raise UserInputError("mixture stds and weights must be positive, the weights summing to 1")

    @property
    def num_classes(self) -> int:
        return len(self.means)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """means (K, 2), stds (K,), weights (K,) as float64 tensors."""
        return (torch.tensor(self.means, dtype=torch.float64), torch.tensor(self.stds, dtype=torch.float64),
                torch.tensor(self.weights, dtype=torch.float64))

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exact draws x_0 ~ p(x | c) for every label, (n, 2)."""
        means, stds, _ = self.tensors()
        noise = torch.randn((labels.shape[0], 2), generator=generator, dtype=torch.float64)
        return means[labels] + stds[labels, None] * noise


def component_log_densities(mixture: GaussianMixture, points: torch.Tensor,
                            alpha_bar: float | torch.Tensor = 1.0) -> torch.Tensor:
    """log N(x; sqrt(ab) mu_k, (ab std_k^2 + 1 - ab) I) for every point (n, 2) and class k: (n, K); ``alpha_bar``
    is one noise level for all points or one per point (n,)."""
    means, stds, _ = mixture.tensors()
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1, 1)  # (1, 1) or (n, 1)
    variance = ab * stds ** 2 + (1.0 - ab)
    squared = (points.double()[:, None, :] - ab.sqrt()[..., None] * means[None]).pow(2).sum(-1)
    return -0.5 * squared / variance - torch.log(2 * math.pi * variance)


def log_density(mixture: GaussianMixture, points: torch.Tensor, label: int | None = None) -> torch.Tensor:
    """log p(x | c) of the clean data for class ``label``, or log p(x) of the whole mixture for None (n,)."""
    logs = component_log_densities(mixture, points)
    if label is not None:
        return logs[:, label]
    return torch.logsumexp(logs + torch.log(mixture.tensors()[2]), dim=1)


def tilted_log_density(mixture: GaussianMixture, points: torch.Tensor, label: int, scale: float) -> torch.Tensor:
    """s log p(x|c) + (1 - s) log p(x), unnormalised: the "tilted" target p(x|c)^s p(x)^(1-s) (09)."""
    return scale * log_density(mixture, points, label) + (1.0 - scale) * log_density(mixture, points)


def exact_x0(mixture: GaussianMixture, x_t: torch.Tensor, alpha_bar: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t, c] per sample (labels = K means "no label": E[x_0 | x_t], the posterior-weighted mix) (09).

    For one Gaussian class: mu_c + sqrt(ab) std_c^2 / (ab std_c^2 + 1 - ab) (x_t - sqrt(ab) mu_c).
    """
    means, stds, weights = mixture.tensors()
    x_t, ab = x_t.double(), alpha_bar.double()[:, None]
    gain = ab.sqrt() * stds[None] ** 2 / (ab * stds[None] ** 2 + (1.0 - ab))  # (n, K)
    per_class = means[None] + gain[..., None] * (x_t[:, None, :] - ab.sqrt()[..., None] * means[None])  # (n, K, 2)
    posterior = torch.softmax(component_log_densities(mixture, x_t, alpha_bar) + torch.log(weights), dim=1)
    unconditional = (posterior[..., None] * per_class).sum(1)
    known = labels < mixture.num_classes
    conditional = per_class[torch.arange(len(labels)), labels.clamp(max=mixture.num_classes - 1)]
    return torch.where(known[:, None], conditional, unconditional)


@dataclass(frozen=True)
class ToyConfig:
    """What the samplers read from a network's config: the class count and the null label."""

    num_classes: int

    @property
    def null_label(self) -> int:
        return self.num_classes


class ExactDenoiser(torch.nn.Module):
    """The exact v-prediction of a mixture's noised data, as a module the samplers call like a network (09).

    ``forward(x_t, t, labels)`` returns v = sqrt(ab) eps - sqrt(1 - ab) x_0 with x_0 = :func:`exact_x0`;
    ``labels = K`` (the null label) gives the unconditional prediction, as for a network trained with
    label dropout. ``blur`` > 0 makes a deliberately worse denoiser (every std multiplied by 1 + blur),
    the "bad version of itself" autoguidance needs.
    """

    def __init__(self, mixture: GaussianMixture, diffusion: GaussianDiffusion, blur: float = 0.0):
        super().__init__()
        if diffusion.config.prediction != "v":
            raise UserInputError("the exact denoiser predicts v: use a diffusion with prediction 'v'")
        if blur < 0:
            raise UserInputError(f"blur must be >= 0, got {blur}")
        self.mixture = mixture if blur == 0 else GaussianMixture(
            mixture.means, tuple(s * (1 + blur) for s in mixture.stds), mixture.weights)
        self.diffusion, self.config = diffusion, ToyConfig(mixture.num_classes)
        self.register_buffer("alpha_bar", diffusion.alpha_bar64.clone())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t][:, None]
        x0 = exact_x0(self.mixture, x_t, self.alpha_bar[t], labels)
        eps = (x_t.double() - ab.sqrt() * x0) / (1 - ab).sqrt()
        return (ab.sqrt() * eps - (1 - ab).sqrt() * x0).to(x_t.dtype)  # v, as diffusion.target defines it


def grid_points(limit: float, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bin edges (bins + 1,) of [-limit, limit] on each axis and the (bins^2, 2) bin centres, x fastest."""
    edges = torch.linspace(-limit, limit, bins + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return edges, torch.stack([x.flatten(), y.flatten()], dim=1)


def bin_probabilities(log_density_at_centres: torch.Tensor) -> torch.Tensor:
    """Normalised bin masses from an unnormalised log density at the bin centres (midpoint rule)."""
    return torch.softmax(log_density_at_centres.double(), dim=0)


def total_variation(samples: torch.Tensor, probabilities: torch.Tensor, edges: torch.Tensor) -> float:
    """Total variation distance between the samples' histogram and bin masses on the grid of ``edges`` (09).

    Samples outside the grid count as mass the target does not have there.
    """
    bins = len(edges) - 1
    samples = samples.double()
    inside = ((samples >= edges[0]) & (samples < edges[-1])).all(dim=1)
    column = torch.bucketize(samples[inside, 0], edges, right=True) - 1
    row = torch.bucketize(samples[inside, 1], edges, right=True) - 1
    counts = torch.bincount(row * bins + column, minlength=bins * bins).double() / len(samples)
    outside = 1.0 - counts.sum()
    return float(0.5 * ((counts - probabilities).abs().sum() + outside))
