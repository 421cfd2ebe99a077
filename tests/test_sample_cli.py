"""The sample command and experiments 1-2 as a user runs them; torchrun sampling equals one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_train import ENV, TINY_OPTS, small_split  # noqa: F401 - fixture

from cfgutils.plumbing import checkpoint as ckpt
from cfgutils.plumbing.config import resolve_config
from cfgutils.workflows.train import train


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, small_split):  # noqa: F811
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    train(resolve_config(opts=TINY_OPTS, overrides={"train.steps": 3}), small_split, checkpoint_path=path,
          progress=False)
    return path


def cli(*args, timeout=240, env=ENV):
    return subprocess.run([sys.executable, "-m", "cfgutils", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd="/")


def test_sample_writes_pngs_grid_npz_and_meta(tiny_checkpoint, tmp_path):
    out = tmp_path / "samples"
    result = cli("sample", tiny_checkpoint, "7", out, "--n", "5", "-s", "2.5", "--steps", "4", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("sample_*_digit7.png"))) == 5 and (out / "grid.png").exists()
    data = np.load(out / "samples.npz")
    assert data["images"].shape == (5, 28, 28) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [7] * 5
    meta = json.loads((out / "meta.json").read_text())
    assert meta["guidance_scale_s"] == 2.5 and meta["guidance_weight_w"] == 1.5
    assert meta["sampler"] == "dpmpp" and meta["steps"] == 4 and meta["seed"] == 3 and meta["weights"] == "ema"
    assert "first 64" in meta["model_data_source"]
    again = tmp_path / "again"
    assert cli("sample", tiny_checkpoint, "7", again, "--n", "5", "-s", "2.5", "--steps", "4", "--seed",
               "3").returncode == 0
    assert np.array_equal(np.load(again / "samples.npz")["images"], data["images"])  # same seed, same pixels


def test_sample_all_digits_and_raw_weights(tiny_checkpoint, tmp_path):
    result = cli("sample", tiny_checkpoint, "all", tmp_path / "all", "--n", "2", "--sampler", "ddim", "--steps",
                 "3", "--raw-weights")
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "all" / "samples.npz")
    assert data["labels"].tolist() == [d for d in range(10) for _ in range(2)]
    assert json.loads((tmp_path / "all" / "meta.json").read_text())["weights"] == "raw"


@pytest.mark.parametrize("args, message", [
    (["11"], "class 11 is out of range: MNIST has classes 0-9"),
    (["x"], "unknown MNIST class 'x'"),
    (["3", "-s", "nan"], "finite"),
    (["3", "-s", "inf"], "finite"),
    (["3", "--steps", "0"], "steps must be a positive"),
    (["3", "--eta", "-0.5"], "eta"),
    (["3", "--n", "0"], "n must be a positive"),
    (["3", "--batch-size", "0"], "batch size"),
])
def test_sample_rejects_bad_input(tiny_checkpoint, tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("sample", tiny_checkpoint, args[0], out, *args[1:])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and message in result.stderr
    assert not out.exists()


def test_sample_rejects_bad_checkpoints_and_outdirs(tiny_checkpoint, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = cli("sample", tiny_checkpoint, "3", a_file)
    assert result.returncode == 2 and "is a file" in result.stderr and a_file.read_text() == "x"
    result = cli("sample", tmp_path / "missing.pt", "3", tmp_path / "o")
    assert result.returncode == 2 and "does not exist" in result.stderr
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    result = cli("sample", truncated, "3", tmp_path / "o")
    assert result.returncode == 2 and "corrupt" in result.stderr
    classifier = tmp_path / "classifier.pt"
    ckpt.save_checkpoint(classifier, "image-classifier", {}, {"model": {}}, ckpt.base_metadata("test", 0))
    result = cli("sample", classifier, "3", tmp_path / "o")
    assert result.returncode == 2 and "classifier" in result.stderr
    result = cli("sample", tiny_checkpoint, "3", tmp_path / "sampler", "--sampler", "euler")
    assert result.returncode == 2  # argparse: invalid choice
    assert not (tmp_path / "o").exists() and not (tmp_path / "sampler").exists()


def test_experiments_class_control_and_guidance(tiny_checkpoint, tmp_path):
    result = cli("experiment", "class-control", tiny_checkpoint, tmp_path / "e1", "--n", "2", "--steps", "3")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "e1" / "samples.npz")["images"].shape == (20, 28, 28)
    old_name = cli("experiment", "digit-control", tiny_checkpoint, tmp_path / "e0", "--n", "1", "--steps", "2")
    assert old_name.returncode == 2 and "invalid choice" in old_name.stderr and not (tmp_path / "e0").exists()
    result = cli("experiment", "guidance", tiny_checkpoint, "3", tmp_path / "e2", "--scales", "0", "1", "4",
                 "--n", "2", "--steps", "3")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "e2" / "meta.json").read_text())
    assert meta["scales_s"] == [0.0, 1.0, 4.0] and meta["weights_w"] == [-1.0, 0.0, 3.0]
    assert np.load(tmp_path / "e2" / "samples.npz")["images"].shape == (3, 2, 28, 28)
    assert (tmp_path / "e2" / "guidance.png").exists()
    result = cli("experiment", "guidance", tiny_checkpoint, "3", tmp_path / "e3", "--scales", "nan")
    assert result.returncode == 2 and not (tmp_path / "e3").exists()


@pytest.mark.slow
def test_torchrun_sampling_equals_one_process(tiny_checkpoint, tmp_path):
    common = ["all", "-n", "3", "--steps", "3", "--batch-size", "7", "--device", "cpu"]
    one = cli("sample", tiny_checkpoint, common[0], tmp_path / "one", *common[1:])
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29519", "-m", "cfgutils", "sample", str(tiny_checkpoint), common[0], str(tmp_path / "two"),
                          *common[1:]], capture_output=True, text=True, env=ENV, timeout=240, cwd="/")
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    assert np.array_equal(a["labels"], b["labels"])
    assert np.abs(a["images"].astype(int) - b["images"].astype(int)).max() <= 1  # uint8 rounding at most
    assert os.path.exists(tmp_path / "two" / "grid.png")


@pytest.mark.slow
def test_torchrun_sampling_exits_cleanly_every_time(tiny_checkpoint, tmp_path):
    """Every rank leaves the process group before exiting: no 'terminate called' abort on any run."""
    for run in range(4):
        out = tmp_path / f"run{run}"
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                 str(29530 + run), "-m", "cfgutils", "sample", str(tiny_checkpoint), "all", str(out),
                                 "-n", "2", "--steps", "2", "--batch-size", "5", "--device", "cpu"],
                                capture_output=True, text=True, env=ENV, timeout=240, cwd="/")
        assert result.returncode == 0, f"run {run}: " + result.stderr[-2000:]
        assert "terminate called" not in result.stderr and (out / "samples.npz").is_file()
