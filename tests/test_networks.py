"""Two settings over several trained networks (experiment paired): per-pair paired differences, the mean over
networks with its Student-t interval, and one-line refusals for runs that cannot be paired."""

import json
import subprocess
import sys

import pytest
import torch

from cfgutils.plumbing import paths
from cfgutils.plumbing.cells import CellStore
from cfgutils.plumbing.data import load_dataset
from cfgutils.presentation import report
from cfgutils.workflows.classifier import load_classifier
from cfgutils.workflows.experiments import build_reference_for
from cfgutils.core.metrics import seed_interval
from cfgutils.workflows.networks import compare_networks, read_run

N_PER_CLASS, SEEDS = 3, (0, 1)


@pytest.fixture(scope="module")
def scoring():
    classifier = load_classifier(paths.PRETRAINED_CLASSIFIER, "cpu")
    test = load_dataset("mnist", "test")
    return classifier, test, build_reference_for(classifier, test)


def write_run(folder, images_by_seed, n_per_class=N_PER_CLASS, w=1.0, model="net.pt"):
    """A folder laid out as experiment classifier leaves it: meta.json and the cells of scale w + 1."""
    folder.mkdir(parents=True)
    meta = {"dataset": "mnist", "n_per_class": n_per_class, "seeds": list(SEEDS), "sampler": "dpmpp", "steps": 12,
            "eta": 0.0, "spacing": "trailing", "clip_x0": True, "clamp_output": True, "model": model,
            "classifier": str(paths.PRETRAINED_CLASSIFIER)}
    (folder / "meta.json").write_text(json.dumps(meta))
    cells = CellStore(folder / "cells", {"batch_size": 500, "model": model})
    for seed, images in zip(SEEDS, images_by_seed):
        cells[(None, w + 1.0, seed)] = images, 0.0
    return folder


def real_digits(test, labels, draw):
    """Real test images of the given labels, the ``draw``-th disjoint draw of them (it fits the offline fallback's
    100 test digits per class as well as the official split)."""
    rows = [torch.nonzero(test.labels == label).flatten()[draw * N_PER_CLASS + i % N_PER_CLASS]
            for i, label in enumerate(labels.tolist())]
    return test.images[torch.stack(rows)]


def test_real_digits_beat_noise_over_three_networks(tmp_path, scoring):
    classifier, test, reference = scoring
    labels = torch.arange(10).repeat_interleave(N_PER_CLASS)
    arm_a, arm_b = [], []
    for k in range(3):
        real = [real_digits(test, labels, len(SEEDS) * k + seed) for seed in SEEDS]
        noise = [torch.rand(len(labels), 1, 28, 28, generator=torch.Generator().manual_seed(10 * k + seed)) * 2 - 1
                 for seed in SEEDS]
        arm_a.append(read_run(write_run(tmp_path / f"real{k}", real, model=f"real{k}.pt")))
        arm_b.append(read_run(write_run(tmp_path / f"noise{k}", noise, model=f"noise{k}.pt")))
    assert torch.equal(arm_a[0].labels, labels.repeat(len(SEEDS)))
    rows = compare_networks(arm_a, 1.0, arm_b, 1.0, classifier, reference)
    assert len(rows) == 3 * (3 + 1)  # three metrics x (three pairs + their mean)
    by_metric = {m: [r for r in rows if r["metric"] == m] for m in ("accuracy", "kid", "frechet_distance")}
    for metric, found in by_metric.items():
        pairs, mean = found[:3], found[3]
        assert [r["network"] for r in pairs] == [f"real{k} / noise{k}" for k in range(3)]
        assert mean["network"] == "mean over 3 networks" and mean["covers"] == "training and sampling"
        assert mean["difference"] == pytest.approx(list(seed_interval([r["difference"][0] for r in pairs])))
        for row in pairs:
            low, high = row["difference"][1:]
            assert low <= row["difference"][0] <= high
    assert all(r["verdict"] == "higher" for r in by_metric["accuracy"][:3])  # real digits are recognised, noise not
    assert all(r["verdict"] == "lower" for r in by_metric["kid"][:3])
    assert by_metric["kid"][3]["verdict"] == "lower"
    assert 0.0 <= by_metric["accuracy"][3]["a"][1] <= by_metric["accuracy"][3]["a"][2] <= 1.0  # a proportion's bounds


def test_one_network_against_itself_differs_by_nothing(tmp_path, scoring):
    classifier, test, reference = scoring
    labels = torch.arange(10).repeat_interleave(N_PER_CLASS)
    run = read_run(write_run(tmp_path / "run", [real_digits(test, labels, seed) for seed in SEEDS]))
    rows = compare_networks([run, run], 1.0, [run, run], 1.0, classifier, reference)
    for row in rows:
        assert row["difference"][0] == pytest.approx(0.0, abs=1e-9)
        assert row["verdict"] == "not distinguishable" and row["a"][0] == pytest.approx(row["b"][0])


def test_paired_command_writes_its_table_and_refuses_unpaired_runs(tmp_path, scoring):
    _, test, _ = scoring
    labels = torch.arange(10).repeat_interleave(N_PER_CLASS)
    images = [real_digits(test, labels, seed) for seed in SEEDS]
    write_run(tmp_path / "a", images, model="a.pt")
    write_run(tmp_path / "b", [image.flip(-1) for image in images], model="b.pt")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "cfgutils", "experiment", "paired", out, "--a", tmp_path / "a",
                           "--b", tmp_path / "b", "--w", "1", "--names", "upright", "mirrored"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = (out / "table.md").read_text()
    assert "upright - mirrored" in table and "one network (a / b; the interval covers sampling only)" in table
    assert json.loads((out / "meta.json").read_text())["a"][0]["model"] == "a.pt"
    shown = report.committed_conclusions(out)  # what notebooks 05-07 show of a committed comparison
    assert shown.startswith("**upright (w = 1, s = 2) against mirrored") and "\n- accuracy, one network" in shown
    assert report.committed_conclusions(tmp_path / "nowhere").startswith("(no committed comparison at")
    write_run(tmp_path / "other", images[:1] * 2, n_per_class=N_PER_CLASS, model="o.pt")
    (tmp_path / "other" / "meta.json").write_text((tmp_path / "other" / "meta.json").read_text().replace(
        '"n_per_class": 3', '"n_per_class": 4'))
    for extra, message in ((["--b", tmp_path / "other"], "the runs differ in n_per_class"),
                           (["--b", tmp_path / "missing"], "holds no experiment classifier run"),
                           (["--b", tmp_path / "b", "--w", "5"], "no samples at w = 5"),
                           (["--b", tmp_path / "b", tmp_path / "b"], "as many runs for each arm")):
        arguments = ["--a", tmp_path / "a", *extra] + ([] if "--w" in extra else ["--w", "1"])
        refused = subprocess.run([sys.executable, "-m", "cfgutils", "experiment", "paired", tmp_path / "x",
                                  *arguments], capture_output=True, text=True)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
