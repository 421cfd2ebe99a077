"""Dynamic thresholding of the guided x0 (Imagen). Paper: https://arxiv.org/abs/2205.11487"""

from __future__ import annotations

import torch

from ...errors import UserInputError, finite_number
from ..guidance import Guidance, per_sample


class ThresholdGuidance(Guidance):
    """Dynamic thresholding of the predicted x0 (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion
    Models with Deep Language Understanding" (Imagen), sec. 2.3) (06-guidance-variants).

    Per sample, q = the ``percentile`` quantile of |x0|; if q > 1, x0 is clipped to [-q, q] and divided by
    q. Saturated pixels are pulled inwards instead of piling up at +-1, as static clipping does. Imagen used
    p = 0.995; on MNIST, where most pixels are background at -1, that rescales whole images towards grey,
    so the default is lower (how it was chosen: ``benchmarks/README.md``).
    """

    name = "threshold"

    def __init__(self, percentile: float = 0.95):
        self.percentile = finite_number(percentile, "threshold percentile", 0.0, 1.0)
        if self.percentile == 0.0:
            raise UserInputError("threshold percentile must be in (0, 1], got 0")

    def finalize(self, x0, context):
        q = per_sample(torch.quantile(x0.flatten(1).abs().float(), self.percentile, dim=1).clamp_min(1.0), x0)
        q = q.to(x0.dtype)
        return torch.maximum(torch.minimum(x0, q), -q) / q

    def parameters(self):
        return {"percentile": self.percentile}
