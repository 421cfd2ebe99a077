"""Autoguidance: guide with a weaker version of the model. Paper: https://arxiv.org/abs/2406.02507"""

from __future__ import annotations

from ...errors import UserInputError
from ..guidance import Guidance


class AutoGuidance(Guidance):
    """Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself") (08).

    The negative branch is the *conditional* prediction of a weaker model of the same task (smaller and
    trained for less): x0 = x0_guide + s (x0_c - x0_guide). Where both models make the same error the
    difference cancels it; where the strong model knows better, guidance pushes further that way; the
    label is kept on both sides, so variety is not traded away as with the unconditional branch. With the
    model itself as guide it is conditional sampling at every s. The guide is a second network: two calls
    per step instead of one batch of 2n.
    """

    name = "autoguidance"

    def __init__(self, guide_model=None, guide_diffusion=None, guide_name: str = "guide"):
        if guide_model is None or guide_diffusion is None:
            raise UserInputError("autoguidance needs a guide model (--guide-model PATH)")
        self.guide = (guide_model, guide_diffusion)
        self.guide_name = str(guide_name)

    def negative_labels(self, labels, null_label, context):
        return labels

    def parameters(self):
        return {"guide_model": self.guide_name}
