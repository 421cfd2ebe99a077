"""CFG rescale: guided x0 rescaled to the conditional one's spread. Paper: https://arxiv.org/abs/2305.08891"""

from __future__ import annotations

from ...errors import finite_number
from ..guidance import Guidance, per_sample


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
