"""The reference study's three experiments, as functions (notebooks 04 and 05).

1. :func:`class_control`: every class at one guidance scale (04-cfg-sampling).
2. :func:`scale_sweep_one_class` / :func:`class_scale_grid`: one class (or every class) across guidance
   scales, the same starting noise in every column (04-cfg-sampling).
3. :func:`guidance_sweep`: classifier metrics of generated images over a sweep of scales, each beside
   the same metric for real held-out images (05-classifier-eval).

The reference study is Matt McWilliams's "Guidance Scale Effects in Classifier-Free Diffusion Models"
(github.com/matt-mcwilliams/mnist-diffusion-cfg-analysis). The command-line twin is
``python -m cfgutils experiment class-control | guidance | classifier`` (:mod:`cfgutils.cli.experiments`).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..core.guidance import Guidance, OvershootMeter, check_scale, w_from_s
from ..core.samplers import SamplerSettings, class_labels, generate
from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.checkpoint import LoadedModel, check_dataset
from ..plumbing.data import dataset_info, load_dataset, to_uint8
from . import evaluation
from ..core.metrics import paired_proportion_difference, proportion_interval, rank_by_differences, triple
from ..core.classifier import NUM_CLASSES
from .classifier import LoadedClassifier

#: the reference study's grid of w, plus the unconditional model (s = 0)
REFERENCE_WEIGHTS = (0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 7.5, 10, 15, 20)
SWEEP_SCALES = (0.0,) + tuple(w + 1.0 for w in REFERENCE_WEIGHTS)
#: scales for the one-class figure (experiment 2)
FIGURE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 11.0, 21.0)



def check_scales(scales) -> list[float]:
    """A non-empty list of finite guidance scales (04-cfg-sampling)."""
    scales = [check_scale(s) for s in (scales or [])]
    if not scales:
        raise UserInputError("the list of guidance scales is empty")
    return scales


def class_control(loaded: LoadedModel, scale: float = 3.0, n_per_class: int = 8,
                  settings: SamplerSettings | None = None, seed: int = 0, batch_size: int = 500,
                  guidance: Guidance | None = None) -> torch.Tensor:
    """Experiment 1: ``n_per_class`` samples of each class at scale s; returns (10, n, 1, 28, 28) (04-cfg-sampling)."""
    labels = class_labels("all", n_per_class)
    images = generate(loaded.model, loaded.diffusion, labels, scale, settings, seed, batch_size, guidance)
    return images.cpu().reshape(10, n_per_class, 1, 28, 28)


def scale_sweep_one_class(loaded: LoadedModel, label: int, scales, n: int = 8,
                          settings: SamplerSettings | None = None, seed: int = 0,
                          guidance: Guidance | None = None) -> torch.Tensor:
    """Experiment 2: ``n`` samples of class ``label`` per scale, the same noise per row; (len(scales), n, 1, 28, 28)."""
    scales = check_scales(scales)
    labels = class_labels(label, n)
    return torch.stack([generate(loaded.model, loaded.diffusion, labels, s, settings, seed, max(n, 1), guidance).cpu()
                        for s in scales])


def class_scale_grid(loaded: LoadedModel, scales, settings: SamplerSettings | None = None, seed: int = 0,
                     guidance: Guidance | None = None) -> torch.Tensor:
    """One sample per class (rows) and scale (columns), the same noise per row; (10, len(scales), 1, 28, 28)."""
    scales = check_scales(scales)
    labels = class_labels("all", 1)
    columns = [generate(loaded.model, loaded.diffusion, labels, s, settings, seed, 10, guidance).cpu() for s in scales]
    return torch.stack(columns, dim=1)


#: the reference study's published accuracy by w (its Table 1; 200 random-digit samples per scale)
REFERENCE_ACCURACY = {0: .700, .25: .785, .5: .850, .75: .915, 1: .935, 1.25: .965, 1.5: .965, 1.75: .965, 2: .970,
                      2.5: .955, 3: .940, 3.5: .905, 4: .855, 5: .840, 7.5: .655, 10: .385, 15: .105, 20: .150}


#: sampling seeds of every reported table; tuning uses VALIDATION_SEEDS, which no reported table uses
REPORT_SEEDS = (0, 1, 2)


@dataclass
class SweepResult:
    """Rows of metrics per (scale, seed), the real-data floor, and samples per scale for figures."""

    rows: list[dict]
    floor: dict  # the real-data floor over the seeds: every metric with its interval (evaluation.summarise_seeds)
    strips: dict[float, torch.Tensor] = field(default_factory=dict)  # scale -> (10, k, 1, 28, 28) of the first seed
    per_class: dict[float, list[float]] = field(default_factory=dict)  # scale -> accuracy per class (seed-mean)
    reference_source: str = ""
    wall_time_s: float = 0.0
    floor_rows: list[dict] = field(default_factory=list)  # the floor, one row per seed
    closest: dict[float, dict] = field(default_factory=dict)  # scale -> evaluation.closest_pairs of the first seed
    training_source: str = ""  # the digits the near-copy check compares with
    dataset: str = "mnist"  # what was sampled and scored: mnist or fashion-mnist
    features: dict[float, torch.Tensor] = field(default_factory=dict)  # scale -> classifier features, seeds pooled
    correct: dict[float, torch.Tensor] = field(default_factory=dict)  # scale -> per sample: classified as intended?
    images: dict[float, torch.Tensor] = field(default_factory=dict)  # scale -> the images as scored, seeds pooled
    labels: torch.Tensor | None = None  # the intended class of every pooled sample (the same at every scale)
    pooled: dict[float, dict] = field(default_factory=dict)  # scale -> KID and Fréchet distance of the pooled samples
    floor_features: torch.Tensor | None = None  # the real-data floor's features, seeds pooled
    reference: evaluation.RealReference | None = None  # the real images every set distance is measured against


def check_sweep_arguments(scales, n_per_class: int, seeds) -> tuple[list[float], list[int]]:
    """Validate the sweep's scales (non-empty, finite), n per class (>= 2) and seeds (non-empty, distinct)."""
    scales = check_scales(scales)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 2:
        raise UserInputError(f"n per class must be an integer >= 2 (diversity compares samples of one class), "
                             f"got {n_per_class!r}")
    seeds = [int(s) for s in (seeds or [])]
    if not seeds:
        raise UserInputError("the list of seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise UserInputError(f"the seeds must differ (a repeated seed repeats the same samples), got {seeds}")
    return scales, seeds


def guidance_sweep(loaded: LoadedModel, classifier: LoadedClassifier, scales, n_per_class: int = 10,
                   settings: SamplerSettings | None = None, seeds=REPORT_SEEDS,
                   reference: evaluation.RealReference | None = None, guidance: Guidance | None = None,
                   batch_size: int = 500, strip_size: int = 6, progress: bool = True, real_split=None,
                   neighbours: evaluation.TrainingNeighbours | None = None, sample_cache: dict | None = None,
                   cache_key=None) -> SweepResult:
    """Sample and score every scale and seed, the real-data floor per seed, near copies (05-classifier-eval).

    ``neighbours`` (:func:`training_neighbours_for`) indexes the digits the models trained on; by default the
    training split. Rows carry both conventions; :func:`cfgutils.presentation.report.sweep_frame` adds intervals.
    ``sample_cache`` (a dict) keeps the samples of every (``cache_key``, scale, seed) cell, so a second sweep of
    the same samples (scored another way: the collapse study) does not sample them again.
    """
    scales, seeds = check_sweep_arguments(scales, n_per_class, seeds)
    settings = (settings or SamplerSettings()).validate()
    guidance = OvershootMeter(guidance or Guidance())
    start = time.perf_counter()
    check_same_dataset(loaded, classifier)
    real_split = real_split if real_split is not None else load_dataset(loaded.dataset, "test")
    reference = reference if reference is not None else build_reference_for(classifier, real_split, n_per_class * len(seeds))
    neighbours = neighbours if neighbours is not None else training_neighbours_for(classifier, real_split, reference)
    labels = class_labels("all", n_per_class)
    result = SweepResult([], {}, reference_source=reference.source, training_source=neighbours.source,
                         dataset=loaded.dataset)
    jobs = [(scale, seed) for scale in scales for seed in seeds]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="guidance sweep", unit="cell")
    for scale, seed in iterator:
        if progress:
            iterator.set_postfix(s=f"{scale:g}", w=f"{w_from_s(scale):g}", seed=seed)
        key = (cache_key, scale, seed)
        if sample_cache is not None and key in sample_cache:
            images, outside = sample_cache[key]
        else:  # sampled unclamped and clamped here, so that the cache serves both ways of scoring
            images = generate(loaded.model, loaded.diffusion, labels, scale, replace(settings, clamp_output=False),
                              seed, batch_size, guidance).cpu()
            outside = guidance.fraction()
            if sample_cache is not None:
                sample_cache[key] = images, outside
        if settings.clamp_output:
            images = images.clamp(-1.0, 1.0)
        probs, features, scored_images = evaluation.classify(classifier.model, images, batch_size,
                                                             settings.clamp_output)
        scored = evaluation.score(probs, features, scored_images, labels, reference, neighbours=neighbours)
        keep(result, scale, features, probs.argmax(1) == labels, scored_images)
        result.rows.append({"s": scale, "w": w_from_s(scale), "seed": seed, **scored, "x0_outside": outside,
                            "sampler": settings.sampler, "steps": settings.resolved_steps(), **guidance.describe()})
        if seed == seeds[0]:
            result.strips[scale] = images.reshape(10, n_per_class, 1, 28, 28)[:, :strip_size]
            result.closest[scale] = evaluation.closest_pairs(images, neighbours)
    result.labels = labels.repeat(len(seeds))
    result.per_class = {scale: [float(np.mean([row[f"accuracy_class_{d}"] for row in result.rows if row["s"] == scale]))
                                for d in range(10)] for scale in scales}
    score_floor(result, classifier, real_split, reference, n_per_class, seeds, batch_size, neighbours)
    set_distances(result, reference)
    result.wall_time_s = time.perf_counter() - start
    return result


