"""Device choice with the cuda -> mps -> cpu fallback (introduced in the setup cell of every notebook)."""

from __future__ import annotations

import torch

from ..errors import UserInputError


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


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS (03-train).

    A training step frees and re-allocates the same activation buffers every step. By default glibc hands
    large blocks back to the OS, and the next step pays a page fault per 4 KiB when it touches them again.
    This keeps them in the process (memory stays at the peak of one step); ``benchmarks/README.md`` shows
    what it saves. Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    Process-wide and harmless to call more than once; :func:`cfgutils.workflows.train.train` calls it on a CPU.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    keep = 1 << 30  # 1 GiB: never trim the heap top below this, pad growth generously
    ok = mallopt(m_trim_threshold, keep) and mallopt(m_top_pad, 64 << 20)
    return bool(ok and mallopt(m_mmap_threshold, 32 << 20))  # 32 MiB: the largest glibc accepts
