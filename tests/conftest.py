"""Shared fixtures. The ``slow`` marker (notebooks, subprocesses) is declared in pyproject.toml;
``python -m pytest -q`` runs everything, ``-m "not slow"`` skips the slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfgutils.plumbing import data, paths


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root, as the library resolves it."""
    return paths.REPO_ROOT


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download attempts: ``CFGUTILS_OFFLINE=1`` for this test and any kernel or subprocess it starts."""
    monkeypatch.setenv("CFGUTILS_OFFLINE", "1")


@pytest.fixture(scope="session")
def official_splits() -> frozenset[str]:
    """The splits whose official gz files are in the repository's data/MNIST/raw/ (CI copies the test split)."""
    raw = paths.DATA_DIR / "MNIST" / "raw"
    return frozenset(split for split, files in data.IDX_FILES.items()
                     if all((raw / name).is_file() for name, _ in files))
