"""Fashion-MNIST through the layers: loader resolution and checks, class names, a tiny training and sampling
run, checkpoints that record their dataset, and refusals when model, classifier and dataset disagree.

Tests that need the official files skip (each on its own) when the Debian package ``dataset-fashion-mnist`` is
not installed; ``.ci/run`` installs it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sample_cli import cli
from test_train import TINY_OPTS

from cfgutils.errors import UserInputError
from cfgutils.plumbing import checkpoint as ckpt
from cfgutils.plumbing import data, fashion_mnist, paths
from cfgutils.plumbing.config import resolve_config
from cfgutils.plumbing.data import DataError, ImageSplit, class_index, dataset_info, load_dataset
from cfgutils.workflows.classifier import load_classifier
from cfgutils.workflows.classifier_training import save_classifier, train_classifier
from cfgutils.workflows.experiments import check_same_dataset
from cfgutils.workflows.train import train

SYSTEM_DIR = fashion_mnist.FASHION_SYSTEM_DIRS[0]
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")


def package_installed() -> bool:
    return all((SYSTEM_DIR / name).is_file() for files in fashion_mnist.FASHION_IDX_FILES.values() for name, _ in files)


needs_package = pytest.mark.skipif(not package_installed(),
                                   reason=f"{SYSTEM_DIR} is absent: apt-get install dataset-fashion-mnist")


@pytest.fixture
def no_system_folder(monkeypatch, tmp_path):
    """The Debian folder looked for in an empty place, so only ``root`` can provide the files."""
    monkeypatch.setattr(fashion_mnist, "FASHION_SYSTEM_DIRS", (tmp_path / "no-such-package",))


# --- names and errors ---------------------------------------------------------------------------

def test_datasets_carry_their_class_names():
    assert dataset_info("fashion-mnist").class_names == FASHION_NAMES
    assert dataset_info("mnist").class_names == tuple("0123456789")
    assert dataset_info("fashion-mnist").num_classes == 10 and dataset_info("fashion-mnist").item == "garment"


@pytest.mark.parametrize("value, index", [("7", 7), (3, 3), ("Sneaker", 7), ("ankle boot", 9), (" t-shirt/top ", 0)])
def test_class_by_index_or_name(value, index):
    assert class_index(value, "fashion-mnist") == index


@pytest.mark.parametrize("value, dataset, message", [
    ("shoe", "fashion-mnist", "unknown Fashion-MNIST class 'shoe': use an index 0-9 or one of T-shirt/top"),
    ("10", "fashion-mnist", "class 10 is out of range"),
    ("Sneaker", "mnist", "unknown MNIST class 'Sneaker'"),
])
def test_bad_class_is_one_line(value, dataset, message):
    with pytest.raises(UserInputError, match=message) as error:
        class_index(value, dataset)
    assert "\n" not in str(error.value)


def test_unknown_dataset_is_one_line(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar10': use one of mnist, fashion-mnist.$"):
        load_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(UserInputError, match="unknown dataset"):
        resolve_config(overrides={"train.dataset": "cifar10"})


def test_nothing_resolves_says_how_to_get_the_files(tmp_path, no_system_folder, offline):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist`, or go online") as error:
        load_dataset("fashion-mnist", "test", root=tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "FashionMNIST").exists()  # nothing written


def test_wrong_content_is_reported_and_kept(tmp_path, no_system_folder):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((3, 28, 28), np.uint8)
    for name, array in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        (raw / name).write_bytes(gzip.compress(header + array.tobytes()))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not the official Fashion-MNIST file"):
        load_dataset("fashion-mnist", "test", root=tmp_path, download=False)
    assert (raw / "t10k-images-idx3-ubyte.gz").is_file()


# --- the official files ---------------------------------------------------------------------------

@needs_package
def test_official_splits_from_the_debian_package(tmp_path):
    test = load_dataset("fashion-mnist", "test", root=tmp_path, download=False)
    assert test.dataset == "fashion-mnist" and test.class_names == FASHION_NAMES and len(test) == 10_000
    assert "dataset-fashion-mnist" in test.source and "sha256 of the decompressed bytes" in test.source
    assert data.class_counts(test.labels).tolist() == [1000] * 10
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.min() == -1 and test.images.max() == 1
    validation = load_dataset("fashion-mnist", "validation", root=tmp_path, download=False)
    assert data.class_counts(validation.labels).tolist() == [100] * 10 and validation.split == "validation"


@needs_package
def test_repository_folder_comes_first_and_recompression_does_not_matter(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in fashion_mnist.FASHION_IDX_FILES["test"]:  # re-compressed at another level: other gz bytes, same IDX bytes
        original = (SYSTEM_DIR / name).read_bytes()
        (raw / name).write_bytes(gzip.compress(gzip.decompress(original), compresslevel=1))
        assert (raw / name).read_bytes() != original
    loaded = load_dataset("fashion-mnist", "test", root=tmp_path, download=False)
    assert f"IDX files in {raw};" in loaded.source and len(loaded) == 10_000
    from_package = load_dataset("fashion-mnist", "test", root=tmp_path / "elsewhere", download=False)
    assert torch.equal(loaded.images, from_package.images) and torch.equal(loaded.labels, from_package.labels)


@needs_package
def test_tiny_training_and_sampling_run(tmp_path):
    full = load_dataset("fashion-mnist", "train", download=False)
    split = ImageSplit(full.images[:64], full.labels[:64], full.source + " [first 64]", "train", "fashion-mnist")
    path = tmp_path / "fashion.pt"
    config = resolve_config(opts=TINY_OPTS, overrides={"train.steps": 3, "train.dataset": "fashion-mnist"})
    train(config, split, checkpoint_path=path, progress=False)
    payload = ckpt.load_checkpoint(path, ckpt.MODEL_KIND)
    assert payload["config"]["train"]["dataset"] == "fashion-mnist"
    assert payload["metadata"]["dataset"] == "fashion-mnist" and payload["metadata"]["class_names"] == list(FASHION_NAMES)
    assert ckpt.load_model(path, "cpu").dataset == "fashion-mnist"

    out = tmp_path / "sneakers"
    result = cli("sample", path, "Sneaker", out, "--n", "3", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("sample_*_class7.png"))) == 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "fashion-mnist" and meta["class_names"][7] == "Sneaker"
    assert np.load(out / "samples.npz")["labels"].tolist() == [7] * 3

    refused = tmp_path / "refused"
    result = cli("sample", path, "3", refused, "--dataset", "mnist", "--steps", "2")
    assert result.returncode == 2 and "was trained on Fashion-MNIST, not MNIST" in result.stderr
    assert not refused.exists()
    result = cli("sample", path, "Cat", refused, "--steps", "2")
    assert result.returncode == 2 and "unknown Fashion-MNIST class 'Cat'" in result.stderr

    mnist_config = resolve_config(opts=TINY_OPTS, overrides={"train.steps": 6})
    with pytest.raises(UserInputError, match="was trained on fashion-mnist; it cannot continue on mnist"):
        train(mnist_config, checkpoint_path=tmp_path / "other.pt", resume_from=path, progress=False)
    with pytest.raises(UserInputError, match="the config trains on mnist"):
        train(mnist_config, split, progress=False)


@needs_package
def test_classifier_records_its_dataset_and_mismatches_are_refused(tmp_path, monkeypatch):
    full = load_dataset("fashion-mnist", "train", download=False)
    split = ImageSplit(full.images[:96], full.labels[:96], "first 96", "train", "fashion-mnist")
    result = train_classifier(split, steps=2, batch_size=16, progress=False)
    path = save_classifier(tmp_path / "classifier.pt", result)
    loaded = load_classifier(path, "cpu")
    assert loaded.dataset == "fashion-mnist" and loaded.metadata["class_names"] == list(FASHION_NAMES)

    mnist_model = ckpt.load_model(paths.PRETRAINED_MODEL, "cpu")
    with pytest.raises(UserInputError, match="was trained on Fashion-MNIST, not MNIST"):
        check_same_dataset(mnist_model, loaded)
    with pytest.raises(UserInputError, match="cannot continue on mnist"):
        train_classifier(ImageSplit(split.images, split.labels, "x", "train"), steps=4, resume_from=path,
                         progress=False)


def test_shipped_fashion_checkpoints_say_what_they_are():
    model = ckpt.load_model(paths.for_dataset(paths.PRETRAINED_MODEL, "fashion-mnist"), "cpu")
    classifier = load_classifier(paths.for_dataset(paths.PRETRAINED_CLASSIFIER, "fashion-mnist"), "cpu")
    assert model.dataset == classifier.dataset == "fashion-mnist"
    assert "optimizer" not in torch.load(model.path, weights_only=True)["state"]  # EMA weights only
    assert classifier.metadata["test_accuracy"] >= 0.90 and "Fashion-MNIST official test" in \
        classifier.metadata["test_source"]
    assert ckpt.find_model(None, "fashion-mnist").parent.name == "fashion-mnist"


@pytest.mark.parametrize("value", [["mnist"], 3])
def test_dataset_names_that_are_not_strings_are_one_line_errors(value):
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_info(value)
    with pytest.raises(UserInputError, match="unknown dataset"):
        resolve_config(overrides={"train.dataset": value})


@needs_package
def test_a_failed_download_leaves_the_data_folder_as_it_was(tmp_path, monkeypatch):
    """The first file downloads and verifies, the second fails: nothing may land in data/FashionMNIST/raw/."""
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, root, filename, md5=None):
        calls.append(filename)
        if "images" not in filename:
            raise OSError("network unreachable")
        (Path(root) / filename).write_bytes((SYSTEM_DIR / filename).read_bytes())  # the real, verifiable file

    monkeypatch.delenv("CFGUTILS_OFFLINE", raising=False)
    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    monkeypatch.setattr(fashion_mnist, "FASHION_SYSTEM_DIRS", (tmp_path / "no-such-package",))
    with pytest.raises(DataError, match="could not be downloaded"):
        load_dataset("fashion-mnist", "test", root=tmp_path)
    assert calls and any("labels" in name for name in calls)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


@needs_package
def test_autoguidance_refuses_a_guide_of_another_dataset(tmp_path):
    result = cli("sample", paths.for_dataset(paths.PRETRAINED_MODEL, "fashion-mnist"), "Bag", tmp_path / "out",
                 "--guidance", "autoguidance", "--steps", "2", "--n", "1")
    assert result.returncode == 2 and "the guide model" in result.stderr
    assert "was trained on MNIST, not Fashion-MNIST: pass --guide-model" in result.stderr
    assert not (tmp_path / "out").exists()
