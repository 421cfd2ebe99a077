"""Every guidance rule by name: plain CFG, notebook 06's fixes and notebook 08's newer rules."""

from __future__ import annotations

from ..errors import UserInputError
from .guidance import Guidance, IntervalGuidance, ProjectedGuidance, RescaledGuidance, ThresholdGuidance
from .newer_guidance import (AutoGuidance, CFGPlusPlus, IndependentConditionGuidance, ScheduledGuidance,
                             ZeroStarGuidance)

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
