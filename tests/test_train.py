"""Training: config resolution, determinism, bit-exact resume, SIGKILL survival, torchrun, CLI errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cfgutils.errors import UserInputError
from cfgutils.plumbing import checkpoint as ckpt
from cfgutils.plumbing.checkpoint import load_model
from cfgutils.plumbing.config import TrainConfig, default_config, resolve_config
from cfgutils.plumbing.data import ImageSplit, load_mnist
from cfgutils.plumbing.device import keep_freed_memory
from cfgutils.core.optim import make_optimizer
from cfgutils.workflows.train import (
    build_model,
    learning_rate,
    load_or_train,
    to_training_layout,
    train,
)

REPO = Path(__file__).resolve().parent.parent
TINY_OPTS = ["model.base_channels", "8", "model.groups", "4", "train.batch_size", "8", "train.warmup_steps", "2",
             "train.log_every", "2", "train.previews", "0"]
ENV = {**os.environ, "CFGUTILS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def tiny_config(steps=6, **train_overrides):
    overrides = {"train.steps": steps, **{f"train.{k}": v for k, v in train_overrides.items()}}
    return resolve_config(opts=TINY_OPTS, overrides=overrides)


@pytest.fixture(scope="module")
def small_split():
    """64 real training digits: enough to exercise every code path quickly."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = load_mnist("train", download=False)
    return ImageSplit(full.images[:64], full.labels[:64], full.source + " [first 64]", "train")


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "cfgutils", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd="/")


# ------------------------------------------------------------------------------------------ config
def test_presets_and_overrides():
    default = default_config("default")
    assert default == resolve_config()  # the dataclass defaults are the default preset
    reference = default_config("reference")
    assert reference["train"]["steps"] == 4000 and reference["train"]["lr"] == 1e-3
    assert reference["train"]["batch_size"] == 128 and reference["train"]["p_uncond"] == 0.1
    config = resolve_config("reference", ["train.lr", "3e-4", "model.base_channels", "16"], {"train.steps": 7})
    assert config["train"]["lr"] == 3e-4 and config["model"]["base_channels"] == 16 and config["train"]["steps"] == 7


@pytest.mark.parametrize("opts, message", [
    (["train.nope", "1"], "unknown train config keys"),
    (["lr", "1"], "must look like"),
    (["train.lr"], "odd number"),
    (["train.steps", "0"], "steps must be a positive"),
    (["train.p_uncond", "1.5"], "p_uncond"),
    (["diffusion.prediction", "x"], "unknown prediction"),
])
def test_bad_config_values(opts, message):
    with pytest.raises(UserInputError, match=message):
        resolve_config(opts=opts)


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, lr_schedule="cosine")
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(55, config) == pytest.approx(0.5, abs=0.02)
    assert learning_rate(99, config) < 0.01


# ------------------------------------------------------------------------------------------ training
def test_cpu_training_layout_is_channels_last_and_computes_the_same_function():
    cpu = torch.device("cpu")
    config = resolve_config(opts=TINY_OPTS)
    reference = build_model(config, seed=0)
    with torch.no_grad():  # random weights everywhere (the zero-initialised output layer would hide differences)
        for parameter in reference.parameters():
            parameter.normal_(0, 0.3)
    model = to_training_layout(build_model(config, seed=1), cpu)
    model.load_state_dict(reference.state_dict())
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert not all(p.is_contiguous() for p in conv_weights if p.shape[-1] > 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 28, 28, generator=generator)
    t, y = torch.tensor([0, 10, 300, 700, 999]), torch.tensor([0, 3, 7, 9, 10])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), reference(x, t, y), rtol=1e-4, atol=1e-4)
    assert make_optimizer(model, TrainConfig().lr, cpu).defaults["fused"] is True


def test_keep_freed_memory_applies_on_glibc_only():
    import platform

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc
    assert keep_freed_memory() is on_glibc  # harmless to repeat


