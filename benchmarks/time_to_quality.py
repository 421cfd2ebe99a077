"""Time to quality: train a recipe and score it along the way (CPU minutes vs accuracy at w = 2).

    python benchmarks/time_to_quality.py [--preset default] [--points 6] [--n-per-class 30] [--opts K V ...]
                                         [--dataset fashion-mnist] [--keep OUT.pt]

Trains the preset once (its full lr schedule), pausing at evenly spaced steps: each pause writes the
checkpoint, samples n-per-class of every digit with the EMA weights at s = 3 (w = 2, DPM-Solver++ 12
steps, seed 0) and scores them with the dataset's shipped classifier (or data/models/classifier.pt). Training
time excludes the scoring. Prints the curve as a table; --csv writes it too; --keep keeps the trained checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from cfgutils.core.samplers import SamplerSettings, class_labels, generate
from cfgutils.plumbing.checkpoint import find_classifier, load_model
from cfgutils.plumbing.config import resolve_config
from cfgutils.plumbing.data import DATASETS, load_dataset
from cfgutils.core import metrics
from cfgutils.workflows.classifier import load_classifier, predict_proba
from cfgutils.workflows.experiments import check_classifier_dataset
from cfgutils.workflows.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="training preset: default or reference")
    parser.add_argument("--points", type=int, default=6, help="evenly spaced evaluation points")
    parser.add_argument("--n-per-class", type=int, default=30, help="samples per digit at each point")
    parser.add_argument("--classifier", default=None, help="classifier checkpoint (default: shipped)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--dataset", default="mnist", choices=list(DATASETS),
                        help="training data (sets train.dataset, over --opts)")
    parser.add_argument("--keep", default=None, metavar="OUT.pt", help="write the trained checkpoint here")
    parser.add_argument("--opts", nargs="+", default=[], metavar="K V",
                        help="config overrides, as for `python -m cfgutils train` (e.g. train.steps 1000)")
    args = parser.parse_args()

    classifier = load_classifier(find_classifier(args.classifier, args.dataset), "cpu")
    check_classifier_dataset(classifier, args.dataset)
    config = resolve_config(args.preset, args.opts, {"train.dataset": args.dataset})
    total = config["train"]["steps"]
    stops = sorted({round(total * (i + 1) / args.points) for i in range(args.points)})
    split = load_dataset(args.dataset, "train")
    labels = class_labels("all", args.n_per_class)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.keep) if args.keep else Path(folder) / "model.pt"
        if path.exists():
            raise SystemExit(f"{path} exists; --keep writes a new checkpoint")
        for stop in stops:
            train(config, split, checkpoint_path=path, resume_from=path if path.exists() else None, stop_at=stop,
                  progress=False)
            loaded = load_model(path, "cpu")
            start = time.perf_counter()
            images = generate(loaded.model, loaded.diffusion, labels, 3.0, SamplerSettings("dpmpp"), seed=0)
            accuracy, low, high = metrics.accuracy_with_ci(predict_proba(classifier.model, images), labels)
            rows.append({"step": stop, "images": stop * config["train"]["batch_size"],
                         "train_minutes": loaded.metadata["wall_time_s"] / 60,
                         "accuracy_w2": accuracy, "ci_low": low, "ci_high": high,
                         "score_s": time.perf_counter() - start})
            row = rows[-1]
            print(f"step {stop:5d}: {row['train_minutes']:5.1f} CPU min, accuracy at w=2 {row['accuracy_w2']:.3f}",
                  flush=True)
    print(f"\npreset {args.preset}{' ' + ' '.join(args.opts) if args.opts else ''}: {split.source}; "
          f"classifier {classifier.path}")
    print("| step | images seen | training minutes | accuracy at w = 2 (95% CI) |")
    print("|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['step']} | {row['images']:,} | {row['train_minutes']:.1f} | "
              f"{row['accuracy_w2']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] |")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
