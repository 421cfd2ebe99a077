"""Device choice with the cuda -> mps -> cpu fallback (introduced in the setup cell of every notebook)."""

from __future__ import annotations

import torch

from .errors import UserInputError


def pick_device(requested: str | None = "auto") -> torch.device:
    """Return ``requested`` as a torch.device; ``"auto"``/None picks cuda, then mps, then cpu (01-data)."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as error:
        raise UserInputError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {requested!r} requested but CUDA is not available here; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"device {requested!r} requested but MPS is not available here; use --device cpu.")
    return device