def score_floor(result: SweepResult, classifier: LoadedClassifier, real_split, reference: evaluation.RealReference,
                n_per_class: int, seeds, batch_size: int = 500,
                neighbours: evaluation.TrainingNeighbours | None = None) -> None:
    """The real-data floor of a sweep: one disjoint set of held-out real images per seed, as many per class as
    the samples, scored like them (``result.floor_rows``, ``result.floor_features``) (05-classifier-eval)."""
    floor_features = []
    for seed, indices in zip(seeds, evaluation.floor_sets(real_split, reference, n_per_class, len(seeds))):
        probs, features, images = evaluation.classify(classifier.model, real_split.images[indices], batch_size)
        scored = evaluation.score(probs, features, images, real_split.labels[indices], reference,
                                  neighbours=neighbours)
        result.floor_rows.append({"s": None, "w": None, "seed": seed, **scored})
        floor_features.append(features)
    result.floor_features = torch.cat(floor_features)


def keep(result: SweepResult, scale: float, features: torch.Tensor, correct: torch.Tensor,
         images: torch.Tensor | None = None) -> None:
    """Append one seed's features, per-sample correctness and images to the scale's pooled ones (seed order)."""
    for store, value in ((result.features, features), (result.correct, correct), (result.images, images)):
        if value is not None:
            store[scale] = value if scale not in store else torch.cat([store[scale], value])


