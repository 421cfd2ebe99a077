"""Why did the reference study's accuracy collapse? Its recipe, then one factor at a time towards ours (issue 14).

:func:`collapse_ladder` starts at the reference study's recipe as closely as cfgutils allows (a ~170k-parameter
UNet, epsilon prediction with plain MSE, Adam 1e-3 constant, batch 128, 4,000 steps, raw weights, DDPM with
1,000 steps, no x0 clipping) and changes one factor per rung until it reaches the default recipe.
:func:`label_dropout_grid` trains the default recipe with several label-dropout rates. :func:`run_study`
trains what a study needs (reusing finished checkpoints, resuming unfinished ones), samples every rung at
every weight and seed, and scores the samples as notebook 05 does (the samples are clamped to [-1, 1]; the
overshoot of the predicted x0 before clipping is each row's ``x0_outside``, from
:class:`cfgutils.core.guidance.OvershootMeter`). The
command-line twins are
``python -m cfgutils experiment collapse | label-dropout``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.guidance import s_from_w
from ..core.samplers import SamplerSettings, digit_labels, generate
from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.checkpoint import MODEL_KIND, load_checkpoint, load_model
from ..plumbing.config import resolve_config
from ..plumbing.data import load_dataset
from .classifier import LoadedClassifier
from .experiments import build_reference_for, guidance_sweep, scale_summaries, training_neighbours_for
from .train import load_or_train

#: the shipped model of the reference recipe (raw and EMA weights: the collapse study samples both)
PRETRAINED_REFERENCE = paths.PRETRAINED_DIR / "reference-recipe.pt"
#: where the full studies' committed results live (notebook 07 reads them)
COMMITTED_RESULTS = paths.REPO_ROOT / "benchmarks" / "ablations"
#: the weights of the collapse study: where the reference study's accuracy falls (0.970 at w = 2, 0.105 at w = 15)
COLLAPSE_WEIGHTS = (2.0, 5.0, 10.0, 15.0)
#: the label-dropout rates of the second study; 0 trains no unconditional model
DROPOUT_RATES = (0.0, 0.05, 0.1, 0.2, 0.3)
#: the weights of the label-dropout study, from the unconditional branch (w = -1, s = 0) up
DROPOUT_WEIGHTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Rung:
    """One configuration of a study: how the model is trained, which weights sample it, and how."""

    name: str  # short key: "reference", "ema", ... (the CLI's --factors names)
    changed: str  # what this rung changes from the previous one, in words
    preset: str  # training preset: "reference" or "default"
    overrides: dict = field(default_factory=dict)  # dotted config keys on top of the preset
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    ema: bool = True  # sample the EMA weights (else the raw last-step weights)

    def config(self, train_steps: int | None = None) -> dict:
        """The resolved training config (``train_steps`` shortens every run, for tiny grids)."""
        extra = {"train.steps": train_steps, "train.previews": 0} if train_steps else {}
        return resolve_config(self.preset, overrides={**self.overrides, **extra})


def collapse_ladder() -> list[Rung]:
    """The reference study's recipe, then one factor at a time to cfgutils' default (each rung keeps the last).

    Every rung samples without x0 clipping; :func:`run_study` with ``clip_arms=(False, True)`` samples each
    rung both ways, so clipping is tested against every other factor (the collapse study does this).
    """
    small = {"model.base_channels": 16}  # 169,348 parameters: the reference UNet had about 130,000
    ddpm = SamplerSettings("ddpm", 1000, clip_x0=False)
    rungs = [Rung("reference", "the reference study's recipe", "reference", small, ddpm, ema=False)]
    eps_mse = {**small, "diffusion.prediction": "eps", "diffusion.loss_weighting": "uniform"}
    steps = [("ema", "EMA weights instead of the raw ones", {"ema": True}),
             ("ddim", "DDIM, 50 steps", {"sampler": SamplerSettings("ddim", 50, clip_x0=False)}),
             ("dpmpp", "DPM-Solver++(2M), 12 steps", {"sampler": SamplerSettings("dpmpp", 12, clip_x0=False)}),
             ("length", "train 500 steps at batch 128 (64,000 images, as ours) instead of 4,000",
              {"overrides": {**small, "train.steps": 500}}),
             ("recipe", "our optimiser: AdamW 2e-3 with warm-up and cosine decay, batch 64, 1,000 steps",
              {"preset": "default", "overrides": eps_mse}),
             ("objective", "v-prediction with min-SNR-5 weights", {"overrides": small}),
             ("size", "our model size (widths 48/96 instead of 16/32)", {"overrides": {}})]
    for name, changed, change in steps:
        rungs.append(replace(rungs[-1], name=name, changed=changed, **change))
    return rungs


def label_dropout_grid(rates=DROPOUT_RATES) -> list[Rung]:
    """The default recipe with each label-dropout rate (DPM-Solver++ 12 steps, EMA weights)."""
    return [Rung(f"p={p:g}", f"label dropout {p:g}", "default", {"train.p_uncond": float(p)}) for p in rates]


def select(rungs: list[Rung], names) -> list[Rung]:
    """The rungs named in ``names`` (in ladder order), or a one-line error naming the unknown ones."""
    names = list(names)
    if not names:
        raise UserInputError("the list of factors is empty")
    known = [rung.name for rung in rungs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserInputError(f"unknown factor {', '.join(unknown)}: use {', '.join(known)}")
    return [rung for rung in rungs if rung.name in names]


def checkpoint_name(config: dict) -> str:
    """A file name that identifies a training config: the same config finds the same checkpoint.

    An MNIST config is hashed without its ``train.dataset`` key, so it keeps the name it had before the
    dataset became a setting.
    """
    if config.get("train", {}).get("dataset", "mnist") == "mnist":
        config = {**config, "train": {k: v for k, v in config["train"].items() if k != "dataset"}}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"model-{digest}.pt"


def configuration_label(rung: Rung, clip: bool | None) -> str:
    """How a rung sampled one way is named in tables and figures: ``"dpmpp"``, ``"dpmpp +clip"``."""
    return f"{rung.name} +clip" if clip else rung.name


def stage_pretrained(rungs: list[Rung], models_dir: Path, shipped=(PRETRAINED_REFERENCE,)) -> list[str]:
    """Copy each shipped checkpoint whose config a rung trains into ``models_dir`` under the name
    :func:`run_study` looks for, so the study reuses it instead of training; returns the rungs it serves."""
    served = []
    for path in (Path(p) for p in shipped):
        if not path.is_file():
            continue
        config = load_checkpoint(path, MODEL_KIND)["config"]
        matching = [rung.name for rung in rungs if rung.config() == resolve_config(base=config)]
        target = Path(models_dir) / checkpoint_name(config)
        if matching and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        served += matching
    return served


def run_study(rungs: list[Rung], classifier: LoadedClassifier, weights, models_dir: Path, n_per_class: int = 10,
              seeds=(0, 1, 2), train_steps: int | None = None, max_sampler_steps: int | None = None,
              device: str = "auto", progress: bool = True, clip_arms=None, ddpm_n_per_class: int | None = None,
              dataset: str = "mnist") -> tuple[list[dict], dict]:
    """Train (or reuse) and score every rung at every weight and seed; returns (rows, extras).

    ``clip_arms=(False, True)`` samples every rung without and with x0 clipping (None: as the rung says).
    ``ddpm_n_per_class`` lowers the sample count of DDPM cells, whose 1,000 steps cost the most.
    Rows: one per (rung, clipping, w) with every metric and its 95% interval (:func:`scale_summaries`), the
    real-data floor's Frechet distance at the same sample count, and the wall times. Extras: per configuration,
    the samples of the first seed at each weight (for strips) and whether its model was trained here.
    ``dataset`` trains and scores every rung on that dataset (mnist or fashion-mnist).
    """
    test = load_dataset(dataset, "test")
    reference = build_reference_for(classifier, test)
    neighbours = training_neighbours_for(classifier, test, reference)
    rows, extras = [], {}
    for rung in rungs:
        config = rung.config(train_steps)
        config = {**config, "train": {**config["train"], "dataset": dataset}}
        start = time.perf_counter()
        loaded, trained = load_or_train(models_dir / checkpoint_name(config), config, device, progress=progress)
        train_seconds = loaded.metadata.get("wall_time_s", time.perf_counter() - start)
        if not rung.ema:
            loaded = load_model(loaded.path, device, raw_weights=True)
        scales = [s_from_w(w) for w in weights]
        if config["train"]["p_uncond"] == 0:  # no unconditional model was trained: only s = 1 is meaningful
            scales = [s for s in scales if s == 1.0]
        if not scales:
            raise UserInputError(f"{rung.name}: without label dropout only w = 0 (s = 1) can be sampled")
        for arm, clip in enumerate(clip_arms or (None,)):
            settings = rung.sampler if clip is None else replace(rung.sampler, clip_x0=clip)
            if max_sampler_steps and settings.resolved_steps() > max_sampler_steps:
                settings = replace(settings, steps=max_sampler_steps)
            n = ddpm_n_per_class if ddpm_n_per_class and rung.sampler.sampler == "ddpm" else n_per_class
            result = guidance_sweep(loaded, classifier, scales, n, settings, seeds, reference,
                                    progress=progress, real_split=test, neighbours=neighbours)
            label = configuration_label(rung, clip)
            for summary in scale_summaries(result):
                rows.append({"configuration": label, "rung": rung.name, "changed": rung.changed,
                             **settings.describe(), "weights": "ema" if rung.ema else "raw",
                             "p_uncond": config["train"]["p_uncond"], "train_steps": config["train"]["steps"],
                             "train_seconds": train_seconds, "sample_seconds": result.wall_time_s / len(scales),
                             **summary, "floor_frechet_distance": result.floor["frechet_distance"]})
            extras[label] = {"strips": result.strips, "floor": result.floor, "trained_here": trained is not None and arm == 0,
                             "training_data": str(loaded.metadata.get("data_source", "unknown"))}
            if config["train"]["p_uncond"] == 0:  # show what guiding it anyway does
                extras[label]["unguidable"] = unguidable_strips(loaded, settings, seeds[0])
    return rows, extras


#: the scales a model trained without label dropout is sampled at anyway, to show why only s = 1 works
UNGUIDABLE_SCALES = (0.0, 1.0, 3.0, 11.0)


def unguidable_strips(loaded, settings: SamplerSettings, seed: int) -> dict:
    """One sample of every digit at each of :data:`UNGUIDABLE_SCALES` (for a model without an unconditional branch)."""
    labels = digit_labels("all", 1)
    return {s: generate(loaded.model, loaded.diffusion, labels, s, settings, seed).cpu() for s in UNGUIDABLE_SCALES}
