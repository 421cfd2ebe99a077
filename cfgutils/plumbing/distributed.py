"""torchrun plumbing shared by training and sampling: one set-up that always tears down.

Under ``torchrun --nproc_per_node N -m cfgutils ...`` every process runs the same command; this module
joins them into a process group (gloo on a CPU, nccl on CUDA) and, however the command ends, leaves the
group again, so no process aborts at exit with work still pending.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from .device import pick_device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed(device_request: str | torch.device | None = "auto") -> Iterator[tuple[DistributedContext, torch.device]]:
    """Join the torchrun process group for the duration of a ``with`` block; a no-op for one process.

    Yields ``(context, device)``. When the block ends normally the processes meet at a barrier; however it
    ends (an error included), the process group is destroyed.
    """
    if isinstance(device_request, torch.device):
        device = device_request
    else:
        device = pick_device(device_request)
    if not launched_by_torchrun():
        yield DistributedContext(), device
        return
    import torch.distributed as dist

    context = DistributedContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                                 int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield context, device
        if owner:
            dist.barrier()  # reached only when the block ended normally: wait for the others' writes
    finally:
        if owner and dist.is_initialized():
            dist.destroy_process_group()


def my_chunks(n_chunks: int, context: DistributedContext) -> list[int]:
    """The chunk indices this process handles: dealt round-robin over the processes."""
    return list(range(context.rank, n_chunks, context.world_size))


def gather_chunks(mine: list[int], local: torch.Tensor, chunk_size: int, n_items: int,
                  context: DistributedContext) -> torch.Tensor | None:
    """Collect every process's chunks (``chunk_size`` items each, the last one shorter) on rank 0 in chunk order;
    None on the other ranks. ``local`` holds this process's chunks ``mine``, concatenated."""
    if context.world_size == 1:
        return local
    import torch.distributed as dist

    pieces: list = [None] * context.world_size
    dist.all_gather_object(pieces, (mine, local))
    if not context.is_main:
        return None
    by_chunk = {}
    for chunks, items in pieces:
        sizes = [min(chunk_size, n_items - chunk * chunk_size) for chunk in chunks]
        by_chunk.update(zip(chunks, items.split(sizes)))
    return torch.cat([by_chunk[chunk] for chunk in sorted(by_chunk)])