def set_distances(result: SweepResult, reference: evaluation.RealReference) -> None:
    """KID and Fréchet distance (bootstrap intervals) of each scale's pooled samples and of the pooled floor (05).

    The floor is as many held-out real images as each scale has samples, in the same class layout: the same N,
    so the Fréchet distance's small-sample bias is the same on both sides. Resamples keep the class counts.
    """
    result.reference = reference
    for scale, features in result.features.items():
        result.pooled[scale] = reference.distances.measure(features, result.labels)
    result.floor = {**evaluation.summarise_seeds(result.floor_rows),
                    **reference.distances.measure(result.floor_features, result.labels)}


#: the direction of each metric a ranking can use: accuracy higher is better, the set distances lower
RANKED = {"accuracy": True, "kid": False, "frechet_distance": False}


def paired_ranking(result: SweepResult, metric: str, scales=None) -> dict:
    """The best of ``scales`` by ``metric`` and every other scale's *paired* difference from it (05-classifier-eval).

    The scales' samples share their starting noise and labels, so each comparison uses the per-sample
    differences: :func:`~cfgutils.core.metrics.paired_proportion_difference` for accuracy, a shared
    bootstrap over sample indices for KID and the Fréchet distance. ``scales`` default: every guided scale
    (s > 0). Returns ``best`` (its w), ``value`` ([value, low, high]), ``differences`` (w -> [other - best,
    low, high]), ``not_distinguishable`` (the best and every w whose difference interval contains 0) and
    ``winner`` (the best's w where every difference excludes 0, else None).
    """
    if metric not in RANKED:
        raise UserInputError(f"metric must be one of {', '.join(RANKED)}, got {metric!r}")
    if not result.correct:
        raise UserInputError("this result holds no per-sample outcomes (sample it with guidance_sweep)")
    scales = [s for s in sorted(result.correct) if s > 0] if scales is None else list(scales)
    if not scales:
        raise UserInputError("no scales to rank")
    if metric == "accuracy":
        values = {s: float(result.correct[s].double().mean()) for s in scales}
    else:
        values = {s: result.pooled[s][metric] for s in scales}
    best = (max if RANKED[metric] else min)(scales, key=values.get)
    if metric == "accuracy":
        hits = int(result.correct[best].sum())
        value = [values[best], *proportion_interval(hits, int(result.correct[best].shape[0]))]
        differences = {w_from_s(s): list(paired_proportion_difference(result.correct[s], result.correct[best]))
                       for s in scales if s != best}
    else:
        value = triple(result.pooled[best], metric)
        differences = {w_from_s(s): triple(result.reference.distances.difference(
            result.features[s], result.features[best], result.labels), f"{metric}_difference")
            for s in scales if s != best}
    return {"metric": metric, "best_s": best, **rank_by_differences(w_from_s(best), value, differences)}


