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
