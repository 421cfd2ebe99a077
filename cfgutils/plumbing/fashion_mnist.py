"""Fashion-MNIST: torchvision's folder, the Debian package dataset-fashion-mnist, or a download (01-data).

Debian re-compresses the gz files, so the files are verified by the sha256 of the *decompressed* IDX bytes.
There is no offline fallback: without the files the loader stops with a one-line :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .images import (DATASETS, IDX_COUNTS, DataError, ImageSplit, parse_idx, read_idx_bytes, to_model_range,
                     validation_from_train)

#: Fashion-MNIST file names and the sha256 of their decompressed IDX bytes (the Debian package re-compresses the
#: gz files, so their md5 differs from torchvision's while the IDX content is the official one)
FASHION_IDX_FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        ("train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        ("t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
}
#: where Debian's ``dataset-fashion-mnist`` puts the files (``dpkg -L dataset-fashion-mnist``)
FASHION_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


def fashion_folders(root: Path) -> tuple[Path, ...]:
    """Where Fashion-MNIST's IDX files are looked for, in order: data/FashionMNIST/raw/, then Debian's folder."""
    return (root / DATASETS["fashion-mnist"].folder / "raw", *FASHION_SYSTEM_DIRS)


def _idx_in(folder: Path, gz_name: str) -> Path | None:
    """The gz file ``gz_name`` in ``folder``, or its extracted copy, or None."""
    for candidate in (folder / gz_name, folder / gz_name[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    return None


def _read_verified(path: Path, sha256: str, expected_ndim: int) -> np.ndarray:
    """Parse an IDX file whose decompressed bytes must have the given sha256."""
    raw = read_idx_bytes(path)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DataError(f"{path}: not the official Fashion-MNIST file (sha256 of the decompressed bytes is "
                        f"{actual[:16]}..., expected {sha256[:16]}...); delete or replace it (nothing was deleted).")
    return parse_idx(raw, path, expected_ndim)


def _load_fashion_split(split: str, root: Path) -> ImageSplit | None:
    """The split from the first folder that holds both of its files, verified, or None."""
    (images_name, images_sha), (labels_name, labels_sha) = FASHION_IDX_FILES[split]
    for folder in fashion_folders(root):
        images_path, labels_path = _idx_in(folder, images_name), _idx_in(folder, labels_name)
        if images_path is None or labels_path is None:
            continue
        images = _read_verified(images_path, images_sha, 3)
        labels = _read_verified(labels_path, labels_sha, 1)
        where = f"{folder}, Debian package dataset-fashion-mnist" if folder in FASHION_SYSTEM_DIRS else str(folder)
        source = (f"Fashion-MNIST official {split} split ({IDX_COUNTS[split]:,} images, IDX files in {where}; "
                  "sha256 of the decompressed bytes verified)")
        return ImageSplit(to_model_range(images).unsqueeze(1), torch.as_tensor(labels.astype(np.int64)), source,
                          split, "fashion-mnist")
    return None


def _download_fashion_split(split: str, root: Path) -> bool:
    """Try torchvision's download of the split's gz files into data/FashionMNIST/raw/; True on success.

    Both files are downloaded and verified in a temporary folder first and moved only when both are good, so a
    failed download leaves the data folder as it was.
    """
    if os.environ.get("CFGUTILS_OFFLINE", "").strip() not in ("", "0"):
        return False
    try:
        from torchvision.datasets import FashionMNIST
        from torchvision.datasets.utils import download_url
    except ImportError:
        return False
    raw_dir = fashion_folders(root)[0]
    missing = [(name, sha256) for name, sha256 in FASHION_IDX_FILES[split] if not (raw_dir / name).exists()]
    if not missing:
        return True
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for name, sha256 in missing:
            for mirror in FashionMNIST.mirrors:
                try:
                    download_url(f"{mirror}{name}", root=tmp, filename=name)
                    if hashlib.sha256(read_idx_bytes(Path(tmp) / name)).hexdigest() == sha256:
                        break
                except Exception:  # noqa: BLE001 - any network or file failure means: try the next mirror
                    continue
            else:
                return False
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in missing:
            shutil.move(str(Path(tmp) / name), raw_dir / name)
    return True


def load_fashion_split(split: str, root: Path, download: bool) -> ImageSplit:
    source_split = "train" if split == "validation" else split
    loaded = _load_fashion_split(source_split, root)
    if loaded is None and download and _download_fashion_split(source_split, root):
        loaded = _load_fashion_split(source_split, root)
    if loaded is None:
        folders = " or ".join(f"{folder}/" for folder in fashion_folders(root))
        raise DataError(f"Fashion-MNIST {source_split} files are not in {folders} and could not be downloaded: "
                        "install them with `apt-get install dataset-fashion-mnist`, or go online.")
    return validation_from_train(loaded) if split == "validation" else loaded