def floor_difference(result: SweepResult, scale: float, metric: str) -> list[float]:
    """[scale's value - floor's, low, high] of KID or the Fréchet distance: the real-data floor, same N (05)."""
    if result.floor_features is None or result.features[scale].shape != result.floor_features.shape:
        raise UserInputError("the real-data floor was not measured at the samples' N")
    found = result.reference.distances.difference(result.features[scale], result.floor_features, result.labels)
    return triple(found, f"{metric}_difference")


def check_classifier_dataset(classifier: LoadedClassifier, dataset: str) -> None:
    """Refuse a classifier trained on another dataset than ``dataset``, saying where to get a fitting one (05)."""
    title = dataset_info(dataset).title
    shipped = paths.for_dataset(paths.PRETRAINED_CLASSIFIER, dataset)
    check_dataset(f"classifier {classifier.path}", classifier.dataset, NUM_CLASSES,
                  classifier.metadata.get("class_names"), dataset,
                  hint=f"use a {title} classifier (`python -m cfgutils train-classifier OUT.pt --dataset "
                       f"{dataset}`; {title}'s shipped one is in {shipped})")


def check_same_dataset(loaded: LoadedModel, classifier: LoadedClassifier) -> str:
    """The dataset of a diffusion model and a classifier, refusing a pair trained on different datasets (05)."""
    check_classifier_dataset(classifier, loaded.dataset)
    return loaded.dataset


def scale_summaries(result: SweepResult) -> list[dict]:
    """One summary per scale, sorted by s: every metric over the seeds with its 95% interval, and s and w (05).

    KID and the Fréchet distance are those of the pooled samples (:func:`set_distances`), with bootstrap intervals.
    """
    scales = sorted({row["s"] for row in result.rows})
    return [{**evaluation.summarise_seeds([row for row in result.rows if row["s"] == s]), **result.pooled.get(s, {}),
             "s": s, "w": w_from_s(s)} for s in scales]


def build_reference_for(classifier: LoadedClassifier, real_split, floor_per_class: int = 0,
                        corruption_per_class: int = 0) -> evaluation.RealReference:
    """The real reference set: half of each class's held-out images, at most 400, leaving room for a real-data floor
    of ``floor_per_class`` (samples per class x seeds) and for corruption sets (the rule: ``held_out_budget``);
    ``reference.budget`` says how the images were shared."""
    budget = evaluation.held_out_budget(real_split, floor_per_class, corruption_per_class)
    return evaluation.build_reference(classifier.model, real_split, budget=budget)


def training_neighbours_for(classifier: LoadedClassifier, real_split, reference: evaluation.RealReference,
                            training_split=None) -> evaluation.TrainingNeighbours:
    """The training images (default: the train split) and near-copy thresholds set by the reference's real images."""
    training_split = training_split if training_split is not None else load_dataset(real_split.dataset, "train")
    return evaluation.build_training_neighbours(classifier.model, training_split, real_split.images[reference.indices])


def write_results(outdir: Path, result: SweepResult, meta: dict) -> Path:
    """Write results.csv (one row per scale and seed, plus one real-data floor row per seed) and meta.json."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows = result.rows + [{**row, "sampler": "real data", "guidance": "real data floor"} for row in result.floor_rows]
    fieldnames = []
    for row in rows:
        fieldnames += [k for k in row if k not in fieldnames]
    path = outdir / "results.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                             for k, v in row.items()})
    (outdir / "meta.json").write_text(json.dumps({**meta, "wall_time_s": round(result.wall_time_s, 1),
                                                  "reference_source": result.reference_source}, indent=2) + "\n")
    return path


def save_strips(outdir: Path, result: SweepResult) -> Path:
    """Save the sample strips (uint8, scale x class x k x 28 x 28) to strips.npz."""
    scales = sorted(result.strips)
    path = outdir / "strips.npz"
    np.savez_compressed(path, scales=np.array(scales),
                        images=np.stack([to_uint8(result.strips[s]).squeeze(2).numpy() for s in scales]))
    return path
