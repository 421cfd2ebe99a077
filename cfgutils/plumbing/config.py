"""Run configs: the model, diffusion and training settings of a run, merged from presets, files and flags.

A resolved config is a plain dict ``{"model": ..., "diffusion": ..., "train": ...}``; checkpoints store
it, and resuming or loading rebuilds every setting from it (notebook 03-train).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.diffusion import DiffusionConfig
from ..core.unet import UNetConfig
from ..errors import UserInputError, config_from_dict, finite_number, one_of, positive_int
from .data import dataset_info

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
LR_SCHEDULES = ("constant", "cosine", "linear")
SECTIONS = ("model", "diffusion", "train")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of a run; saved with every checkpoint (03-train)."""

    steps: int = 1000  # total optimizer steps of the run (the length of the lr schedule)
    batch_size: int = 64  # effective batch (split across processes under torchrun)
    lr: float = 2e-3  # peak Adam learning rate
    lr_schedule: str = "cosine"  # after warm-up: constant, cosine or linear decay to 0
    warmup_steps: int = 100  # linear lr warm-up
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    min_timestep: int = 0  # training timesteps are drawn from min_timestep .. T-1 (the reference study: 1)
    p_uncond: float = 0.1  # probability that a label is replaced by the null label
    ema_decay: float = 0.999  # EMA decay after warm-up; decay at step k is min(ema_decay, (1+k)/(10+k))
    seed: int = 0
    dataset: str = "mnist"  # the training data: mnist or fashion-mnist (cfgutils.plumbing.data.DATASETS)
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    log_every: int = 25  # steps between log rows
    previews: int = 4  # preview grids at evenly spaced points of the run (0 = none)

    def validate(self) -> None:
        """Raise :class:`UserInputError` for unusable values (03-train)."""
        positive_int(self.steps, "steps")
        positive_int(self.batch_size, "batch size")
        if finite_number(self.lr, "lr") <= 0:
            raise UserInputError(f"lr must be a positive finite number, got {self.lr!r}")
        finite_number(self.p_uncond, "p_uncond", 0.0, 1.0)
        one_of(self.lr_schedule, LR_SCHEDULES, "lr schedule")
        dataset_info(self.dataset)
        if not 0.0 <= finite_number(self.ema_decay, "ema_decay") < 1.0:
            raise UserInputError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("checkpoint_every", "log_every"):
            positive_int(getattr(self, name), name)
        for name in ("warmup_steps", "previews", "min_timestep"):
            positive_int(getattr(self, name), name, minimum=0)


def default_config(preset: str = "default") -> dict:
    """The resolved config dict of a named preset: "default", "reference" (the reference study's network and
    recipe) or "reference-recipe" (its recipe on cfgutils' UNet) (03-train)."""
    return resolve_config(CONFIGS_DIR / f"{preset}.yaml")


def resolve_config(config_file: str | Path | None = None, opts: list[str] | None = None,
                   overrides: dict[str, Any] | None = None, base: dict | None = None) -> dict:
    """Merge base (or the defaults) <- YAML file <- ``--opts`` pairs <- flag overrides; validate (03-train).

    Keys are dotted: ``train.lr``, ``model.base_channels``; ``opts`` is ``[KEY, VALUE, KEY, VALUE, ...]``
    with values parsed as YAML. A config file may also name a preset: ``default``, ``reference`` or
    ``reference-recipe``.
    """
    merged = {"model": UNetConfig().to_dict(), "diffusion": DiffusionConfig().to_dict(), "train": asdict(TrainConfig())}
    for section, values in (base or {}).items():
        if section in merged:
            merged[section].update(copy.deepcopy(values))
    if config_file is not None:
        for section, values in read_config_file(config_file).items():
            merged[section].update(values)
    pairs = parse_opts(opts or [])
    pairs.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in pairs.items():
        section, _, name = key.partition(".")
        if section not in merged or not name:
            raise UserInputError(f"config key {key!r} must look like model.X, diffusion.X or train.X")
        merged[section][name] = value
    model = config_from_dict(UNetConfig, merged["model"], "model")
    diffusion = config_from_dict(DiffusionConfig, merged["diffusion"], "diffusion")
    train = config_from_dict(TrainConfig, merged["train"], "train")
    return {"model": model.to_dict(), "diffusion": diffusion.to_dict(), "train": asdict(train)}


def read_config_file(config_file: str | Path) -> dict:
    """The sections of a YAML config file, or of the preset of that name (03-train)."""
    path = Path(config_file)
    if not path.exists() and (CONFIGS_DIR / f"{config_file}.yaml").exists():
        path = CONFIGS_DIR / f"{config_file}.yaml"
    if not path.is_file():
        raise UserInputError(f"config file {config_file} not found (presets: "
                             f"{', '.join(p.stem for p in sorted(CONFIGS_DIR.glob('*.yaml')))})")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserInputError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(loaded, dict) or set(loaded) - set(SECTIONS):
        raise UserInputError(f"config file {path} must be a mapping with sections {', '.join(SECTIONS)}")
    for section, values in loaded.items():
        if not isinstance(values, dict):
            raise UserInputError(f"config file {path}: section {section!r} must be a mapping")
    return loaded


def parse_opts(opts: list[str]) -> dict[str, Any]:
    """``[KEY, VALUE, ...]`` from ``--opts`` as a dict, each value parsed as YAML (03-train)."""
    if len(opts) % 2:
        raise UserInputError(f"--opts needs KEY VALUE pairs, got an odd number of items: {' '.join(opts)}")
    pairs = {}
    for key, value in zip(opts[::2], opts[1::2]):
        try:
            pairs[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UserInputError(f"--opts {key}: cannot parse value {value!r}") from error
    return pairs
