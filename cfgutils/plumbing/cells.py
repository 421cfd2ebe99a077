"""Samples of a sweep's cells kept on disk, so that an interrupted long run resumes where it stopped (05).

A :class:`CellStore` is a folder of ``<scale>-seed<seed>.pt`` files (the images of one scale and seed, and
the share of predicted-x0 pixels outside [-1, 1]) and a ``settings.json`` naming what they were sampled
with. It behaves like the ``sample_cache`` dict of ``guidance_sweep``: a cell found there is not sampled
again. A folder that holds cells of other settings is refused, so samples of two runs never mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import UserInputError


class CellStore:
    """The sampled cells of one sweep, on disk; ``settings`` (JSON-able) must match the folder's own."""

    def __init__(self, folder: str | Path, settings: dict):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as it reads back
        recorded = self.folder / "settings.json"
        if recorded.is_file() and json.loads(recorded.read_text()) != self.settings:
            raise UserInputError(f"{self.folder} holds samples drawn with other settings; use another output "
                                 "folder (the same command resumes the run it holds)")

    def path(self, key) -> Path:
        """The file of cell ``key`` = (label, scale, seed); the label is not part of the name."""
        _, scale, seed = key
        return self.folder / f"s{float(scale):g}-seed{int(seed)}.pt"

    def __contains__(self, key) -> bool:
        return self.path(key).is_file()

    def __getitem__(self, key) -> tuple[torch.Tensor, float]:
        stored = torch.load(self.path(key), weights_only=True)
        return stored["images"], float(stored["outside"])

    def __setitem__(self, key, value) -> None:
        images, outside = value
        self.folder.mkdir(parents=True, exist_ok=True)
        recorded = self.folder / "settings.json"
        if not recorded.is_file():
            recorded.write_text(json.dumps(self.settings, indent=2) + "\n")
        handle = tempfile.NamedTemporaryFile(dir=self.folder, prefix=".cell.", suffix=".tmp", delete=False)
        try:
            with handle:
                torch.save({"images": images.detach().cpu().contiguous(), "outside": float(outside)}, handle)
            os.replace(handle.name, self.path(key))
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)

    def __len__(self) -> int:
        return len(list(self.folder.glob("s*-seed*.pt"))) if self.folder.is_dir() else 0
