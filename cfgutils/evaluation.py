"""Experiment 3: what the guidance scale does to the samples, in numbers (notebook 05-classifier-eval).

:func:`guidance_sweep` samples ``n_per_class`` of every digit at each scale (and seed), scores them with
the classifier's metrics against held-out real test digits, and returns one row per (scale, seed) in
both conventions (s and w = s - 1). :func:`real_floor_row` scores real held-out digits the same way, so
every metric has a reference point. The CLI twin is ``python -m cfgutils experiment classifier``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import metrics
from .classifier import LoadedClassifier, load_classifier
from .data import load_mnist, to_uint8
from .errors import UserInputError
from .sampling import Guidance, SamplerSettings, digit_labels, generate, w_from_s
from .train import LoadedModel, load_model

#: the reference study's published accuracy by w (its Table 1; 200 random-digit samples per scale)
REFERENCE_ACCURACY = {0: .700, .25: .785, .5: .850, .75: .915, 1: .935, 1.25: .965, 1.5: .965, 1.75: .965, 2: .970,
                      2.5: .955, 3: .940, 3.5: .905, 4: .855, 5: .840, 7.5: .655, 10: .385, 15: .105, 20: .150}


@dataclass
class SweepResult:
    """Rows of metrics per (scale, seed), the real-data floor, and a few samples per scale for figures."""

    rows: list[dict]
    floor: dict
    strips: dict[float, torch.Tensor] = field(default_factory=dict)  # scale -> (10, k, 1, 28, 28) of seed 0
    per_class: dict[float, list[float]] = field(default_factory=dict)  # scale -> accuracy per digit (seed-mean)
    reference_source: str = ""
    wall_time_s: float = 0.0


def check_sweep_arguments(scales, n_per_class: int, seeds) -> tuple[list[float], list[int]]:
    """Validate the sweep's scales (non-empty, finite), n per class (>= 2) and seeds (non-empty)."""
    from .experiments import check_scales

    scales = check_scales(scales)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 2:
        raise UserInputError(f"n per class must be an integer >= 2 (diversity compares samples of one class), "
                             f"got {n_per_class!r}")
    seeds = [int(s) for s in (seeds or [])]
    if not seeds:
        raise UserInputError("the list of seeds is empty")
    return scales, seeds


def guidance_sweep(loaded: LoadedModel, classifier: LoadedClassifier, scales, n_per_class: int = 30,
                   settings: SamplerSettings | None = None, seeds=(0,), reference: metrics.RealReference | None = None,
                   guidance: Guidance | None = None, batch_size: int = 500, strip_size: int = 6,
                   progress: bool = True, real_split=None) -> SweepResult:
    """Sample and score every scale (and seed); returns rows with both conventions (05-classifier-eval)."""
    scales, seeds = check_sweep_arguments(scales, n_per_class, seeds)
    settings = (settings or SamplerSettings()).validate()
    guidance = guidance or Guidance()
    start = time.perf_counter()
    real_split = real_split if real_split is not None else load_mnist("test")
    if reference is None:
        reference = build_reference_for(classifier, real_split)
    labels = digit_labels("all", n_per_class)
    rows, strips, per_class = [], {}, {}
    jobs = [(scale, seed) for scale in scales for seed in seeds]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="guidance sweep", unit="scale")
    per_class_sums: dict[float, torch.Tensor] = {}
    for scale, seed in iterator:
        if progress:
            iterator.set_postfix(s=f"{scale:g}", w=f"{w_from_s(scale):g}", seed=seed)
        images = generate(loaded.model, loaded.diffusion, labels, scale, settings, seed, batch_size, guidance).cpu()
        scored = metrics.evaluate_generated(classifier.model, images, labels, reference, batch_size, seed=seed)
        class_accuracy = torch.tensor([scored[f"accuracy_digit_{d}"] for d in range(10)])
        per_class_sums[scale] = per_class_sums.get(scale, torch.zeros(10)) + class_accuracy
        rows.append({"s": scale, "w": w_from_s(scale), "seed": seed, **scored,
                     "sampler": settings.sampler, "steps": settings.resolved_steps(), **guidance.describe()})
        if seed == seeds[0]:
            strips[scale] = images.reshape(10, n_per_class, 1, 28, 28)[:, :strip_size]
    for scale, total in per_class_sums.items():
        per_class[scale] = (total / len(seeds)).tolist()
    floor = real_floor_row(classifier, real_split, reference, n_per_class)
    return SweepResult(rows, floor, strips, per_class, reference.source, time.perf_counter() - start)


