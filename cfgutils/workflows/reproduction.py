"""The reference study rebuilt as it was, and where its collapse lives (notebook 07-ablations).

The reference study trained its own network (:class:`cfgutils.core.reference.ReferenceUNet`, preset
``reference``), sampled it with its ancestral sampler (:data:`cfgutils.core.samplers.REFERENCE_SAMPLER`:
t = 999 .. 1, nothing clipped, the samples returned unclamped) and scored the samples with its own tiny
classifier on the raw pixels. :func:`reproduce_cell` samples one trained network at one weight and scores the
same samples three ways (:data:`SCORINGS`): as published (reference classifier, unclamped), the reference
classifier on samples clamped to [-1, 1], and cfgutils' classifier on clamped samples. It also records what the
pixels do: the fraction outside [-1, 1] and the largest |x| of the final samples, and the mean per-sample
norm of x_t along the first :data:`TRAJECTORY_STEPS` steps. :func:`eps_error_by_t` measures how well a network
predicts the noise at the high noise levels where the ancestral step amplifies errors most.
:func:`run_reproduction` runs every (network, weight) cell, appending each to ``results.csv`` as it completes,
so an interrupted run resumes where it stopped. The command-line twin is
``python -m cfgutils experiment reproduce``.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.guidance import s_from_w
from ..core.samplers import REFERENCE_SAMPLER, SamplerSettings, class_labels, generate
from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.checkpoint import LoadedModel, load_model
from ..plumbing.data import ImageSplit
from .classifier import LoadedClassifier, load_classifier, predict_proba
from .experiments import REFERENCE_ACCURACY, REFERENCE_WEIGHTS
from ..core.metrics import proportion_interval

#: scoring name -> (which classifier, whether the samples are clamped to [-1, 1] first)
SCORINGS = {"published": ("reference", False), "clamped": ("reference", True), "ours": ("ours", True)}
#: the timesteps at which :func:`eps_error_by_t` measures the noise prediction (the ancestral sampler's first
#: steps divide by sqrt(alpha_t): 31.6 at t = 999, 2.0 at 998, 1.5 at 997, ...)
EPS_ERROR_TIMESTEPS = (999, 998, 995, 990, 980, 950, 900, 500)
#: the trajectory norms kept per cell: the first steps of the sampler (and the final samples)
TRAJECTORY_STEPS = 20


@dataclass(frozen=True)
class Scorers:
    """The two classifiers of :data:`SCORINGS`: the reference study's and cfgutils' own."""

    reference: LoadedClassifier
    ours: LoadedClassifier

    def __getitem__(self, name: str) -> LoadedClassifier:
        return getattr(self, name)


def shipped_reference(ours: LoadedClassifier, device=None) -> tuple[dict[str, LoadedModel], Scorers]:
    """The study's three trained networks as it sampled them (raw weights; the ones shipped in
    data/pretrained/reference/), and the scorers: the study's own classifier beside ``ours``."""
    networks = {path.stem: load_model(path, device, raw_weights=True) for path in paths.PRETRAINED_REFERENCE_NETWORKS
                if path.is_file()}
    if not networks:
        raise FileNotFoundError(f"no reference network in {paths.PRETRAINED_REFERENCE_DIR}")
    return networks, Scorers(load_classifier(paths.PRETRAINED_REFERENCE_CLASSIFIER, device), ours)


def pixel_range(samples: torch.Tensor) -> dict[str, float]:
    """How far final samples leave the data's range: fraction of pixels outside [-1, 1], largest |x| (07)."""
    return {"outside_fraction": float((samples.abs() > 1).float().mean()), "max_abs": float(samples.abs().max())}


def score_three_ways(samples: torch.Tensor, labels: torch.Tensor, scorers: Scorers) -> dict[str, float]:
    """Accuracy of the same samples under every scoring of :data:`SCORINGS`, with exact 95% intervals, and the
    discordant counts of consecutive scorings (``gained_<b>``: right under b, wrong under the one before; ``lost_<b>``:
    the reverse), from which :func:`paired_difference` gives a paired interval of the change (07)."""
    row, previous = {}, None
    for name, (classifier, clamp) in SCORINGS.items():
        images = samples.clamp(-1.0, 1.0) if clamp else samples
        right = predict_proba(scorers[classifier].model, images).argmax(1) == labels.cpu()
        correct = int(right.sum())
        low, high = proportion_interval(correct, len(labels))
        row.update({f"correct_{name}": correct, f"accuracy_{name}": correct / len(labels),
                    f"accuracy_{name}_low": low, f"accuracy_{name}_high": high})
        if previous is not None:
            row.update({f"gained_{name}": int((right & ~previous).sum()), f"lost_{name}": int((previous & ~right).sum())})
        previous = right
    return row


