"""Shared fixtures. The ``slow`` marker (notebooks, subprocesses) is declared in pyproject.toml;
``python -m pytest -q`` runs everything, ``-m "not slow"`` skips the slow tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfgutils.plumbing import mnist, paths


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
    raw = paths.DATASETS_DIR / "MNIST" / "raw"
    return frozenset(split for split, files in mnist.IDX_FILES.items()
                     if all((raw / name).is_file() for name, _ in files))


def git_status() -> str | None:
    """``git status --porcelain`` of the repository (untracked files listed), or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=paths.REPO_ROOT,
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None
    return result.stdout if result.returncode == 0 else None


@pytest.fixture(scope="session")
def ci_series(tmp_path_factory):
    """The whole series, run once per session the way the README says (``python -m cfgutils notebooks``) on the
    CI parameters; the notebook tests check what it recorded, the site tests build the site from it."""
    out = tmp_path_factory.mktemp("series")
    before = git_status()
    result = subprocess.run([sys.executable, "-m", "cfgutils", "notebooks", "--preset", "ci", "--out", str(out)],
                            capture_output=True, text=True, cwd=paths.REPO_ROOT, timeout=2400,
                            env={**os.environ, "CFGUTILS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return {"out": out, "result": result, "git_before": before, "git_after": git_status()}


#: Debian's Chromium, which the browser tests drive through Playwright (it cannot download a browser here)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]


def missing_browser() -> str | None:
    """Why a browser test cannot run here (no Chromium, no Playwright), or None when it can."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install playwright (it is in the test extra)"
    return None

