"""Independent condition guidance (ICG): a random label as the negative branch. Paper: https://arxiv.org/abs/2407.02687"""

from __future__ import annotations

import torch

from ...errors import positive_int
from ..guidance import Guidance


class IndependentConditionGuidance(Guidance):
    """Independent condition guidance, ICG (Sadat et al. 2024, "No Training, No Problem: Rethinking
    Classifier-Free Guidance for Diffusion Models") (08).

    The negative branch is the conditional prediction for a label drawn at random, independently of x_t:
    a stand-in for the unconditional prediction that needs no null label, so a model trained *without*
    label dropout, whose null label was never learned, can still be guided. It is a stand-in, not the same
    thing: the unconditional denoiser weighs the classes by how likely each is given x_t, a random label by
    their frequency (notebook 09 computes the difference exactly). Labels are drawn uniformly from the
    classes, fresh in every step, from a generator seeded by ``seed`` and the sampling chunk's seed (same
    pixels every run, different labels per chunk and sampling seed). For a model whose predictions ignore
    the label it is conditional sampling at every s.
    """

    name = "icg"

    def __init__(self, seed: int = 0):
        self.seed = positive_int(seed, "icg seed", minimum=0)

    def negative_labels(self, labels, null_label, context):
        if "icg_generator" not in context.state:
            chunk = context.state.get("chunk_generator")  # set by samplers.sample_chunk
            seed = self.seed if chunk is None else hash((self.seed, chunk.initial_seed())) % 2 ** 63
            context.state["icg_generator"] = torch.Generator().manual_seed(seed)
        generator = context.state["icg_generator"]
        return torch.randint(null_label, tuple(labels.shape), generator=generator).to(labels.device)

    def parameters(self):
        return {"seed": self.seed}