def test_training_is_deterministic_and_writes_a_complete_checkpoint(tmp_path, small_split):
    config = tiny_config(steps=6)
    first = train(config, small_split, checkpoint_path=tmp_path / "a.pt", run_dir=tmp_path / "run", progress=False)
    second = train(config, small_split, progress=False)
    assert_identical(weights(first.model), weights(second.model))
    assert_identical(weights(first.ema_model), weights(second.ema_model))
    payload = ckpt.load_checkpoint(tmp_path / "a.pt", "cfg-unet")
    assert payload["config"] == config
    assert payload["metadata"]["step"] == 6 and payload["metadata"]["complete"]
    assert payload["metadata"]["data_source"] == small_split.source
    assert set(payload["state"]) == {"model", "ema", "optimizer", "generator"}
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,images_per_s,elapsed_s" and len(log) == 1 + 3
    assert (tmp_path / "run" / "config.yaml").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o666 & ~mask  # a normal file, not the temp file's 0600


def test_resume_is_bit_exact(tmp_path, small_split):
    config = tiny_config(steps=8)
    uninterrupted = train(config, small_split, progress=False)
    path = tmp_path / "half.pt"
    train(config, small_split, checkpoint_path=path, stop_at=4, progress=False)
    assert ckpt.load_checkpoint(path, "cfg-unet")["metadata"]["complete"] is False
    resumed = train(config, small_split, checkpoint_path=path, resume_from=path, progress=False)
    assert resumed.step == 8
    assert_identical(weights(uninterrupted.model), weights(resumed.model))
    assert_identical(weights(uninterrupted.ema_model), weights(resumed.ema_model))


def test_ema_differs_from_raw_weights_and_load_model_picks_ema(tmp_path, small_split):
    config = tiny_config(steps=6)
    result = train(config, small_split, checkpoint_path=tmp_path / "m.pt", progress=False)
    ema = load_model(tmp_path / "m.pt", "cpu")
    raw = load_model(tmp_path / "m.pt", "cpu", raw_weights=True)
    assert ema.weights == "ema" and raw.weights == "raw"
    assert_identical(weights(ema.model), weights(result.ema_model))
    assert_identical(weights(raw.model), weights(result.model))
    assert not torch.equal(ema.model.stem.weight, raw.model.stem.weight)


def test_resume_with_a_different_model_is_refused(tmp_path, small_split):
    path = tmp_path / "m.pt"
    train(tiny_config(steps=2), small_split, checkpoint_path=path, progress=False)
    other = resolve_config(opts=TINY_OPTS + ["model.base_channels", "16"], overrides={"train.steps": 4})
    with pytest.raises(UserInputError, match="does not match the requested model.*base_channels"):
        train(other, small_split, checkpoint_path=path, resume_from=path, progress=False)


