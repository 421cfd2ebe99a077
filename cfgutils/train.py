"""Training with classifier-free label dropout, EMA, exact resume and torchrun (notebook 03-train).

Library: :func:`train`, :func:`load_model`, :func:`load_or_train`, :func:`resolve_config`.
CLI: ``python -m cfgutils train OUT.pt [-l PREV.pt] [-c CONFIG.yaml] [--opts K V ...] [--steps N] ...``
(also under ``torchrun --nproc_per_node N -m cfgutils train ...``).

Determinism: every random draw of a run (initial weights, batch order, timesteps, noise, label
dropout) comes from generators seeded by ``train.seed``; their states are saved in each checkpoint,
so on a CPU K steps + resume + K steps give bit-identical weights to 2K uninterrupted steps.
Under torchrun every process draws the *global* batch's randomness and trains on its slice of it:
``batch_size`` is the effective (global) batch, split evenly across processes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from . import checkpoint as ckpt
from . import paths
from .data import MnistSplit, load_mnist
from .device import keep_freed_memory, pick_device
from .diffusion import DiffusionConfig, GaussianDiffusion, drop_labels
from .errors import UserInputError
from .unet import ConditionalUNet, UNetConfig

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
LR_SCHEDULES = ("constant", "cosine", "linear")
KIND = "cfg-unet"


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
    p_uncond: float = 0.1  # probability that a label is replaced by the null label
    ema_decay: float = 0.999  # EMA decay after warm-up; decay at step k is min(ema_decay, (1+k)/(10+k))
    seed: int = 0
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    log_every: int = 25  # steps between log rows
    previews: int = 4  # preview grids at evenly spaced points of the run (0 = none)

    def validate(self) -> None:
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise UserInputError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise UserInputError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserInputError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (isinstance(self.p_uncond, (int, float)) and 0.0 <= self.p_uncond <= 1.0):
            raise UserInputError(f"p_uncond must be in [0, 1], got {self.p_uncond!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserInputError(f"unknown lr schedule {self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserInputError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("warmup_steps", "checkpoint_every", "log_every", "previews"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or (name in ("checkpoint_every", "log_every") and value == 0):
                raise UserInputError(f"{name} must be a {'positive' if 'every' in name else 'non-negative'} "
                                     f"integer, got {value!r}")


def _coerce_section(cls, values: dict, name: str) -> dict:
    """Check keys against the dataclass and coerce YAML/CLI values to the field's type ("3e-4" -> 3e-4)."""
    defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
    unknown = set(values) - set(defaults)
    if unknown:
        raise UserInputError(f"unknown {name} config keys: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(defaults))})")
    coerced = {}
    for key, value in values.items():
        kind = type(defaults[key])
        try:
            if kind is float and isinstance(value, (str, int)) and not isinstance(value, bool):
                value = float(value)
            elif kind is int and isinstance(value, str):
                value = int(value)
            elif kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif kind is tuple and isinstance(value, (list, tuple)):
                value = tuple(value)
        except ValueError as error:
            raise UserInputError(f"{name}.{key}: expected a {kind.__name__}, got {value!r}") from error
        coerced[key] = value
    return coerced


def default_config(preset: str = "default") -> dict:
    """The resolved config dict of a named preset ("default" or "reference") (03-train)."""
    return resolve_config(CONFIGS_DIR / f"{preset}.yaml")


