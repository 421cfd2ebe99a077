"""The reference study rebuilt: its network, sampler and classifier, the reproduction command, the mechanism."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cfgutils.core.diffusion import DiffusionConfig, GaussianDiffusion
from cfgutils.core.reference import ReferenceClassifier, ReferenceUNet, sinusoidal_embedding
from cfgutils.core.samplers import REFERENCE_SAMPLER, SamplerSettings, sample_chunk
from cfgutils.core.unet import UNetConfig, build_network, count_parameters
from cfgutils.errors import UserInputError
from cfgutils.plumbing import paths
from cfgutils.plumbing.checkpoint import load_model
from cfgutils.plumbing.config import default_config
from cfgutils.core.classifier import build_classifier
from cfgutils.workflows.classifier import load_classifier
from cfgutils.workflows.classifier_training import (ClassifierTrainConfig, classifier_learning_rate, classifier_loss,
                                                    classifier_settings)
from cfgutils.workflows.reproduction import check_weights, completed_cells, pixel_range

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CFGUTILS_OFFLINE": "1"}


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "cfgutils", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=REPO)


# --------------------------------------------------------------------------------------------- the network
def test_the_reference_network_has_the_published_size_and_shapes():
    config = UNetConfig.from_dict(default_config("reference")["model"])
    network = build_network(config)
    assert isinstance(network, ReferenceUNet) and count_parameters(network) == 129_569
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()) == 5
    x = torch.randn(4, 1, 28, 28)
    out = network.eval()(x, torch.tensor([999, 500, 1, 0]), torch.tensor([0, 9, 10, 3]))
    assert out.shape == (4, 1, 28, 28) and torch.isfinite(out).all()
    # the null label (index 10 in cfgutils) is one-hot entry 0, class c is entry c + 1, as in the study
    assert network.one_hot(torch.tensor([10, 0, 9])).argmax(1).tolist() == [0, 1, 10]


def test_the_time_embedding_is_sines_then_cosines_of_the_raw_timestep():
    emb = sinusoidal_embedding(torch.tensor([0, 7]))
    assert emb.shape == (2, 32)
    assert torch.allclose(emb[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    assert math.isclose(float(emb[1, 0]), math.sin(7.0), rel_tol=1e-6)  # frequency 1 for k = 0
    assert math.isclose(float(emb[1, 16]), math.cos(7.0), rel_tol=1e-6)


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_when_sampling():
    network = build_network(UNetConfig(architecture="reference", base_channels=16))
    x, t, y = torch.randn(8, 1, 28, 28), torch.full((8,), 500), torch.arange(8)
    network.train()
    first = network(x, t, y)
    network.eval()
    assert not torch.allclose(first, network(x, t, y))
    assert torch.allclose(network(x[:1], t[:1], y[:1]), network(x, t, y)[:1], atol=1e-6)  # eval: per sample


def test_the_reference_preset_is_the_studys_recipe():
    config = default_config("reference")
    assert config["model"]["architecture"] == "reference" and config["model"]["base_channels"] == 16
    assert (config["diffusion"]["schedule"], config["diffusion"]["prediction"],
            config["diffusion"]["loss_weighting"]) == ("cosine", "eps", "uniform")
    train = config["train"]
    assert (train["steps"], train["batch_size"], train["lr"], train["lr_schedule"], train["warmup_steps"]) == (
        4000, 128, 1e-3, "constant", 0)
    assert (train["weight_decay"], train["adam_beta2"], train["grad_clip"], train["min_timestep"],
            train["p_uncond"]) == (0.01, 0.999, 0.0, 1, 0.1)
    assert default_config("reference-recipe")["model"]["architecture"] == "patch-unet"


@pytest.mark.slow
def test_train_cli_with_the_reference_preset_trains_the_reference_network(tmp_path):
    out = tmp_path / "ref.pt"
    result = cli("train", out, "-c", "reference", "--steps", "3", "--no-progress", "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    loaded = load_model(out, "cpu", raw_weights=True)
    assert isinstance(loaded.model, ReferenceUNet) and count_parameters(loaded.model) == 129_569
    ema = load_model(out, "cpu")  # the EMA copy carries the raw network's BatchNorm statistics
    for (name, buffer), (_, ema_buffer) in zip(loaded.model.named_buffers(), ema.model.named_buffers()):
        assert torch.equal(buffer, ema_buffer), name
    assert not loaded.model.training  # loaded for sampling: BatchNorm uses its running statistics


def test_a_min_timestep_at_or_above_T_is_a_one_line_error(tmp_path):
    result = cli("train", tmp_path / "x.pt", "-c", "reference", "--opts", "train.min_timestep", "1000")
    assert result.returncode == 2 and "train.min_timestep (1000) must be below" in result.stderr
    assert not (tmp_path / "x.pt").exists()


# --------------------------------------------------------------------------------------------- the sampler
class _LinearEps(torch.nn.Module):
    """eps(x, t, y) = 0.5 x + 0.01 t y: simple enough to step by hand."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(null_label=10, num_classes=10)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y):
        return 0.5 * x + 0.01 * (t.float() * y.float())[:, None, None, None]


