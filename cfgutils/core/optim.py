"""Optimisation pieces shared by both trainers: learning-rate schedules, AdamW, the EMA of the weights.

Everything here depends on the step number only, never on wall time or the run's history, which is
what makes a resumed run bit-identical to an uninterrupted one (notebook 03-train).
"""

from __future__ import annotations

import math

import torch


def scheduled_lr(step: int, peak: float, warmup_steps: int, shape: str, total_steps: int | None = None,
                 decay_every: int | None = None) -> float:
    """The learning rate at 0-based ``step``: a linear warm-up to ``peak``, then ``shape`` (03-train).

    ``constant``; ``cosine`` or ``linear`` decay to 0 at ``total_steps``; ``exponential``: 10x smaller
    every ``decay_every`` steps (independent of the run's length).
    """
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if shape == "constant":
        return peak
    if shape == "exponential":
        return peak * 0.1 ** ((step - warmup_steps) / decay_every)
    progress = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    if shape == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (1 - progress)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Use ``lr`` for every parameter group from the next ``optimizer.step()`` on."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: torch.nn.Module, lr: float, device: torch.device, weight_decay: float = 0.0,
                   beta2: float = 0.999, fused: bool = True) -> torch.optim.AdamW:
    """AdamW; with ``fused``, the one-kernel-for-all-tensors version where the device has it (CPU, CUDA)."""
    use_fused = True if fused and device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, beta2), weight_decay=weight_decay, fused=use_fused)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay after ``step`` updates: min(decay, (1 + step) / (10 + step)), so early weights fade fast (03-train).

    The warm-up reaches ``decay`` only after (10 decay - 1) / (1 - decay) steps (8,991 for 0.999):
    :func:`effective_ema_decay` says what a shorter run ends with.
    """
    return min(decay, (1 + step) / (10 + step))


def effective_ema_decay(steps: int, decay: float) -> float:
    """The EMA decay of the last update of a ``steps``-step run (the nominal ``decay`` or less) (03-train)."""
    return ema_decay_at(max(steps - 1, 0), decay)


def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, for all parameters in one call; buffers (BatchNorm's running
    statistics) are copied, so the EMA network normalises as the trained one does (03-train)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema_model.parameters()), list(model.parameters()), 1.0 - decay)
        for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
