"""The two ablation studies: the collapse ladder changes one factor per rung; both commands on tiny grids."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cfgutils.errors import UserInputError
from cfgutils.plumbing.config import resolve_config
from cfgutils.workflows.ablations import checkpoint_name, collapse_ladder, label_dropout_grid, select

CLASSIFIER = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "classifier.pt"


def _state(rung):
    return rung.config(), rung.sampler, rung.ema, rung.scorer


def test_the_ladder_runs_from_the_faithful_reproduction_to_ours_one_factor_at_a_time():
    rungs = collapse_ladder()
    first, last = rungs[0], rungs[-1]
    assert first.config() == resolve_config("reference") and first.config()["model"]["architecture"] == "reference"
    assert (first.sampler.sampler, first.sampler.resolved_steps(), first.sampler.clip_x0, first.sampler.clamp_output,
            first.ema, first.scorer) == ("ancestral", 999, False, False, False, "reference")
    assert last.config() == resolve_config("default") and last.ema and last.sampler.sampler == "dpmpp"
    assert last.scorer == "ours" and last.sampler.clip_x0 and last.sampler.clamp_output
    for before, after in zip(rungs, rungs[1:]):
        changed = [a != b for a, b in zip(_state(before), _state(after))]
        assert sum(changed) == 1, (after.name, changed)  # exactly one of: training config, sampler, weights, scorer
    assert [r.name for r in rungs][:3] == ["reference", "clamp", "classifier"]
    assert {"ddpm", "ddim", "dpmpp", "ema", "unet", "v", "min-snr", "width"} <= {r.name for r in rungs}
    assert len({r.name for r in rungs}) == len(rungs)
    # objective changes are two rungs: v-prediction first, then min-SNR weights
    names = [r.name for r in rungs]
    v, snr = rungs[names.index("v")].config()["diffusion"], rungs[names.index("min-snr")].config()["diffusion"]
    assert (v["prediction"], v["loss_weighting"], snr["prediction"], snr["loss_weighting"]) == (
        "v", "uniform", "v", "min-snr")


def test_select_and_the_dropout_grid():
    assert [r.name for r in select(collapse_ladder(), ["dpmpp", "reference"])] == ["reference", "dpmpp"]
    with pytest.raises(UserInputError, match="unknown factor bogus"):
        select(collapse_ladder(), ["bogus"])
    with pytest.raises(UserInputError, match="empty"):
        select(collapse_ladder(), [])
    rates = [r.config()["train"]["p_uncond"] for r in label_dropout_grid((0, 0.3))]
    assert rates == [0.0, 0.3]
    assert checkpoint_name(resolve_config("default")) == checkpoint_name(resolve_config("default"))
    assert checkpoint_name(resolve_config("default")) != checkpoint_name(label_dropout_grid((0,))[0].config())


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cfgutils", "experiment", *map(str, args)], capture_output=True,
                          text=True, env={**__import__("os").environ, "CFGUTILS_OFFLINE": "1"})


@pytest.mark.parametrize("args, message", [
    (["collapse", "--factors", "bogus"], "unknown factor bogus"),
    (["collapse", "--factors"], "the list of factors is empty"),
    (["collapse", "--weights"], "the list of guidance scales is empty"),
    (["collapse", "--ddpm-n-per-class", "1"], "DDPM samples per class must be an integer >= 2"),
    (["collapse", "--train-seeds", "0", "0"], "--train-seeds must be distinct"),
    (["collapse", "--dataset", "fashion-mnist"], "the reference study's classifier reads MNIST only"),
    (["label-dropout", "--rates", "1.5"], "label-dropout rate must be a number in [0, 1]"),
    (["label-dropout", "--rates"], "the list of label-dropout rates is empty"),
])
def test_bad_study_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = cli(args[0], CLASSIFIER, out, *args[1:], "--models-dir", tmp_path / "models")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "models").exists()


TINY = ["--n-per-class", "3", "--seeds", "0", "1", "--train-steps", "1", "--max-sampler-steps", "2"]


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_collapse_study_on_a_tiny_grid(tmp_path):
    out, models = tmp_path / "collapse", tmp_path / "models"
    result = cli("collapse", CLASSIFIER, out, "--factors", "reference", "clamp", "classifier", "ddpm", "ema",
                 "--weights", "0", "10", *TINY, "--ddpm-n-per-class", "2", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert [(r["configuration"], r["w"], r["weights"], r["sampler"], r["clip_x0"], r["clamp_output"], r["scorer"])
            for r in rows[::2]] == [
        ("reference", "0.0", "raw", "ancestral", "False", "False", "reference"),
        ("clamp", "0.0", "raw", "ancestral", "False", "True", "reference"),
        ("classifier", "0.0", "raw", "ancestral", "False", "True", "ours"),
        ("ddpm", "0.0", "raw", "ddpm", "True", "True", "ours"), ("ema", "0.0", "ema", "dpmpp", "True", "True", "ours")]
    assert all(float(r["accuracy_low"]) < float(r["accuracy_high"]) and r["seeds"] == "2" for r in rows)
    # the 1,000-step cells take --ddpm-n-per-class 2 samples per digit, the others --n-per-class 3
    assert [r["n"] for r in rows[::2]] == ["20.0", "20.0", "20.0", "20.0", "30.0"]
    # the first three configurations score the same samples: the same overshoot, other scores
    by = {(r["configuration"], r["w"]): r for r in rows}
    assert by[("reference", "10.0")]["x0_outside"] == by[("clamp", "10.0")]["x0_outside"]
    assert by[("reference", "10.0")]["frechet_distance"] != by[("clamp", "10.0")]["frechet_distance"]
    assert {p.name for p in out.iterdir()} == {"results.csv", "table.md", "accuracy.png", "frechet.png",
                                              "x0_outside.png", "strips.png", "strips.npz", "settings.json",
                                              "meta.json"}
    table = (out / "table.md").read_text()
    assert "published accuracy" in table and "0.385" in table and "scored by" in table
    assert len(list(models.glob("model-*.pt"))) == 1  # every rung here samples the reference rung's network
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rungs"] == ["reference", "clamp", "classifier", "ddpm", "ema"] and meta["ddpm_n_per_class"] == 2
    assert meta["trained_here"]["reference"] and not meta["trained_here"]["ema"]
    assert meta["training_data"] and "mnist" in meta["reference_data"].lower()
    assert meta["reference_classifier"].endswith("reference/classifier.pt") and meta["train_seeds"] == [0]


@pytest.mark.slow
def test_label_dropout_study_on_a_tiny_grid(tmp_path):
    out = tmp_path / "dropout"
    result = cli("label-dropout", CLASSIFIER, out, "--rates", "0", "0.2", "--weights", "-1", "0", *TINY,
                 "--models-dir", tmp_path / "models")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    # without label dropout there is no unconditional model: only s = 1 (w = 0) is sampled
    assert [(r["rung"], r["w"], r["p_uncond"]) for r in rows] == [
        ("p=0", "0.0", "0.0"), ("p=0.2", "-1.0", "0.2"), ("p=0.2", "0.0", "0.2")]
    assert (out / "strips.png").is_file() and (out / "meta.json").is_file()
    assert (out / "no-dropout.png").is_file()  # the rate-0 model guided anyway, to show why it fails
    assert "how much label dropout is enough" in (out / "table.md").read_text().lower()
    assert "no unconditional model" in (out / "table.md").read_text()


@pytest.mark.slow
def test_a_study_resumes_by_configuration_and_refuses_other_settings(tmp_path):
    out, models = tmp_path / "collapse", tmp_path / "models"
    base = ["--weights", "10", *TINY, "--ddpm-n-per-class", "2", "--models-dir", models]
    first = cli("collapse", CLASSIFIER, out, "--factors", "dpmpp", *base)
    assert first.returncode == 0, first.stderr
    second = cli("collapse", CLASSIFIER, out, "--factors", "dpmpp", "ema", *base)
    assert second.returncode == 0, second.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert [run["configurations"] for run in meta["runs"]] == [["dpmpp"], ["ema"]]  # dpmpp was not sampled again
    assert [r["configuration"] for r in _rows(out)] == ["dpmpp", "ema"]
    before = (out / "results.csv").read_text()
    other = cli("collapse", CLASSIFIER, out, "--factors", "dpmpp", "--weights", "5", *base[2:])
    assert other.returncode == 2 and "holds results of a study with other settings" in other.stderr
    assert (out / "results.csv").read_text() == before
