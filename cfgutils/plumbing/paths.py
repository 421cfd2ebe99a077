"""Paths that resolve from the repository root, never from the working directory.

papermill, pytest and jupyter lab started from any folder agree on where data,
figures and runs live (introduced in notebook 01-data).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root: the folder that holds ``cfgutils/`` (works for editable installs).
#: ``CFGUTILS_ROOT`` overrides it, e.g. for a non-editable install.
REPO_ROOT = Path(os.environ.get("CFGUTILS_ROOT", Path(__file__).resolve().parents[2])).resolve()
DATA_DIR = REPO_ROOT / "data"
#: where the datasets' files are looked for (``MNIST/raw/``, ``FashionMNIST/raw/``) and downloaded to: ``data/``;
#: ``CFGUTILS_DATA_ROOT`` overrides it (an empty folder runs everything on what a fresh clone has)
DATASETS_DIR = Path(os.environ.get("CFGUTILS_DATA_ROOT") or DATA_DIR).resolve()
#: the committed gallery that the documents and the notebooks' markdown show; rewritten only on request
#: (``python -m cfgutils notebooks --update-figures``)
FIGURES_DIR = REPO_ROOT / "figures"
#: where runs write: executed notebooks, recorded results and figures (git-ignored)
OUTPUT_DIR = REPO_ROOT / "out"
OUTPUT_FIGURES_DIR = OUTPUT_DIR / "figures"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
#: Committed full runs of the studies (results, tables, meta with commands and wall times).
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
#: The committed full evaluation of the shipped model per dataset (`experiment classifier`, >= 1,000 samples per weight).
COMMITTED_EVALUATION = BENCHMARKS_DIR / "classifier-eval"
#: the committed full run of notebook 06's rules, one folder per dataset (experiment variants)
COMMITTED_VARIANTS = BENCHMARKS_DIR / "guidance-variants"
#: committed comparisons over three trained networks per recipe (experiment paired; benchmarks/training-seeds/run.sh)
COMMITTED_NETWORKS = BENCHMARKS_DIR / "training-seeds" / "compare"
RUNS_DIR = DATA_DIR / "runs"
PRETRAINED_DIR = DATA_DIR / "pretrained"



def _trained_and_shipped(name: str) -> tuple[Path, Path]:
    """Where notebook 03 and the command line write checkpoint ``name`` (the notebooks look there first), and
    where the repository ships one (what they fall back to)."""
    return DATA_DIR / "models" / name, PRETRAINED_DIR / name


TRAINED_MODEL, PRETRAINED_MODEL = _trained_and_shipped("cfg-unet.pt")
TRAINED_CLASSIFIER, PRETRAINED_CLASSIFIER = _trained_and_shipped("classifier.pt")
#: A second classifier, trained the same way from another seed: a second opinion on what the distances rank (05).
PRETRAINED_SECOND_CLASSIFIER = PRETRAINED_DIR / "classifier-seed1.pt"
#: The weaker model autoguidance guides with (notebook 08), and the model trained without label dropout.
PRETRAINED_GUIDE = PRETRAINED_DIR / "autoguide.pt"
PRETRAINED_NO_DROPOUT = PRETRAINED_DIR / "no-dropout.pt"
#: cfgutils' UNet trained at the reference study's recipe (notebook 07)
PRETRAINED_REFERENCE_RECIPE = PRETRAINED_DIR / "reference-recipe.pt"
#: The reference study's network (three training seeds) and classifier, rebuilt and trained here (notebook 07).
PRETRAINED_REFERENCE_DIR = PRETRAINED_DIR / "reference"
PRETRAINED_REFERENCE_NETWORKS = tuple(PRETRAINED_REFERENCE_DIR / f"seed{seed}.pt" for seed in (0, 1, 2))
PRETRAINED_REFERENCE_CLASSIFIER = PRETRAINED_REFERENCE_DIR / "classifier.pt"


def for_dataset(path: Path, dataset: str) -> Path:
    """``path`` for MNIST; the same file name in a ``fashion-mnist/`` subfolder for Fashion-MNIST (05)."""
    return path if dataset == "mnist" else path.parent / dataset / path.name


def figure_path(name: str, figures_dir: str | Path | None = None) -> Path:
    """Return ``<figures_dir>/<name>``, by default ``out/figures/<name>`` (creating the folder) (01-data)."""
    folder = Path(figures_dir) if figures_dir is not None else OUTPUT_FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