def paired_difference(gained: int, lost: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """The change in accuracy between two scorings of the same n samples, (gained - lost) / n, with its 95%
    interval from the per-sample differences (each -1, 0 or +1; normal approximation) (07)."""
    mean = (gained - lost) / n
    variance = ((gained + lost) / n - mean ** 2) / max(n - 1, 1)
    half = z * math.sqrt(max(variance, 0.0))
    return mean, mean - half, mean + half


def reproduce_cell(loaded: LoadedModel, w: float, scorers: Scorers, n_per_class: int = 20, seed: int = 0,
                   settings: SamplerSettings = REFERENCE_SAMPLER, batch_size: int = 200,
                   progress: bool = False) -> tuple[dict, torch.Tensor]:
    """Sample ``n_per_class`` of every class at weight ``w`` as the reference study did, and score them three
    ways; returns (row, samples). The row holds the three accuracies, the pixel range and the trajectory norms."""
    norms: dict[int, list[float]] = {}

    def record(index: int, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if index < TRAJECTORY_STEPS:
            norms.setdefault(index, []).extend(x_t.flatten(1).norm(dim=1).tolist())

    labels = class_labels("all", n_per_class)
    start = time.perf_counter()
    samples = generate(loaded.model, loaded.diffusion, labels, s_from_w(w), settings, seed, batch_size,
                       progress=progress, callback=record).cpu()
    row = {"w": w, "s": s_from_w(w), "n": len(labels), "sampling_seed": seed, **settings.describe(),
           "published_accuracy": REFERENCE_ACCURACY.get(w, math.nan), **score_three_ways(samples, labels, scorers),
           **pixel_range(samples),
           **{f"norm_step_{i:02d}": sum(v) / len(v) for i, v in sorted(norms.items())},
           "norm_final": float(samples.flatten(1).norm(dim=1).mean()), "sample_seconds": time.perf_counter() - start}
    return row, samples


def eps_error_by_t(loaded: LoadedModel, split: ImageSplit, timesteps=EPS_ERROR_TIMESTEPS, n: int = 1000,
                   seed: int = 0) -> list[dict]:
    """Mean squared error of the network's noise prediction (conditional, true labels) on ``n`` held-out images
    noised to each timestep, with the same noise for every network; one row per t with a 95% interval (07)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(split), generator=generator)[:n]
    images, labels = split.images[index], split.labels[index]
    noise = torch.randn(images.shape, generator=generator)
    device = next(loaded.model.parameters()).device
    rows = []
    for t in timesteps:
        t_batch = torch.full((len(index),), int(t), dtype=torch.long)
        x_t = loaded.diffusion.q_sample(images, t_batch, noise)
        with torch.no_grad():
            output = torch.cat([loaded.model(x_t[i:i + 500].to(device), t_batch[i:i + 500].to(device),
                                             labels[i:i + 500].to(device)).cpu() for i in range(0, len(index), 500)])
        eps, _ = loaded.diffusion.to_eps_and_x0(output, x_t, t_batch)
        per_image = ((eps - noise) ** 2).flatten(1).mean(dim=1)
        mean, spread = float(per_image.mean()), float(per_image.std()) / math.sqrt(len(per_image))
        rows.append({"t": int(t), "eps_mse": mean, "eps_mse_low": mean - 1.96 * spread,
                     "eps_mse_high": mean + 1.96 * spread, "n": len(per_image),
                     "step_gain": 1 / math.sqrt(1 - _beta(loaded, int(t)))})
    return rows


def _beta(loaded: LoadedModel, t: int) -> float:
    ab = loaded.diffusion.alpha_bar64
    return float(1 - ab[t] / ab[t - 1]) if t > 0 else float(1 - ab[0])


def check_weights(weights) -> list[float]:
    """A non-empty list of distinct finite weights w (07)."""
    weights = [float(w) for w in (weights or [])]
    if not weights:
        raise UserInputError("the list of weights is empty")
    if any(not math.isfinite(w) for w in weights) or len(set(weights)) != len(weights):
        raise UserInputError(f"the weights must be distinct finite numbers, got {weights}")
    return weights


def completed_cells(results_csv: Path) -> set[tuple[str, float]]:
    """The (network, w) cells already in ``results.csv`` (what a resumed run skips)."""
    if not results_csv.is_file():
        return set()
    with results_csv.open() as handle:
        return {(row["network"], float(row["w"])) for row in csv.DictReader(handle)}


def append_row(results_csv: Path, row: dict) -> None:
    """Append one row to ``results.csv`` (written with its header the first time), flushed to disk at once."""
    new = not results_csv.is_file()
    with results_csv.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_reproduction(networks: dict[str, LoadedModel], scorers: Scorers, outdir: Path,
                     weights=REFERENCE_WEIGHTS, n_per_class: int = 20, seed: int = 0, batch_size: int = 200,
                     settings: SamplerSettings = REFERENCE_SAMPLER, progress: bool = True, on_cell=None,
                     fresh: bool = False) -> Path:
    """Every (network, w) cell not yet in ``outdir/results.csv``: sample, score three ways, append (07).

    The same sampling seed for every cell: each weight and each network starts from the same noise and labels
    (paired). ``on_cell(name, row, samples)`` sees each finished cell (the CLI keeps strips with it).
    ``fresh``: delete ``outdir/results.csv`` first and sample every cell, instead of resuming.
    """
    weights = check_weights(weights)
    for loaded in networks.values():  # oneDNN runs these full-resolution convolutions ~1.5x faster in channels-last
        if next(loaded.model.parameters()).device.type == "cpu":
            loaded.model.to(memory_format=torch.channels_last)
    outdir.mkdir(parents=True, exist_ok=True)
    results_csv = outdir / "results.csv"
    if fresh:
        results_csv.unlink(missing_ok=True)
    done = completed_cells(results_csv)
    cells = [(name, w) for name in networks for w in weights if (name, w) not in done]
    iterator = cells
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(cells, desc="reproduction cells", unit="cell")
    for name, w in iterator:
        row, samples = reproduce_cell(networks[name], w, scorers, n_per_class, seed, settings, batch_size)
        row = {"network": name, "train_seed": networks[name].config["train"]["seed"], **row}
        append_row(results_csv, row)
        if on_cell is not None:
            on_cell(name, row, samples)
    return results_csv