def test_load_or_train_reuses_a_finished_checkpoint(tmp_path, small_split, monkeypatch):
    config = tiny_config(steps=2)
    train(config, small_split, checkpoint_path=tmp_path / "m.pt", progress=False)
    monkeypatch.setattr("cfgutils.workflows.train.train", lambda *a, **k: pytest.fail("should not retrain"))
    loaded, result = load_or_train(tmp_path / "m.pt", config, device="cpu")
    assert result is None and loaded.metadata["step"] == 2


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_trains_and_resumes_exactly(tmp_path):
    common = ["--opts", *TINY_OPTS, "--steps", "6", "--no-progress", "--device", "cpu"]
    full = cli("train", tmp_path / "full.pt", *common, "--run-dir", tmp_path / "r1")
    assert full.returncode == 0, full.stderr
    part = cli("train", tmp_path / "part.pt", *common, "--stop-at", "3", "--run-dir", tmp_path / "r2")
    assert part.returncode == 0, part.stderr
    resumed = cli("train", tmp_path / "part.pt", "-l", tmp_path / "part.pt", "--no-progress", "--device", "cpu",
                  "--run-dir", tmp_path / "r2")
    assert resumed.returncode == 0, resumed.stderr
    a = ckpt.load_checkpoint(tmp_path / "full.pt", "cfg-unet")
    b = ckpt.load_checkpoint(tmp_path / "part.pt", "cfg-unet")
    assert b["metadata"]["step"] == 6
    assert_identical(a["state"]["model"], b["state"]["model"])
    rows = (tmp_path / "r2" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [2, 3, 4, 6]  # rows of both parts, none repeated


@pytest.mark.slow
def test_sigkill_mid_training_leaves_a_whole_checkpoint_that_resumes_exactly(tmp_path):
    common = ["--opts", *TINY_OPTS, "train.checkpoint_every", "5", "--steps", "400", "--no-progress",
              "--device", "cpu"]
    out = tmp_path / "killed.pt"
    process = subprocess.Popen([sys.executable, "-m", "cfgutils", "train", str(out), *common, "--run-dir",
                                str(tmp_path / "run")], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if out.exists() and ckpt.load_checkpoint(out, "cfg-unet")["metadata"]["step"] >= 10:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = ckpt.load_checkpoint(out, "cfg-unet")["metadata"]["step"]  # whole and readable
    assert 10 <= killed_at < 400
    resumed = cli("train", out, "-l", out, "--no-progress", "--device", "cpu", "--stop-at", "40",
                  "--run-dir", tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    reference = cli("train", tmp_path / "straight.pt", *common, "--stop-at", "40", "--run-dir", tmp_path / "run2")
    assert reference.returncode == 0, reference.stderr
    assert_identical(ckpt.load_checkpoint(out, "cfg-unet")["state"]["model"],
                     ckpt.load_checkpoint(tmp_path / "straight.pt", "cfg-unet")["state"]["model"])


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process(tmp_path):
    common = ["--opts", *TINY_OPTS, "--steps", "4", "--no-progress", "--device", "cpu"]
    single = cli("train", tmp_path / "one.pt", *common, "--run-dir", tmp_path / "r1")
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "cfgutils", "train", str(tmp_path / "two.pt"), *common, "--run-dir",
                          str(tmp_path / "r2")], capture_output=True, text=True, env=ENV, timeout=240, cwd="/")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = ckpt.load_checkpoint(tmp_path / "one.pt", "cfg-unet")
    two = ckpt.load_checkpoint(tmp_path / "two.pt", "cfg-unet")
    assert two["metadata"]["world_size"] == 2 and two["metadata"]["step"] == 4
    for key, value in one["state"]["model"].items():  # same global batch, gradients averaged: same run
        torch.testing.assert_close(two["state"]["model"][key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be a positive"),
    (["--batch-size", "-1"], "batch size must be a positive"),
    (["--p-uncond", "1.2"], "p_uncond"),
    (["--lr", "nan"], "lr must be"),
    (["-l", "missing.pt"], "does not exist"),
    (["-c", "nosuchpreset"], "not found"),
])
def test_cli_rejects_bad_input_with_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "out.pt"
    result = cli("train", out, *[a if a != "missing.pt" else tmp_path / a for a in args])
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "run").exists()


def test_cli_rejects_bad_paths_and_wrong_checkpoints(tmp_path):
    result = cli("train", tmp_path / "no" / "such" / "dir.pt")
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = cli("train", tmp_path)
    assert result.returncode == 2 and "is a folder" in result.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    result = cli("train", tmp_path / "out.pt", "-l", corrupt)
    assert result.returncode == 2 and "corrupt" in result.stderr
    assert corrupt.read_bytes() == b"not a checkpoint at all"
    classifier = tmp_path / "classifier.pt"
    ckpt.save_checkpoint(classifier, "image-classifier", {}, {"model": {}}, ckpt.base_metadata("test", 0))
    result = cli("train", tmp_path / "out.pt", "-l", classifier)
    assert result.returncode == 2 and "classifier" in result.stderr and "diffusion" in result.stderr
    assert not (tmp_path / "out.pt").exists()
