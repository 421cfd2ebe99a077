"""Guidance-weight schedules: the weight ramps up as the noise falls. Paper: https://arxiv.org/abs/2404.13040"""

from __future__ import annotations

import math

from ...errors import one_of
from ..guidance import Guidance


#: schedule shape f(u) over the position u in (0, 1) of a step in the sampling run; each averages to 1
SCHEDULE_SHAPES = {
    "constant": lambda u: 1.0,
    "linear": lambda u: 2.0 * u,
    "cosine": lambda u: 1.0 - math.cos(math.pi * u),
}


def scheduled_weight(weight: float, shape: str, step_index: int, num_steps: int) -> float:
    """The value v f(u_k) of step k of K for a scheduled ``weight`` v (the scale s, or the weight w),
    u_k = (k + 1/2) / K; the mean over the K steps is v (08)."""
    return weight * SCHEDULE_SHAPES[shape]((step_index + 0.5) / num_steps)


class ScheduledGuidance(Guidance):
    """Guidance-weight schedules (Wang et al. 2024, "Analysis of Classifier-Free Guidance Weight Schedulers") (08).

    The paper writes guidance as eps_u + omega (eps_c - eps_u), the convention of the Stable Diffusion models it
    studies, so its omega is our s, and its increasing schedules ramp omega itself: step k of K uses
    s_k = s f(u_k) (see :func:`scheduled_weight`), f(u) = 2u (linear) or 1 - cos(pi u) (cosine), each averaging to
    1, so the mean scale over the run is the constant scale's. With the paper's convention (``schedules="s"``) the
    first steps are close to *unconditional* (s_k near 0) and guidance grows past s as the noise falls.
    ``schedules="w"`` ramps the weight w = s - 1 instead (1 + w f(u_k)): the first steps are close to
    *conditional*. The paper indexes the schedule by the noise level t; here it runs over the sampler's steps,
    which visit t in order. ``shape="constant"`` is plain CFG in both conventions. The default (linear, on w) was
    chosen on validation data among both shapes and both conventions (``benchmarks/README.md``).
    """

    name = "schedule"

    def __init__(self, shape: str = "linear", schedules: str = "w"):
        self.shape = one_of(shape, tuple(SCHEDULE_SHAPES), "schedule shape")
        self.schedules = one_of(schedules, ("s", "w"), "what the schedule ramps (s, the paper's; or w)")

    def effective_scale(self, scale, context):
        if self.schedules == "s":
            return scheduled_weight(scale, self.shape, context.step_index, context.num_steps)
        return 1.0 + scheduled_weight(scale - 1.0, self.shape, context.step_index, context.num_steps)

    def parameters(self):
        return {"shape": self.shape, "schedules": self.schedules}
