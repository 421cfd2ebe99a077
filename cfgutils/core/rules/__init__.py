"""Every guidance rule by name, one file per rule with its paper linked (notebooks 06 and 08).

Plain CFG is :class:`cfgutils.core.guidance.Guidance` (Ho & Salimans 2021, https://arxiv.org/abs/2207.12598);
every other rule is a subclass that overrides one or two of its hooks, and reduces to plain CFG or to
conditional sampling in a tested special case (``tests/test_guidance_variants.py``, ``tests/test_newer_guidance.py``).
Notebook 06's fixes act on the guided prediction:

==========  ============================================================  ==================================
rule        what changes                                                  special case
==========  ============================================================  ==================================
rescale     the guided x0 is rescaled to the conditional one's spread     phi = 0: CFG
interval    the scale applies only inside an interval of noise levels      an interval holding every step: CFG
threshold   the guided x0 is clipped at a per-sample quantile              quantile <= 1: CFG
apg         the update's part parallel to x0_c is damped, its norm capped  eta = 1, no cap, no momentum: CFG
==========  ============================================================  ==================================

Notebook 08's newer rules change what guidance is measured against, or how the sampler uses it:

============  ===========================================  ==============================  ===================
rule          what changes                                 network calls per step          special case
============  ===========================================  ==============================  ===================
autoguidance  negative branch = a weaker model, same label  2 (model + guide, two calls)    guide = model: cond.
cfgpp         sampler re-noises with the negative's noise   2 (one batch of 2n)             lambda = 0: uncond.
icg           negative branch = a random label              2 (one batch of 2n)             label-blind: cond.
schedule      the weight ramps up as the noise falls        2 (one batch of 2n)             constant: CFG
zerostar      negative output scaled by its projection;     2 (one batch of 2n)             alpha* = 1: CFG
              output 0 in the first steps
============  ===========================================  ==============================  ===================
"""

from __future__ import annotations

from ...errors import UserInputError
from ..guidance import Guidance
from .apg import ProjectedGuidance
from .autoguidance import AutoGuidance
from .cfgpp import CFGPlusPlus, cfgpp_scale_factors
from .icg import IndependentConditionGuidance
from .interval import IntervalGuidance
from .rescale import RescaledGuidance
from .schedule import SCHEDULE_SHAPES, ScheduledGuidance, scheduled_weight
from .threshold import ThresholdGuidance
from .zerostar import ZeroStarGuidance, zero_star_alpha

__all__ = ["GUIDANCES", "VARIANTS_06", "make_guidance", "AutoGuidance", "CFGPlusPlus", "IndependentConditionGuidance",
           "IntervalGuidance", "ProjectedGuidance", "RescaledGuidance", "ScheduledGuidance", "ThresholdGuidance",
           "ZeroStarGuidance", "SCHEDULE_SHAPES", "cfgpp_scale_factors", "scheduled_weight", "zero_star_alpha"]

#: the guidance rules by name; the first is the default everywhere
GUIDANCES: dict[str, type[Guidance]] = {
    "cfg": Guidance, "rescale": RescaledGuidance, "interval": IntervalGuidance, "threshold": ThresholdGuidance,
    "apg": ProjectedGuidance, "autoguidance": AutoGuidance, "cfgpp": CFGPlusPlus,
    "icg": IndependentConditionGuidance, "schedule": ScheduledGuidance, "zerostar": ZeroStarGuidance,
}

#: the rules of notebook 06 (they act on the guided prediction and need nothing but the model)
VARIANTS_06 = ("cfg", "rescale", "interval", "threshold", "apg")


def make_guidance(name: str = "cfg", **parameters) -> Guidance:
    """A guidance rule by name (one of :data:`GUIDANCES`) with its parameters (06, 08)."""
    if name not in GUIDANCES:
        raise UserInputError(f"unknown guidance {name!r}: use one of {', '.join(GUIDANCES)}")
    try:
        return GUIDANCES[name](**parameters)
    except TypeError as error:
        raise UserInputError(f"guidance {name!r} does not take {sorted(parameters)}: {error}") from error