def resolve_config(config_file: str | Path | None = None, opts: list[str] | None = None,
                   overrides: dict[str, Any] | None = None, base: dict | None = None) -> dict:
    """Merge base (or the defaults) <- YAML file <- ``--opts`` pairs <- flag overrides; validate (03-train).

    Keys are dotted: ``train.lr``, ``model.base_channels``; ``opts`` is ``[KEY, VALUE, KEY, VALUE, ...]``
    with values parsed as YAML. A config file may also name a preset: ``default`` or ``reference``.
    """
    merged = {"model": UNetConfig().to_dict(), "diffusion": DiffusionConfig().to_dict(), "train": asdict(TrainConfig())}
    if base is not None:
        for section in merged:
            merged[section].update(copy.deepcopy(base.get(section, {})))
    if config_file is not None:
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
        if not isinstance(loaded, dict) or set(loaded) - set(merged):
            raise UserInputError(f"config file {path} must be a mapping with sections {', '.join(merged)}")
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise UserInputError(f"config file {path}: section {section!r} must be a mapping")
            merged[section].update(values)
    pairs: dict[str, Any] = {}
    opts = opts or []
    if len(opts) % 2:
        raise UserInputError(f"--opts needs KEY VALUE pairs, got an odd number of items: {' '.join(opts)}")
    for key, value in zip(opts[::2], opts[1::2]):
        try:
            pairs[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UserInputError(f"--opts {key}: cannot parse value {value!r}") from error
    pairs.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in pairs.items():
        section, _, name = key.partition(".")
        if section not in merged or not name:
            raise UserInputError(f"config key {key!r} must look like model.X, diffusion.X or train.X")
        merged[section][name] = value
    model = UNetConfig.from_dict(_coerce_section(UNetConfig, merged["model"], "model"))
    diffusion = DiffusionConfig.from_dict(_coerce_section(DiffusionConfig, merged["diffusion"], "diffusion"))
    train_config = TrainConfig(**_coerce_section(TrainConfig, merged["train"], "train"))
    train_config.validate()
    return {"model": model.to_dict(), "diffusion": diffusion.to_dict(), "train": asdict(train_config)}


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate at optimizer step ``step`` (0-based): warm-up, then the schedule (03-train)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (1 - progress)


def ema_decay_at(step: int, config: TrainConfig) -> float:
    """EMA decay after ``step`` updates: min(ema_decay, (1+step)/(10+step)), so early weights fade fast (03-train)."""
    return min(config.ema_decay, (1 + step) / (10 + step))


def build_model(config: dict, seed: int) -> ConditionalUNet:
    """A fresh :class:`ConditionalUNet` from a resolved config, initialised from ``seed`` (03-train)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConditionalUNet(UNetConfig.from_dict(config["model"]))


def to_training_layout(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device``; on a CPU also to channels-last memory (03-train, benchmarks).

    oneDNN runs convolutions natively in channels-last (NHWC); in the default layout it reorders every
    activation in and out of each convolution. Values are the same up to float rounding.
    """
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the run's settings; the fused (one kernel for all tensors) version on CPU and CUDA (03-train)."""
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2),
                             weight_decay=config.weight_decay, fused=fused)


def apply_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list, ema_params: list,
                 ema_decay: float, grad_clip: float) -> None:
    """One optimisation step: backward, gradient clipping, AdamW, EMA update (03-train, benchmarks)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay)


# --------------------------------------------------------------------------------------------- batches
class BatchSampler:
    """Deterministic batch order: epoch e is a permutation drawn from a generator seeded by (seed, e)."""

    def __init__(self, n_items: int, batch_size: int, seed: int):
        if batch_size > n_items:
            raise UserInputError(f"batch size {batch_size} exceeds the {n_items} training images")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.per_epoch = n_items // batch_size
        self._epoch, self._permutation = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.n_items, generator=generator)
        return self._permutation[position * self.batch_size:(position + 1) * self.batch_size]


# --------------------------------------------------------------------------------------------- distributed
@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str | None) -> tuple[DistributedContext, torch.device]:
    """Initialise torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(), pick_device(device_request)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank), device


# --------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train` returns: the raw and EMA models, the log rows, and where things were written."""

    model: ConditionalUNet
    ema_model: ConditionalUNet
    diffusion: GaussianDiffusion
    config: dict
    history: list[dict]
    checkpoint_path: Path | None
    run_dir: Path | None
    data_source: str
    step: int
    wall_time_s: float


def _save_training_checkpoint(path: Path, config: dict, model, ema_model, optimizer, generator: torch.Generator,
                              step: int, data_source: str, images_seen: int, wall_time_s: float,
                              world_size: int) -> None:
    state = {"model": model.state_dict(), "ema": ema_model.state_dict(), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state()}
    metadata = ckpt.base_metadata(data_source, step, images_seen=images_seen, wall_time_s=round(wall_time_s, 2),
                                  complete=step >= config["train"]["steps"], world_size=world_size)
    ckpt.save_checkpoint(path, KIND, config, state, metadata)


def _check_resume_config(requested: dict, stored: dict, path: Path) -> None:
    for section in ("model", "diffusion"):
        differences = [f"{section}.{k}: checkpoint {stored[section].get(k)!r}, requested {v!r}"
                       for k, v in requested[section].items() if stored[section].get(k) != v]
        if differences:
            raise UserInputError(f"checkpoint {path} does not match the requested {section}: " + "; ".join(differences))