def build_reference_for(classifier: LoadedClassifier, real_split) -> metrics.RealReference:
    """The real reference set: up to 400 test digits per class, leaving at least half of each class for the floor."""
    smallest_class = int(torch.bincount(real_split.labels, minlength=10).min())
    return metrics.build_reference(classifier.model, real_split, n_per_class=min(400, smallest_class // 2))


def real_floor_row(classifier: LoadedClassifier, real_split, reference: metrics.RealReference, n_per_class: int,
                   seed: int = 1) -> dict:
    """Every metric for real held-out digits scored as if generated: the floor to compare against (05-classifier-eval).

    Uses the same number per class as the generated sets (Fréchet distance and recall depend on it), drawn
    from test digits outside the reference set.
    """
    scored = metrics.real_data_floor(classifier.model, real_split, reference, n_per_class=n_per_class, seed=seed)
    return {"s": None, "w": None, "seed": seed, **scored}


def write_results(outdir: Path, result: SweepResult, meta: dict) -> Path:
    """Write results.csv (one row per scale and seed, plus the real-data floor row) and meta.json."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows = result.rows + [{**result.floor, "sampler": "real data", "guidance": "real data floor"}]
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
    """Save the sample strips (uint8, scale x digit x k x 28 x 28) to strips.npz."""
    import numpy as np

    scales = sorted(result.strips)
    path = outdir / "strips.npz"
    np.savez_compressed(path, scales=np.array(scales),
                        images=np.stack([to_uint8(result.strips[s]).squeeze(2).numpy() for s in scales]))
    return path


# --------------------------------------------------------------------------------------------- CLI
def register_experiment(experiments) -> None:
    """Add ``experiment classifier`` (called by cfgutils.experiments)."""
    from .experiments import SWEEP_SCALES
    from .sampling_cli import add_sampler_arguments

    parser = experiments.add_parser(
        "classifier", help="experiment 3: classifier metrics of generated digits by guidance scale",
        description="Sample N of every digit at each guidance scale s (w = s - 1) and seed, score them with "
                    "CLASSIFIER against held-out real test digits (accuracy with a bootstrap 95%% interval, "
                    "per-class accuracy, confidence, Frechet distance in classifier features, IS analogue, "
                    "k-NN precision/recall, diversity, saturated pixels), and write results.csv (one row per "
                    "scale and seed, plus the real-data floor), meta.json, strips.npz and figures.")
    parser.add_argument("model", metavar="MODEL.pt", help="diffusion checkpoint")
    parser.add_argument("classifier", metavar="CLASSIFIER.pt", help="classifier checkpoint (train-classifier)")
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SWEEP_SCALES), metavar="S",
                        help="guidance scales s (default: 0 and the reference study's w grid + 1)")
    parser.add_argument("--n-per-class", type=int, default=30, help="samples per digit per scale (default 30)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (default 0)")
    add_sampler_arguments(parser, default_scale=None)
    parser.set_defaults(handler=_run_classifier_experiment)


def _run_classifier_experiment(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .sampling_cli import check_output_dir, guidance_from_args, settings_from_args

    scales, seeds = check_sweep_arguments(args.scales, args.n_per_class, args.seeds)
    settings = settings_from_args(args)
    guidance = guidance_from_args(args)
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device, raw_weights=args.raw_weights)
    classifier = load_classifier(args.classifier, args.device)
    result = guidance_sweep(loaded, classifier, scales, args.n_per_class, settings, seeds,
                            guidance=guidance, batch_size=args.batch_size)
    meta = {"model": str(args.model), "model_data_source": loaded.metadata.get("data_source"),
            "classifier": str(args.classifier), "classifier_data_source": classifier.metadata.get("data_source"),
            "classifier_test_accuracy": classifier.metadata.get("test_accuracy"),
            "convention": "eps = eps_u + s (eps_c - eps_u); w = s - 1", **settings.describe(),
            **guidance.describe(), "n_per_class": args.n_per_class, "seeds": seeds}
    path = write_results(outdir, result, meta)
    save_strips(outdir, result)
    from . import report

    report.save_sweep_figures(result, outdir)
    print(report.format_table(result))
    print(f"wrote {path} and figures to {outdir}")
    return 0
