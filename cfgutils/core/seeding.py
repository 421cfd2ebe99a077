"""Every random stream in cfgutils comes from a seed and an index: a chunk of samples, an epoch of batches.

One rule, so that the same seed gives the same pixels and the same batch order on every run and device.
"""

from __future__ import annotations

import torch


def derived_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for stream ``index`` of ``seed``, seeded with (seed * 1,000,003 + index) mod 2^63."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2 ** 63))


def epoch_permutation(n_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The batch order of one training epoch: a permutation of ``n_items`` from stream ``epoch`` of ``seed`` (03)."""
    return torch.randperm(n_items, generator=derived_generator(seed, epoch))


def batch_indices(step: int, n_items: int, batch_size: int, seed: int) -> torch.Tensor:
    """The indices of the batch of training ``step``: its slice of its epoch's permutation (03, 05)."""
    epoch, position = divmod(step, n_items // batch_size)
    return epoch_permutation(n_items, seed, epoch)[position * batch_size:(position + 1) * batch_size]
