"""The notebooks' one setup call: what it resolves, what it writes, and how it refuses a missing checkpoint."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cfgutils.errors import UserInputError  # noqa: E402
from cfgutils.plumbing import paths  # noqa: E402
from cfgutils.presentation.chapter import setup  # noqa: E402


def test_setup_without_models_prepares_folders_and_says_so_in_one_line(tmp_path, capsys):
    chapter = setup("01-data", "fashion-mnist", output_dir=tmp_path / "run", figures_dir=tmp_path / "figures",
                    seed=3, sampler="ddim")
    said = capsys.readouterr().out.strip()
    assert "\n" not in said and "Fashion-MNIST" in said and "ddim, 50 steps" in said
    assert (tmp_path / "run").is_dir() and chapter.loaded is None and chapter.classifier is None
    assert chapter.prefix == "01-data-fashion-mnist" and chapter.item == "garment"
    assert chapter.class_index("Sneaker") == 7 and chapter.names[7] == "Sneaker"
    drawn = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(3))  # the setup seeded torch's generator


def test_figures_are_named_by_notebook_and_recorded_in_the_summary(tmp_path):
    chapter = setup("04-cfg-sampling", output_dir=tmp_path / "run", figures_dir=tmp_path / "figures")
    fig, ax = plt.subplots()
    first = chapter.save(ax, "grid")  # an axes is saved as its figure
    plt.close(fig)
    gif = chapter.figure_path("trajectory", ".gif")
    assert first == (tmp_path / "figures" / "04-cfg-sampling-grid.png").resolve() and first.is_file()
    assert gif.name == "04-cfg-sampling-trajectory.gif" and gif.parent == first.parent
    summary = json.loads(chapter.write_summary(value=torch.tensor(0.5), scales=[0, 1]).read_text())
    assert summary == {"notebook": "04-cfg-sampling", "dataset": "mnist", "value": 0.5, "scales": [0, 1],
                       "figures": [str(first), str(gif)]}


def test_setup_loads_the_shipped_model_and_refuses_a_missing_checkpoint(tmp_path, capsys):
    shipped = paths.PRETRAINED_MODEL
    if not shipped.is_file():
        pytest.skip("no shipped model")
    chapter = setup("04-cfg-sampling", model=None, output_dir=tmp_path / "run", device="cpu")
    assert chapter.loaded.path.resolve() in {shipped.resolve(), paths.TRAINED_MODEL.resolve()}
    assert "step" in capsys.readouterr().out
    summary = json.loads(chapter.write_summary().read_text())
    assert summary["checkpoint"] == str(chapter.loaded.path) and summary["model_data_source"]
    with pytest.raises(UserInputError, match="does not exist"):
        setup("04-cfg-sampling", model=tmp_path / "missing.pt", output_dir=tmp_path / "other")
    assert not (tmp_path / "other").exists()  # a refused setup writes nothing
    with pytest.raises(UserInputError, match="unknown dataset"):
        setup("04-cfg-sampling", "cifar10", output_dir=tmp_path / "third")
    assert not (tmp_path / "third").exists()


def test_setup_trains_a_classifier_only_where_none_exists(tmp_path, monkeypatch, capsys):
    """05's setup trains the default classifier when there is none (here a few steps), saves it where the
    notebooks look first, and loads it; with a classifier present it only loads it."""
    monkeypatch.setattr(paths, "TRAINED_CLASSIFIER", tmp_path / "models" / "classifier.pt")
    monkeypatch.setattr(paths, "PRETRAINED_CLASSIFIER", tmp_path / "pretrained" / "classifier.pt")
    chapter = setup("05-classifier-eval", classifier=None, output_dir=tmp_path / "run", device="cpu",
                    train_missing_classifier=True, classifier_steps=2)
    assert "training one" in capsys.readouterr().out
    assert chapter.classifier.path == tmp_path / "models" / "classifier.pt" and chapter.classifier.metadata["step"] == 2
    again = setup("05-classifier-eval", classifier=None, output_dir=tmp_path / "run", device="cpu",
                  train_missing_classifier=True, classifier_steps=2)
    assert "training" not in capsys.readouterr().out and again.classifier.path == chapter.classifier.path


def test_the_summary_records_the_setup_and_tables_as_rows(tmp_path):
    """What the setup resolved (models, their data, the sampler settings) is recorded without the notebook
    repeating it; a table is recorded as its rows, a named index as a column."""
    import pandas as pd

    shipped = paths.PRETRAINED_MODEL
    if not shipped.is_file() or not paths.PRETRAINED_CLASSIFIER.is_file():
        pytest.skip("no shipped model")
    chapter = setup("05-classifier-eval", model=shipped, classifier=paths.PRETRAINED_CLASSIFIER, sampler="ddim",
                    steps=7, output_dir=tmp_path / "run", device="cpu")
    provenance = chapter.provenance()
    assert provenance["model"] == str(chapter.loaded.path) and provenance["classifier"] == str(chapter.classifier.path)
    assert (provenance["sampler"], provenance["steps"], provenance["dataset"]) == ("ddim", 7, "mnist")
    table = pd.DataFrame({"w": [0.0, 1.0], "accuracy": [0.5, float("nan")]})
    summary = json.loads(chapter.write_summary(table=table, indexed=table.set_index("w"), path=tmp_path).read_text())
    assert summary["sampler"]["steps"] == 7 and summary["classifier_data_source"] and summary["model_data_source"]
    assert summary["table"] == [{"w": 0.0, "accuracy": 0.5}, {"w": 1.0, "accuracy": None}]
    assert summary["indexed"] == summary["table"] and summary["path"] == str(tmp_path)


def test_further_models_load_by_shipped_name_or_path(tmp_path):
    if not paths.PRETRAINED_NO_DROPOUT.is_file() or not paths.PRETRAINED_REFERENCE_RECIPE.is_file():
        pytest.skip("no shipped model")
    chapter = setup("08-newer-guidance", output_dir=tmp_path / "run", device="cpu")
    by_name = chapter.model("no-dropout")
    assert by_name.path == paths.PRETRAINED_NO_DROPOUT and by_name.config["train"]["p_uncond"] == 0.0
    ema = chapter.model("reference-recipe")
    raw = chapter.model(paths.PRETRAINED_REFERENCE_RECIPE, raw_weights=True)
    assert any(not torch.equal(a, b) for a, b in zip(raw.model.state_dict().values(),
                                                     ema.model.state_dict().values()))  # raw, not EMA
    with pytest.raises(UserInputError, match="does not exist"):
        chapter.model("no-such-model")


def test_a_theme_styles_every_figure_after_the_setup(tmp_path):
    matplotlib.rcdefaults()
    setup("06-guidance-variants", output_dir=tmp_path / "run", theme="whitegrid")
    assert plt.rcParams["axes.grid"] is True
    matplotlib.rcdefaults()
    setup("06-guidance-variants", output_dir=tmp_path / "run")
    assert plt.rcParams["axes.grid"] is False
