"""Adaptive projected guidance (APG). Paper: https://arxiv.org/abs/2410.02416"""

from __future__ import annotations

from ...errors import finite_number
from ..guidance import Guidance, per_sample, per_sample_norm


class ProjectedGuidance(Guidance):
    """Adaptive projected guidance, APG (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
    Guidance Scales in Diffusion Models") (06-guidance-variants).

    The update d = x0_c - x0_u is (1) averaged with reverse momentum (d <- d + momentum * previous d, with a
    negative ``momentum``), (2) shrunk to an L2 norm of at most ``norm_threshold`` (0 = no limit), (3)
    split into its component parallel to x0_c, which mostly raises contrast and saturates, and the
    orthogonal rest; the result is x0_c + (s - 1) (d_orth + eta d_par). ``eta = 1``, ``momentum = 0`` and
    no norm threshold is plain CFG. The norm threshold is in pixels of a [-1, 1] image (a real MNIST digit
    has a norm of about 27, a Fashion-MNIST garment about 23); how the default was chosen: ``benchmarks/README.md``.
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
