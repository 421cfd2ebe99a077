"""CFG-Zero*: the negative output scaled by its projection; zeroed first steps. Paper: https://arxiv.org/abs/2503.18886"""

from __future__ import annotations

import torch

from ...errors import positive_int
from ..guidance import Guidance, GuidanceContext, classifier_free_guidance, per_sample


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