def test_the_ancestral_sampler_equals_a_hand_written_two_step_example():
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=3, prediction="eps", loss_weighting="uniform"))
    model, labels, w = _LinearEps(), torch.tensor([3, 7]), 2.0
    settings = SamplerSettings("ancestral", steps=2, clip_x0=False, clamp_output=False)
    assert settings.timesteps(3) == [2, 1]
    out = sample_chunk(model, diffusion, labels, w + 1, settings, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    x = torch.randn((2, 1, 28, 28), generator=generator).double()
    alpha_bar = diffusion.alpha_bar64
    for t in (2, 1):  # the study's loop: eps = (1 + w) eps_c - w eps_u; x <- (x - beta/sqrt(1-ab) eps)/sqrt(alpha) + sqrt(beta) z
        eps_c = 0.5 * x + 0.01 * (t * labels.double())[:, None, None, None]
        eps_u = 0.5 * x + 0.01 * t * 10.0
        eps = (1 + w) * eps_c - w * eps_u
        beta = 1 - alpha_bar[t] / alpha_bar[t - 1]
        x = (x - beta / torch.sqrt(1 - alpha_bar[t]) * eps) / torch.sqrt(1 - beta)
        if t > 1:
            x = x + torch.sqrt(beta) * torch.randn((2, 1, 28, 28), generator=generator).double()
    assert torch.allclose(out.double(), x, rtol=1e-4, atol=1e-4)
    assert out.abs().max() > 1  # returned unclamped


def test_the_reference_sampler_runs_t_999_to_1_and_clamps_only_when_asked():
    assert REFERENCE_SAMPLER.timesteps(1000) == list(range(999, 0, -1))
    assert (REFERENCE_SAMPLER.clip_x0, REFERENCE_SAMPLER.clamp_output) == (False, False)
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=3, prediction="eps", loss_weighting="uniform"))
    clamped = SamplerSettings("ancestral", steps=2, clip_x0=False)
    out = sample_chunk(_LinearEps(), diffusion, torch.tensor([3]), 3.0, clamped, torch.Generator().manual_seed(5))
    assert out.abs().max() <= 1
    with pytest.raises(UserInputError, match="steps"):
        SamplerSettings("ancestral", steps=1000).validate(1000)


# --------------------------------------------------------------------------------------------- the classifier
def test_the_reference_classifier_has_8118_parameters_and_its_recipe():
    settings, model_config = classifier_settings(None, None, "reference")
    network = build_classifier(model_config)
    assert isinstance(network, ReferenceClassifier) and count_parameters(network) == 8_118
    assert network(torch.zeros(3, 1, 28, 28)).shape == (3, 10) and network.features(torch.zeros(2, 1, 28, 28)).shape == (2, 16)
    assert (settings.steps, settings.batch_size, settings.lr, settings.loss, settings.input_noise, settings.augment,
            settings.weight_decay) == (4000, 128, 1e-3, "softmax-mse", 0.1, False, 0.01)
    assert {classifier_learning_rate(step, settings) for step in (0, 999, 3999)} == {1e-3}  # constant
    assert classifier_learning_rate(1500, ClassifierTrainConfig()) < ClassifierTrainConfig().lr  # ours decays


def test_the_softmax_squared_error_loss():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    probs = logits.softmax(1)
    expected = ((probs - torch.tensor([[1.0, 0.0], [0.0, 1.0]])) ** 2).mean()
    assert torch.isclose(classifier_loss(logits, labels, "softmax-mse"), expected)
    assert torch.isclose(classifier_loss(logits, labels), torch.nn.functional.cross_entropy(logits, labels))


def test_the_shipped_reference_classifier_loads_and_reads_digits():
    loaded = load_classifier(paths.PRETRAINED_REFERENCE_CLASSIFIER, "cpu")
    assert count_parameters(loaded.model) == 8_118 and loaded.config["model"]["architecture"] == "reference"
    assert loaded.metadata["test_accuracy"] > 0.85 and "MNIST" in loaded.metadata["test_source"]


@pytest.mark.parametrize("path", paths.PRETRAINED_REFERENCE_NETWORKS)
def test_the_shipped_reference_networks_load(path):
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped yet")
    loaded = load_model(path, "cpu", raw_weights=True)
    assert isinstance(loaded.model, ReferenceUNet) and count_parameters(loaded.model) == 129_569
    assert loaded.metadata["complete"] and loaded.config["train"]["steps"] == 4000


