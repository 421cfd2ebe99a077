"""Why did the reference study's accuracy collapse? Its own setup, then one factor at a time towards ours (07).

:func:`collapse_ladder` starts from the faithful reproduction of the reference study (its network, preset
``reference``; its ancestral sampler with nothing clipped; its classifier on the raw samples) and changes one
factor per rung until it reaches cfgutils' default recipe: how the samples are scored (clamped first; then
cfgutils' classifier), the sampler (DDPM posterior steps with x0 clipping; DDIM; DPM-Solver++), the EMA
weights, the network (cfgutils' UNet at the reference's size), the optimiser and training length, the
objective (v-prediction; min-SNR weights) and the width. :func:`label_dropout_grid` trains the default recipe
with several label-dropout rates. :func:`run_study` trains what a study needs (reusing finished checkpoints,
resuming unfinished ones), samples every rung at every weight and seed, and scores the samples as notebook 05
does; rungs that differ only in how their samples are scored share one set of samples. The overshoot of the
predicted x0 before clipping is each row's ``x0_outside`` (:class:`cfgutils.core.guidance.OvershootMeter`).
The command-line twins are ``python -m cfgutils experiment collapse | label-dropout``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.guidance import s_from_w
from ..core.samplers import REFERENCE_SAMPLER, SamplerSettings, class_labels, generate
from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.checkpoint import MODEL_KIND, load_checkpoint, load_model
from ..plumbing.config import resolve_config
from ..plumbing.data import load_dataset
from .experiments import build_reference_for, guidance_sweep, scale_summaries, training_neighbours_for
from .train import load_or_train

#: the shipped reference networks (raw and EMA weights: the collapse study samples both); seed 0 is the ladder's
PRETRAINED_REFERENCE = paths.PRETRAINED_REFERENCE_NETWORKS
#: the weights of the collapse study: w = 0 (conditional), the reference study's peak (0.970 at w = 2) and its fall
#: (0.840 at 5, 0.385 at 10, 0.105 at 15)
COLLAPSE_WEIGHTS = (0.0, 2.0, 5.0, 10.0, 15.0)
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
    scorer: str = "ours"  # the classifier that scores the samples: "ours" or "reference" (the study's own)

    def config(self, train_steps: int | None = None) -> dict:
        """The resolved training config (``train_steps`` shortens every run, for tiny grids)."""
        extra = {"train.steps": train_steps, "train.previews": 0} if train_steps else {}
        return resolve_config(self.preset, overrides={**self.overrides, **extra})


def collapse_ladder() -> list[Rung]:
    """The reference study as it was, then one factor at a time to cfgutils' default (each rung keeps the last).

    The first three rungs share their samples (they differ in how the samples are scored); ``ddpm`` .. ``ema``
    sample the same trained network; from ``unet`` on, each rung trains its own. Training is ordered so that
    the expensive change (width 48/96) comes after the shorter schedule.
    """
    rungs = [Rung("reference", "the reference study as it was: its network, its ancestral sampler (nothing "
                  "clipped), its classifier on the raw samples", "reference", {}, REFERENCE_SAMPLER, ema=False,
                  scorer="reference")]
    ours_small = {"model.architecture": "patch-unet", "model.base_channels": 16}  # 169,348 parameters
    eps_mse = {**ours_small, "diffusion.prediction": "eps", "diffusion.loss_weighting": "uniform"}
    steps = [("clamp", "samples clamped to [-1, 1] before scoring", {"sampler": replace(REFERENCE_SAMPLER,
                                                                                         clamp_output=True)}),
             ("classifier", "scored by cfgutils' classifier instead of the reference study's", {"scorer": "ours"}),
             ("ddpm", "DDPM posterior steps with x0 clipped to [-1, 1] (1,000 steps)",
              {"sampler": SamplerSettings("ddpm", 1000)}),
             ("ddim", "DDIM, 50 steps", {"sampler": SamplerSettings("ddim", 50)}),
             ("dpmpp", "DPM-Solver++(2M), 12 steps", {"sampler": SamplerSettings("dpmpp", 12)}),
             ("ema", "EMA weights instead of the raw ones", {"ema": True}),
             ("unet", "cfgutils' UNet (patchify, GroupNorm, attention) at widths 16/32 instead of the reference "
                      "network", {"overrides": ours_small}),
             ("recipe", "our optimiser and length: AdamW 2e-3 with warm-up, cosine decay and gradient clipping, "
                        "batch 64, 1,000 steps", {"preset": "default", "overrides": eps_mse}),
             ("v", "v-prediction (plain MSE)", {"overrides": {**ours_small, "diffusion.loss_weighting": "uniform"}}),
             ("min-snr", "min-SNR-5 loss weights", {"overrides": ours_small}),
             ("width", "widths 48/96 (cfgutils' default recipe)", {"overrides": {}})]
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


#: (section, key) -> the default value at which a setting is left out of :func:`checkpoint_name`'s hash
UNHASHED_DEFAULTS = {("train", "dataset"): "mnist", ("train", "min_timestep"): 0, ("model", "architecture"): "patch-unet"}


def checkpoint_name(config: dict) -> str:
    """A file name that identifies a training config: the same config finds the same checkpoint.

    Settings at their :data:`UNHASHED_DEFAULTS` value are left out of the hash, so a config names the same
    file whether or not it spells them out.
    """
    config = {section: {k: v for k, v in values.items() if UNHASHED_DEFAULTS.get((section, k), object()) != v}
              for section, values in config.items()}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"model-{digest}.pt"


def configuration_label(rung: Rung, clip: bool | None) -> str:
    """How a rung sampled one way is named in tables and figures: ``"dpmpp"``, ``"dpmpp +clip"``."""
    return f"{rung.name} +clip" if clip else rung.name


def rung_config(rung: Rung, train_seed: int = 0, train_steps: int | None = None, dataset: str = "mnist") -> dict:
    """The resolved training config of ``rung`` for one training seed and dataset."""
    config = rung.config(train_steps)
    return {**config, "train": {**config["train"], "seed": int(train_seed), "dataset": dataset}}


def stage_pretrained(rungs: list[Rung], models_dir: Path, shipped=PRETRAINED_REFERENCE, train_seeds=(0,),
                     train_steps: int | None = None) -> list[str]:
    """Copy each shipped checkpoint whose config a rung trains (for one of ``train_seeds``) into ``models_dir``
    under the name :func:`run_study` looks for, so the study reuses it instead of training; returns the rungs
    (with the seed) it serves."""
    served = []
    for path in (Path(p) for p in shipped):
        if not path.is_file():
            continue
        config = resolve_config(base=load_checkpoint(path, MODEL_KIND)["config"])
        matching = [f"{rung.name} (seed {seed})" for rung in rungs for seed in train_seeds
                    if rung_config(rung, seed, train_steps) == config]
        target = Path(models_dir) / checkpoint_name(config)
        if matching and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        served += matching
    return served


def _scoring(classifiers: dict, name: str, test, floor_per_class: int) -> tuple:
    """(classifier, real reference, training neighbours) of scorer ``name``, built once per study, leaving room for
    a real-data floor of ``floor_per_class`` held-out images per class."""
    if name not in classifiers:
        raise UserInputError(f"no {name!r} classifier was given (needed to score this rung)")
    entry = classifiers[name]
    if not isinstance(entry, tuple):
        reference = build_reference_for(entry, test, floor_per_class)
        entry = classifiers[name] = (entry, reference, training_neighbours_for(entry, test, reference))
    return entry


def study_scales(rung: Rung, config: dict, weights) -> list[float]:
    """The scales s a rung is sampled at: every weight, or only s = 1 for a model trained without label dropout."""
    scales = [s_from_w(w) for w in weights]
    if config["train"]["p_uncond"] == 0:  # no unconditional model was trained: only s = 1 is meaningful
        scales = [s for s in scales if s == 1.0]
    if not scales:
        raise UserInputError(f"{rung.name}: without label dropout only w = 0 (s = 1) can be sampled")
    return scales


def run_study(rungs: list[Rung], classifier, weights, models_dir: Path, n_per_class: int = 10,
              seeds=(0, 1, 2), train_steps: int | None = None, max_sampler_steps: int | None = None,
              device: str = "auto", progress: bool = True, clip_arms=None, ddpm_n_per_class: int | None = None,
              dataset: str = "mnist", train_seeds=(0,), skip=(), on_configuration=None) -> tuple[list[dict], dict]:
    """Train (or reuse) and score every rung at every weight, sampling seed and training seed; returns (rows, extras).

    ``classifier`` scores the rungs whose scorer is "ours"; a dict ``{"ours": ..., "reference": ...}`` gives the
    reference study's classifier too. ``clip_arms=(False, True)`` samples every rung without and with x0 clipping
    (None: as the rung says). ``ddpm_n_per_class`` lowers the sample count of the 1,000-step cells (DDPM and
    the ancestral sampler). ``train_seeds``: one trained network per rung and seed. Rows: one per (rung,
    training seed, clipping, w) with every metric and its 95% interval (:func:`scale_summaries`), the real-data
    floor's Frechet distance at the same sample count, and the wall times. Extras: per configuration, the samples
    of the first seed at each weight (for strips) and whether its model was trained here. Rungs whose samples
    differ only in how they are scored sample once. Configurations named in ``skip`` are left out (a resumed
    study); ``on_configuration(label, rows, extra)`` sees each one as it completes.
    """
    test = load_dataset(dataset, "test")
    classifiers = dict(classifier) if isinstance(classifier, dict) else {"ours": classifier}
    rows, extras, cache = [], {}, {}
    for rung in rungs:
        scorer, reference, neighbours = _scoring(classifiers, rung.scorer, test, n_per_class * len(seeds))
        for train_seed in train_seeds:
            labels = [configuration_label(rung, clip) + (f" #{train_seed}" if len(train_seeds) > 1 else "")
                      for clip in clip_arms or (None,)]
            if all(label in skip for label in labels):
                continue
            config = rung_config(rung, train_seed, train_steps, dataset)
            start = time.perf_counter()
            loaded, trained = load_or_train(models_dir / checkpoint_name(config), config, device, progress=progress)
            train_seconds = loaded.metadata.get("wall_time_s", time.perf_counter() - start)
            if not rung.ema:
                loaded = load_model(loaded.path, device, raw_weights=True)
            scales = study_scales(rung, config, weights)
            for arm, clip in enumerate(clip_arms or (None,)):
                settings = rung.sampler if clip is None else replace(rung.sampler, clip_x0=clip)
                if max_sampler_steps and settings.resolved_steps() > max_sampler_steps:
                    settings = replace(settings, steps=max_sampler_steps)
                long_chain = rung.sampler.sampler in ("ddpm", "ancestral")
                n = ddpm_n_per_class if ddpm_n_per_class and long_chain else n_per_class
                key = (str(loaded.path), loaded.weights, n, tuple(replace(settings, clamp_output=False).describe().items()))
                result = guidance_sweep(loaded, scorer, scales, n, settings, seeds, reference, progress=progress,
                                        real_split=test, neighbours=neighbours, sample_cache=cache, cache_key=key)
                label, first_row = labels[arm], len(rows)
                rows += [{"configuration": label, "rung": rung.name, "changed": rung.changed, "train_seed": train_seed,
                          **settings.describe(), "scorer": rung.scorer, "weights": "ema" if rung.ema else "raw",
                          "p_uncond": config["train"]["p_uncond"], "train_steps": config["train"]["steps"],
                          "train_seconds": train_seconds, "sample_seconds": result.wall_time_s / len(scales),
                          **summary, "floor_frechet_distance": result.floor["frechet_distance"],
                          "correct_bits": outcome_bits(result.correct[summary["s"]])}
                         for summary in scale_summaries(result)]
                extras[label] = {"strips": result.strips, "floor": result.floor,
                                 "trained_here": trained is not None and arm == 0,
                                 "training_data": str(loaded.metadata.get("data_source", "unknown"))}
                if config["train"]["p_uncond"] == 0:  # show what guiding it anyway does
                    extras[label]["unguidable"] = unguidable_strips(loaded, settings, seeds[0])
                if on_configuration is not None:
                    on_configuration(label, rows[first_row:], extras[label])
    return rows, extras


def outcome_bits(correct) -> str:
    """Per-sample outcomes as a string of 0 and 1 (sample order: seed, then class, then sample), kept in a
    study's rows so that two configurations drawn from the same noise and labels can be compared *paired*, even
    after a resumed run (07)."""
    return "".join("1" if bool(value) else "0" for value in correct)


#: the scales a model trained without label dropout is sampled at anyway, to show why only s = 1 works
UNGUIDABLE_SCALES = (0.0, 1.0, 3.0, 11.0)


def unguidable_strips(loaded, settings: SamplerSettings, seed: int) -> dict:
    """One sample of every class at each of :data:`UNGUIDABLE_SCALES` (for a model without an unconditional branch)."""
    labels = class_labels("all", 1)
    return {s: generate(loaded.model, loaded.diffusion, labels, s, settings, seed).cpu() for s in UNGUIDABLE_SCALES}
