"""Two settings compared over several trained networks: paired samples within a network, training seeds across.

A *setting* is one ``experiment classifier`` run (its sampled cells kept in ``RUN/cells``) read at one weight w.
Network k of arm A is paired with network k of arm B: the same network sampled two ways (two rules, two
weights), or the same training seed of two recipes (two label-dropout rates). Both arms were sampled from the
same starting noise and labels, so per network the comparison uses per-sample differences: Newcombe's paired
interval for accuracy, one shared bootstrap of rows for KID and the Fréchet distance. Those intervals cover
sampling noise only. Over the networks, the mean of the per-network differences with a Student-t interval
covers training as well: that is the interval a statement about the *recipe* reads (05, 06, 07).
The command-line twin is ``python -m cfgutils experiment paired``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.guidance import s_from_w
from ..core.samplers import class_labels
from ..errors import UserInputError
from ..plumbing.cells import CellStore
from . import evaluation
from .classifier import LoadedClassifier
from ..core.metrics import paired_proportion_difference, paired_verdict, proportion_interval, seed_interval, triple

#: what two runs must share for their samples to be paired: the same labels, seeds, noise chunks and sampler
PAIRED_KEYS = ("dataset", "n_per_class", "seeds", "sampler", "steps", "eta", "spacing", "clip_x0", "clamp_output")
#: the metrics compared, and the digits they are printed with
COMPARED = {"accuracy": 3, "kid": 1, "frechet_distance": 1}


@dataclass(frozen=True)
class Run:
    """One ``experiment classifier`` output folder: its meta.json and its sampled cells."""

    folder: Path
    meta: dict
    cells: CellStore

    @property
    def name(self) -> str:
        """The network's file name without its suffix (what tables call it)."""
        return Path(self.meta.get("model", self.folder.name)).stem

    def check_weight(self, w: float) -> float:
        """The scale s of weight ``w``, or a one-line error if a seed of the run has no samples there."""
        scale = s_from_w(w)
        missing = [seed for seed in self.meta["seeds"] if (None, scale, seed) not in self.cells]
        if missing:
            raise UserInputError(f"{self.folder} has no samples at w = {w:g} (s = {scale:g}) for seed(s) "
                                 f"{', '.join(map(str, missing))}: run experiment classifier there with that scale")
        return scale

    def images(self, w: float) -> torch.Tensor:
        """The samples at weight ``w``, every seed pooled in seed order, as they were scored (clamped or not)."""
        scale = self.check_weight(w)
        images = torch.cat([self.cells[(None, scale, seed)][0] for seed in self.meta["seeds"]])
        return images.clamp(-1.0, 1.0) if self.meta.get("clamp_output", True) else images

    @property
    def labels(self) -> torch.Tensor:
        """The intended class of every pooled sample (the same in every run of one ``n_per_class`` and seeds)."""
        return class_labels("all", int(self.meta["n_per_class"])).repeat(len(self.meta["seeds"]))


def read_run(folder: str | Path) -> Run:
    """The run in ``folder``, or a one-line error when it has no meta.json or no sampled cells."""
    folder = Path(folder)
    meta_path, settings_path = folder / "meta.json", folder / "cells" / "settings.json"
    if not meta_path.is_file() or not settings_path.is_file():
        raise UserInputError(f"{folder} holds no experiment classifier run with its cells (meta.json and "
                             "cells/settings.json): run python -m cfgutils experiment classifier there first")
    return Run(folder, json.loads(meta_path.read_text()),
               CellStore(folder / "cells", json.loads(settings_path.read_text())))


def check_paired(runs: list[Run]) -> None:
    """One-line error unless every run drew the same labels from the same noise with the same sampler."""
    for key in PAIRED_KEYS:
        values = {json.dumps(run.meta.get(key)) for run in runs}
        if len(values) > 1:
            raise UserInputError(f"the runs differ in {key} ({', '.join(sorted(values))}): paired samples need "
                                 "the same labels, seeds and sampler")
    batch_sizes = {json.dumps(run.cells.settings.get("batch_size")) for run in runs}
    if len(batch_sizes) > 1:
        raise UserInputError(f"the runs were sampled in chunks of different sizes ({', '.join(sorted(batch_sizes))}): "
                             "their starting noise differs")


def _scored(run: Run, w: float, classifier: LoadedClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    """(per sample: classified as intended?, classifier features) of one run's samples at ``w``."""
    probs, features, _ = evaluation.classify(classifier.model, run.images(w), clamp=False)
    return probs.argmax(1) == run.labels, features


def compare_pair(a: Run, w_a: float, b: Run, w_b: float, classifier: LoadedClassifier,
                 reference: evaluation.RealReference) -> dict[str, dict[str, list[float]]]:
    """One network pair: per metric, ``a`` and ``b`` ([value, low, high]) and ``difference`` (a - b, paired)."""
    correct_a, features_a = _scored(a, w_a, classifier)
    correct_b, features_b = _scored(b, w_b, classifier)
    labels = a.labels
    found = {"accuracy": {
        "a": [float(correct_a.double().mean()), *proportion_interval(int(correct_a.sum()), len(correct_a))],
        "b": [float(correct_b.double().mean()), *proportion_interval(int(correct_b.sum()), len(correct_b))],
        "difference": list(paired_proportion_difference(correct_a, correct_b))}}
    distances = reference.distances
    measured_a, measured_b = distances.measure(features_a, labels), distances.measure(features_b, labels)
    difference = distances.difference(features_a, features_b, labels)
    for metric in ("kid", "frechet_distance"):
        found[metric] = {"a": triple(measured_a, metric), "b": triple(measured_b, metric),
                         "difference": triple(difference, f"{metric}_difference")}
    return found


def compare_networks(arm_a: list[Run], w_a: float, arm_b: list[Run], w_b: float, classifier: LoadedClassifier,
                     reference: evaluation.RealReference) -> list[dict]:
    """Rows: per network pair and metric, both arms and their paired difference (sampling intervals); then per
    metric the mean over the pairs, each arm's and the difference's, with Student-t intervals over networks.

    Every row has ``metric``, ``network`` (``"A-name / B-name"``, or ``"mean over K networks"``), ``a``, ``b``,
    ``difference`` ([value, low, high]), ``verdict`` (:func:`~cfgutils.core.metrics.paired_verdict` of the
    difference) and ``covers`` (what the interval covers).
    """
    if len(arm_a) != len(arm_b) or not arm_a:
        raise UserInputError(f"give as many runs for each arm, one per network (got {len(arm_a)} and {len(arm_b)})")
    check_paired([*arm_a, *arm_b])
    per_pair = [compare_pair(a, w_a, b, w_b, classifier, reference) for a, b in zip(arm_a, arm_b)]
    rows = []
    for metric in COMPARED:
        for (a, b), found in zip(zip(arm_a, arm_b), per_pair):
            rows.append({"metric": metric, "network": f"{a.name} / {b.name}", **found[metric],
                         "verdict": paired_verdict(found[metric]["difference"]), "covers": "sampling"})
        if len(per_pair) >= 2:
            mean = {key: list(seed_interval([found[metric][key][0] for found in per_pair]))
                    for key in ("a", "b", "difference")}
            if metric == "accuracy":  # a proportion's interval stays inside [0, 1], its difference inside [-1, 1]
                mean = {key: [values[0], *(min(max(v, -1.0 if key == "difference" else 0.0), 1.0) for v in values[1:])]
                        for key, values in mean.items()}
            rows.append({"metric": metric, "network": f"mean over {len(per_pair)} networks", **mean,
                         "verdict": paired_verdict(mean["difference"]), "covers": "training and sampling"})
    return rows