# --------------------------------------------------------------------------------------------- the reproduction
def test_pixel_range_and_weights():
    assert pixel_range(torch.tensor([0.5, -2.0, 1.0, 3.0])) == {"outside_fraction": 0.5, "max_abs": 3.0}
    assert check_weights([0, 2.5]) == [0.0, 2.5]
    for bad, message in (([], "empty"), ([1, 1], "distinct"), ([math.nan], "distinct finite")):
        with pytest.raises(UserInputError, match=message):
            check_weights(bad)


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """A reference network trained for 3 steps (the command as a user runs it)."""
    folder = tmp_path_factory.mktemp("reference")
    result = cli("train", folder / "seed0.pt", "-c", "reference", "--steps", "3", "--no-progress",
                 "--run-dir", folder / "run")
    assert result.returncode == 0, result.stderr
    return folder / "seed0.pt"


@pytest.mark.slow
def test_reproduce_writes_its_tables_and_resumes(tmp_path, tiny_reference):
    out = tmp_path / "repro"
    args = ["experiment", "reproduce", out, "--networks", tiny_reference, "--weights", "0", "2",
            "--n-per-class", "2", "--steps", "3", "--compare", paths.PRETRAINED_DIR / "reference-recipe.pt"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {"results.csv", "pooled.csv", "mechanism.csv", "table.md",
                                              "accuracy.png", "strips.png", "strips.npz", "meta.json"}
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["network"], float(r["w"]), int(r["n"])) for r in rows] == [("seed0", 0.0, 20), ("seed0", 2.0, 20)]
    for row in rows:
        for scoring in ("published", "clamped", "ours"):
            assert float(row[f"accuracy_{scoring}_low"]) <= float(row[f"accuracy_{scoring}"]) <= float(
                row[f"accuracy_{scoring}_high"])
        assert float(row["max_abs"]) > 1 and 0 < float(row["outside_fraction"]) <= 1  # unclamped samples
        assert float(row["norm_step_00"]) > 0 and row["clamp_output"] == "False"
    with open(out / "mechanism.csv") as handle:
        mechanism = list(csv.DictReader(handle))
    assert {r["network"] for r in mechanism} == {"seed0", "reference-recipe"}
    assert [int(r["t"]) for r in mechanism[:8]] == [999, 998, 995, 990, 980, 950, 900, 500]
    assert math.isclose(float(mechanism[0]["step_gain"]), 1 / math.sqrt(0.001), rel_tol=1e-3)
    table = (out / "table.md").read_text()
    assert "0.970" in table and "as published" in table and "our classifier" in table
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cells"] == 2 and meta["sampler"] == "ancestral" and meta["n_per_class"] == 2
    # a second run finds both cells done and samples nothing new
    again = cli(*args[:-2], "--compare")
    assert again.returncode == 0, again.stderr
    assert completed_cells(out / "results.csv") == {("seed0", 0.0), ("seed0", 2.0)}
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2


@pytest.mark.parametrize("args, message", [
    (["--weights"], "the list of weights is empty"),
    (["--weights", "1", "1"], "distinct"),
    (["--n-per-class", "0"], "n per class must be a positive integer"),
    (["--networks", "missing.pt"], "does not exist"),
])
def test_bad_reproduce_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("experiment", "reproduce", out, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_the_shipped_reference_loads_raw_weights_and_a_fresh_run_forgets_earlier_cells(tmp_path):
    """The study's networks come with their raw weights and its classifier beside ours; run_reproduction resumes
    by default and starts over with ``fresh``."""
    from cfgutils.workflows.reproduction import run_reproduction, shipped_reference

    if not all(path.is_file() for path in (*paths.PRETRAINED_REFERENCE_NETWORKS, paths.PRETRAINED_CLASSIFIER)):
        pytest.skip("the reference networks are not shipped")
    ours = load_classifier(paths.PRETRAINED_CLASSIFIER, "cpu")
    networks, scorers = shipped_reference(ours, "cpu")
    assert list(networks) == ["seed0", "seed1", "seed2"] and scorers.ours is ours
    assert count_parameters(scorers.reference.model) == 8_118
    assert all(loaded.weights == "raw" for loaded in networks.values())
    settings = SamplerSettings("ancestral", 2, clip_x0=False, clamp_output=False)
    one = {"seed0": networks["seed0"]}
    results = run_reproduction(one, scorers, tmp_path, [0.0], 1, settings=settings, progress=False)
    run_reproduction(one, scorers, tmp_path, [0.0, 1.0], 1, settings=settings, progress=False)  # resumes: one more
    assert [row["w"] for row in csv.DictReader(results.open())] == ["0.0", "1.0"]
    run_reproduction(one, scorers, tmp_path, [1.0], 1, settings=settings, progress=False, fresh=True)
    assert [row["w"] for row in csv.DictReader(results.open())] == ["1.0"]