def _write_preview(run_dir: Path, ema_model, diffusion, step: int, seed: int) -> Path:
    """Two EMA samples of each digit at s = 3 (w = 2), saved as ``preview-stepNNNNNN.png`` in the run dir."""
    from torchvision.utils import save_image

    from .sampling import SamplerSettings, digit_labels, generate

    images = generate(ema_model, diffusion, digit_labels("all", 2), 3.0, SamplerSettings("dpmpp"), seed=seed)
    grid = images.reshape(10, 2, 1, 28, 28).transpose(0, 1).reshape(20, 1, 28, 28)  # row 1: 0-9, row 2: 0-9
    path = run_dir / f"preview-step{step:06d}.png"
    save_image((grid.cpu() + 1) / 2, path, nrow=10, padding=2, pad_value=1.0)
    return path


def train(config: dict, train_split: MnistSplit | None = None, checkpoint_path: str | Path | None = None,
          resume_from: str | Path | None = None, run_dir: str | Path | None = None, device: str | None = "auto",
          stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Train the CFG UNet with label dropout and EMA; checkpoint atomically; resume exactly (03-train).

    ``config`` is a dict from :func:`resolve_config`. ``resume_from`` continues a checkpoint's run
    (its model and diffusion config must match). ``stop_at`` ends the run early at that step
    (with a checkpoint), leaving the schedule as if it went on.
    """
    config = resolve_config(base=config)
    train_config = TrainConfig(**config["train"])
    context, device = init_distributed(device)
    if train_config.batch_size % context.world_size:
        raise UserInputError(f"batch size {train_config.batch_size} is not divisible by {context.world_size} processes")
    if checkpoint_path is not None:
        checkpoint_path = ckpt.check_output_path(checkpoint_path, "checkpoint")
    resume_payload = None
    if resume_from is not None:
        resume_payload = ckpt.load_checkpoint(resume_from, KIND)
        if "optimizer" not in resume_payload["state"]:
            raise UserInputError(f"{resume_from} was exported for sampling (EMA weights only) and cannot be resumed")
        _check_resume_config(config, resume_payload["config"], Path(resume_from))
    if run_dir is not None:
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserInputError(f"run directory {run_dir} is a file")
    if train_split is None:
        train_split = load_mnist("train")

    diffusion = GaussianDiffusion(DiffusionConfig.from_dict(config["diffusion"]))
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on re-allocated activations (see its docstring)
    model = to_training_layout(build_model(config, train_config.seed), device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, train_config, device)
    generator = torch.Generator().manual_seed(train_config.seed)
    start_step, images_seen, previous_wall = 0, 0, 0.0
    if resume_payload is not None:
        state = resume_payload["state"]
        model.load_state_dict(state["model"])
        ema_model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_step = int(resume_payload["metadata"]["step"])
        images_seen = int(resume_payload["metadata"].get("images_seen", 0))
        previous_wall = float(resume_payload["metadata"].get("wall_time_s", 0.0))
    end_step = train_config.steps if stop_at is None else min(int(stop_at), train_config.steps)

    images = train_split.images.to(device)
    sampler = BatchSampler(len(train_split), train_config.batch_size, train_config.seed)
    local = train_config.batch_size // context.world_size
    local_slice = slice(context.rank * local, (context.rank + 1) * local)
    network = model
    if context.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    history: list[dict] = []
    log_writer, tb_writer = None, None
    preview_steps = sorted({round(train_config.steps * (i + 1) / train_config.previews)
                            for i in range(train_config.previews)}) if train_config.previews else []
    if context.is_main and run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = run_dir / "log.csv"
        kept_rows = []
        if start_step > 0 and log_path.exists():  # drop rows logged after the checkpoint we resume from
            with open(log_path, newline="") as handle:
                kept_rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= start_step]
        log_file = open(log_path, "w", newline="")
        log_writer = csv.DictWriter(log_file, fieldnames=["step", "loss", "lr", "images_per_s", "elapsed_s"])
        log_writer.writeheader()
        log_writer.writerows(kept_rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb_writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            tb_writer = None

    bar = None
    if progress and context.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=end_step, initial=start_step, desc="training", unit="step", dynamic_ncols=True)
    model.train()
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema_model.parameters()]
    running_loss, running_count = 0.0, 0
    window_start, window_images = time.perf_counter(), 0
    run_start = time.perf_counter()

    def wall() -> float:
        return previous_wall + time.perf_counter() - run_start

    try:
        for step in range(start_step, end_step):
            batch_index = sampler.indices(step)
            t = torch.randint(0, diffusion.timesteps, (train_config.batch_size,), generator=generator)
            noise = torch.randn((train_config.batch_size, 1, 28, 28), generator=generator)
            batch_labels = drop_labels(train_split.labels[batch_index], train_config.p_uncond,
                                       model.config.null_label, generator)
            lr = learning_rate(step, train_config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = diffusion.training_loss(network, images[batch_index[local_slice].to(device)],
                                           batch_labels[local_slice].to(device), t[local_slice].to(device),
                                           noise[local_slice].to(device))
            apply_update(loss, optimizer, params, ema_params, ema_decay_at(step, train_config), train_config.grad_clip)
            images_seen += train_config.batch_size
            done = step + 1
            running_loss += float(loss.detach())
            running_count += 1
            window_images += train_config.batch_size
            if bar is not None:
                bar.update(1)
            if done % train_config.log_every == 0 or done == end_step:
                elapsed = time.perf_counter() - window_start
                row = {"step": done, "loss": running_loss / running_count, "lr": lr,
                       "images_per_s": window_images / elapsed if elapsed > 0 else float("nan"),
                       "elapsed_s": wall()}
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
                if log_writer is not None:
                    log_writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                    log_file.flush()
                if tb_writer is not None:
                    for key in ("loss", "lr", "images_per_s"):
                        tb_writer.add_scalar(f"train/{key}", row[key], done)
                running_loss, running_count = 0.0, 0
                window_start, window_images = time.perf_counter(), 0
            if context.is_main and run_dir is not None and done in preview_steps:
                _write_preview(run_dir, ema_model, diffusion, done, train_config.seed)
                window_start = time.perf_counter()  # previews are not training time
            if context.is_main and checkpoint_path is not None and (
                    done % train_config.checkpoint_every == 0 or done == end_step):
                _save_training_checkpoint(checkpoint_path, config, model, ema_model, optimizer, generator, done,
                                          train_split.source, images_seen, wall(), context.world_size)
    finally:
        if bar is not None:
            bar.close()
        if log_writer is not None:
            log_file.close()
        if tb_writer is not None:
            tb_writer.close()
        if context.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
    model.eval()
    ema_model.eval()
    return TrainResult(model, ema_model, diffusion, config, history, checkpoint_path, run_dir, train_split.source,
                       end_step if end_step > start_step else start_step, wall())


# --------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A diffusion model ready to sample: network (EMA weights unless asked otherwise), diffusion, metadata."""

    model: ConditionalUNet
    diffusion: GaussianDiffusion
    config: dict
    metadata: dict
    path: Path | None
    weights: str  # "ema" or "raw"


def load_model(path: str | Path, device: str | torch.device | None = "auto", raw_weights: bool = False) -> LoadedModel:
    """Load a CFG UNet checkpoint for sampling, EMA weights by default (04-cfg-sampling)."""
    payload = ckpt.load_checkpoint(path, KIND)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    if raw_weights and "model" not in payload["state"]:
        raise ckpt.CheckpointError(f"{path} was exported with EMA weights only; raw weights are not in it")
    try:
        config = resolve_config(base=payload["config"])
        model = ConditionalUNet(UNetConfig.from_dict(config["model"]))
        model.load_state_dict(payload["state"]["model" if raw_weights else "ema"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise ckpt.CheckpointError(f"checkpoint {path} does not fit the model it describes: "
                                   f"{str(error).splitlines()[0][:160]}") from error
    model.to(device).eval().requires_grad_(False)
    diffusion = GaussianDiffusion(DiffusionConfig.from_dict(config["diffusion"]))
    return LoadedModel(model, diffusion, config, payload["metadata"], Path(path), "raw" if raw_weights else "ema")


def export_for_sampling(source: str | Path, target: str | Path) -> Path:
    """Write a small copy of a training checkpoint with the EMA weights only (for shipping) (05-classifier-eval)."""
    payload = ckpt.load_checkpoint(source, KIND)
    target = ckpt.check_output_path(target, "export")
    metadata = {**payload["metadata"], "exported_from": Path(source).name, "contents": "EMA weights only"}
    return ckpt.save_checkpoint(target, KIND, payload["config"], {"ema": payload["state"]["ema"]}, metadata)


def find_model(preferred: str | Path | None = None) -> Path | None:
    """The checkpoint 04/05 use: ``preferred`` if given (it must exist), else 03's output, else the shipped one (04-cfg-sampling)."""
    if preferred:
        if not Path(preferred).is_file():
            raise ckpt.CheckpointError(f"checkpoint {preferred} does not exist")
        return Path(preferred)
    for candidate in (paths.TRAINED_MODEL, paths.PRETRAINED_MODEL):
        if candidate.is_file():
            return candidate
    return None


def load_or_train(checkpoint_path: str | Path, config: dict, device: str | None = "auto",
                  run_dir: str | Path | None = None, progress: bool = True) -> tuple[LoadedModel, TrainResult | None]:
    """Load ``checkpoint_path`` if it holds a finished run of this config, else train it there (03-train)."""
    checkpoint_path = Path(checkpoint_path)
    config = resolve_config(base=config)
    if checkpoint_path.is_file():
        payload = ckpt.load_checkpoint(checkpoint_path, KIND)
        if payload["config"] == config and payload["metadata"].get("complete"):
            return load_model(checkpoint_path, device), None
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    result = train(config, checkpoint_path=checkpoint_path, run_dir=run_dir, device=device, progress=progress)
    return load_model(checkpoint_path, device), result


# --------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train", help="train the class-conditional diffusion model (CFG label dropout, EMA)",
        description="Train the CFG UNet on MNIST and write OUT.pt (state_dicts + config + metadata), "
                    "atomically, every --checkpoint-every steps and at the end. Under "
                    "`torchrun --nproc_per_node N -m cfgutils train ...` it trains with DistributedDataParallel; "
                    "--batch-size is then the effective batch, split across the N processes.")
    parser.add_argument("out", metavar="OUT.pt", help="checkpoint to write (its folder must exist)")
    parser.add_argument("-l", "--load", metavar="PREV.pt",
                        help="resume this checkpoint's run exactly (model and diffusion config must match)")
    parser.add_argument("-c", "--config", metavar="CONFIG.yaml",
                        help="YAML config file, or a preset name: default (fast CPU recipe) or reference "
                             "(the reference study's recipe)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides as dotted KEY VALUE pairs, e.g. --opts train.lr 1e-3 model.base_channels 48")
    parser.add_argument("--steps", type=int, help="total training steps of the run (train.steps)")
    parser.add_argument("--batch-size", type=int, help="effective batch size (train.batch_size)")
    parser.add_argument("--lr", type=float, help="peak learning rate (train.lr)")
    parser.add_argument("--p-uncond", type=float, help="label dropout probability in [0, 1] (train.p_uncond)")
    parser.add_argument("--seed", type=int, help="seed of every random draw of the run (train.seed)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (train.checkpoint_every)")
    parser.add_argument("--stop-at", type=int, metavar="STEP",
                        help="stop after this step (checkpoint written) as if interrupted; resume later with -l")
    parser.add_argument("--run-dir", help="folder for config.yaml, log.csv, previews, tensorboard "
                                          "(default: data/runs/<OUT name>)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_cli)

    export = subparsers.add_parser("export", help="copy a checkpoint with EMA weights only (small, for sampling)",
                                   description="Write OUT.pt with the EMA weights, config and metadata of MODEL.pt "
                                               "(no raw weights, no optimizer state): what data/pretrained/ ships.")
    export.add_argument("model", metavar="MODEL.pt")
    export.add_argument("out", metavar="OUT.pt")
    export.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    path = export_for_sampling(args.model, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, EMA weights only)")
    return 0


def _run_cli(args: argparse.Namespace) -> int:
    out = ckpt.check_output_path(args.out, "output")
    base = None
    if args.load:
        base = ckpt.load_checkpoint(args.load, KIND)["config"]
    overrides = {"train.steps": args.steps, "train.batch_size": args.batch_size, "train.lr": args.lr,
                 "train.p_uncond": args.p_uncond, "train.seed": args.seed,
                 "train.checkpoint_every": args.checkpoint_every}
    if base is not None and args.config is None and not args.opts:
        config = resolve_config(base=base, overrides=overrides)
    else:
        config = resolve_config(args.config, args.opts, overrides)
    if args.stop_at is not None and args.stop_at <= 0:
        raise UserInputError(f"--stop-at must be a positive step, got {args.stop_at}")
    run_dir = Path(args.run_dir) if args.run_dir else paths.RUNS_DIR / out.stem
    result = train(config, checkpoint_path=out, resume_from=args.load, run_dir=run_dir, device=args.device,
                   stop_at=args.stop_at, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        print(f"trained to step {result.step} in {result.wall_time_s:.0f} s (data: {result.data_source}); "
              f"last loss {last.get('loss', float('nan')):.4f}; checkpoint {out}; run dir {run_dir}")
    return 0
