"""Training the class-conditional diffusion model with label dropout and EMA (notebook 03-train).

:func:`training_step` is the whole algorithm of one step; :func:`train` is the loop around it (batch
order, learning rate, logging, checkpoints, resume, torchrun); :func:`load_or_train` is what notebook
03 calls. The command-line twin is ``python -m cfgutils train`` (:mod:`cfgutils.cli.train`).

Determinism: every random draw of a run (initial weights, batch order, timesteps, noise, label
dropout) comes from generators seeded by ``train.seed``; their states are saved in each checkpoint,
so on a CPU K steps + resume + K steps give bit-identical weights to 2K uninterrupted steps.
Under torchrun every process draws the *global* batch's randomness and trains on its slice of it:
``batch_size`` is the effective (global) batch, split evenly across processes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.diffusion import DiffusionConfig, GaussianDiffusion, drop_labels
from ..core.seeding import batch_indices
from ..core.unet import ConditionalUNet, UNetConfig, build_network
from ..errors import UserInputError
from ..plumbing import checkpoint as ckpt
from ..plumbing.config import TrainConfig, resolve_config
from ..plumbing.data import ImageSplit, dataset_info, load_dataset
from ..plumbing.device import keep_freed_memory
from ..plumbing.distributed import DistributedContext, distributed
from ..core.optim import ema_decay_at, effective_ema_decay, make_optimizer, scheduled_lr, set_learning_rate, update_ema
from .runlog import RunLogger


@dataclass
class TrainingRun:
    """Everything a run carries from step to step: networks, optimizer, generator, counters."""

    model: ConditionalUNet  # the raw weights (what the optimizer updates)
    ema_model: ConditionalUNet  # the exponential moving average of them (what sampling uses)
    network: torch.nn.Module  # the model, or its DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # timesteps, noise and label dropout of every step
    diffusion: GaussianDiffusion
    settings: TrainConfig
    device: torch.device
    shard: slice = field(default_factory=lambda: slice(None))  # this process's part of the global batch
    step: int = 0
    images_seen: int = 0

    @property
    def params(self) -> list[torch.Tensor]:
        """The trained weights (what gradient clipping sees)."""
        return list(self.model.parameters())


def training_step(run: TrainingRun, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One step of CFG training: drop labels, noise, predict, weighted loss, backward, clip, AdamW, EMA (03-train)."""
    n, settings, shard, device = len(labels), run.settings, run.shard, run.device  # shard: this process's part
    t = torch.randint(settings.min_timestep, run.diffusion.timesteps, (n,), generator=run.generator)
    noise = torch.randn((n, 1, 28, 28), generator=run.generator)
    labels = drop_labels(labels, settings.p_uncond, run.model.config.null_label, run.generator)
    loss = run.diffusion.training_loss(run.network, images[shard].to(device), labels[shard].to(device),
                                       t[shard].to(device), noise[shard].to(device))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.params, settings.grad_clip)
    run.optimizer.step()
    update_ema(run.ema_model, run.model, ema_decay_at(run.step, settings.ema_decay))
    return loss.detach()


def learning_rate(step: int, settings: TrainConfig) -> float:
    """The learning rate at optimizer step ``step`` (0-based): warm-up, then the schedule (03-train)."""
    return scheduled_lr(step, settings.lr, settings.warmup_steps, settings.lr_schedule, total_steps=settings.steps)


def build_model(config: dict, seed: int) -> torch.nn.Module:
    """A fresh network (:class:`ConditionalUNet`, or the reference study's) from a resolved config, initialised
    from ``seed`` (03-train)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(UNetConfig.from_dict(config["model"]))


def to_training_layout(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device``; on a CPU also to channels-last memory (03-train, benchmarks).

    oneDNN runs convolutions natively in channels-last (NHWC); in the default layout it reorders every
    activation in and out of each convolution. Values are the same up to float rounding.
    """
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def start_run(config: dict, device: torch.device, context: DistributedContext, resume: dict | None) -> TrainingRun:
    """Build the model, its EMA copy, AdamW and the generator, restored from ``resume`` (a checkpoint) if given."""
    settings = TrainConfig(**config["train"])
    if settings.batch_size % context.world_size:
        raise UserInputError(f"batch size {settings.batch_size} is not divisible by {context.world_size} processes")
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on re-allocated activations (see its docstring)
    model = to_training_layout(build_model(config, settings.seed), device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, settings.lr, device, settings.weight_decay, settings.adam_beta2)
    network = model
    if context.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    local = settings.batch_size // context.world_size
    run = TrainingRun(model, ema_model, network, optimizer, torch.Generator().manual_seed(settings.seed),
                      GaussianDiffusion(DiffusionConfig.from_dict(config["diffusion"])), settings, device,
                      slice(context.rank * local, (context.rank + 1) * local))
    if resume is not None:
        for name, part in (("model", model), ("ema", ema_model), ("optimizer", optimizer)):
            part.load_state_dict(resume["state"][name])
        run.generator.set_state(resume["state"]["generator"])
        run.step, run.images_seen = int(resume["metadata"]["step"]), int(resume["metadata"].get("images_seen", 0))
    return run


def save_run(path: Path, run: TrainingRun, config: dict, data_source: str, wall_time_s: float, world_size: int) -> None:
    """Write the run's checkpoint: raw, EMA and optimizer state, generator state, config, metadata (03-train)."""
    state = {"model": run.model.state_dict(), "ema": run.ema_model.state_dict(),
             "optimizer": run.optimizer.state_dict(), "generator": run.generator.get_state()}
    info = dataset_info(run.settings.dataset)
    metadata = ckpt.base_metadata(data_source, run.step, dataset=info.name, class_names=list(info.class_names),
                                  images_seen=run.images_seen,
                                  wall_time_s=round(wall_time_s, 2), complete=run.step >= run.settings.steps,
                                  world_size=world_size,
                                  ema_decay_effective=round(effective_ema_decay(run.step, run.settings.ema_decay), 6))
    ckpt.save_checkpoint(path, ckpt.MODEL_KIND, config, state, metadata)


def write_preview(run_dir: Path, run: TrainingRun) -> Path:
    """Two EMA samples of each class at s = 3 (w = 2), saved as ``preview-stepNNNNNN.png`` in the run dir."""
    from torchvision.utils import save_image

    from ..core.samplers import SamplerSettings, class_labels, generate

    images = generate(run.ema_model, run.diffusion, class_labels("all", 2), 3.0, SamplerSettings("dpmpp"),
                      seed=run.settings.seed)
    grid = images.reshape(10, 2, 1, 28, 28).transpose(0, 1).reshape(20, 1, 28, 28)  # row 1: 0-9, row 2: 0-9
    path = run_dir / f"preview-step{run.step:06d}.png"
    save_image((grid.cpu() + 1) / 2, path, nrow=10, padding=2, pad_value=1.0)
    return path


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


def check_training_inputs(config: dict, checkpoint_path, resume_from, run_dir, end_step: int) -> tuple:
    """Validate a run's paths and resume checkpoint before anything runs; returns (checkpoint, resume, run dir)."""
    if checkpoint_path is not None:
        checkpoint_path = ckpt.check_output_path(checkpoint_path, "checkpoint")
    if config["train"]["min_timestep"] >= config["diffusion"]["timesteps"]:
        raise UserInputError(f"train.min_timestep ({config['train']['min_timestep']}) must be below the "
                             f"T = {config['diffusion']['timesteps']} timesteps")
    resume = None
    if resume_from is not None:
        resume = ckpt.load_checkpoint(resume_from, ckpt.MODEL_KIND)
        if "optimizer" not in resume["state"]:
            raise UserInputError(f"{resume_from} was exported for sampling (EMA weights only) and cannot be resumed")
        for section in ("model", "diffusion"):
            stored = resume["config"][section]
            differences = [f"{section}.{k}: checkpoint {stored.get(k)!r}, requested {v!r}"
                           for k, v in config[section].items() if stored.get(k) != v]
            if differences:
                raise UserInputError(f"checkpoint {resume_from} does not match the requested {section}: "
                                     + "; ".join(differences))
        trained_on = resolve_config(base=resume["config"])["train"]["dataset"]
        if trained_on != config["train"]["dataset"]:
            raise UserInputError(f"checkpoint {resume_from} was trained on {trained_on}; it cannot continue on "
                                 f"{config['train']['dataset']}")
        if int(resume["metadata"]["step"]) >= end_step:
            raise UserInputError(f"{resume_from} is already at step {resume['metadata']['step']}: nothing to train; "
                                 "ask for more steps (train.steps counts the whole run) or a later --stop-at")
    if run_dir is not None and Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserInputError(f"run directory {run_dir} is a file")
    return checkpoint_path, resume, Path(run_dir) if run_dir is not None else None


def training_split(settings: TrainConfig, train_split: ImageSplit | None = None) -> ImageSplit:
    """The split to train on: ``train_split``, else the train split of ``train.dataset``; checked against the config."""
    train_split = train_split if train_split is not None else load_dataset(settings.dataset, "train")
    if train_split.dataset != settings.dataset:
        raise UserInputError(f"the config trains on {settings.dataset} (train.dataset), the split given is "
                             f"{train_split.dataset}")
    if settings.batch_size > len(train_split):
        raise UserInputError(f"batch size {settings.batch_size} exceeds the {len(train_split)} training images")
    return train_split


def train(config: dict, train_split: ImageSplit | None = None, checkpoint_path: str | Path | None = None,
          resume_from: str | Path | None = None, run_dir: str | Path | None = None, device: str | None = "auto",
          stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Train the CFG UNet with label dropout and EMA; checkpoint atomically; resume exactly (03-train).

    ``config`` is a dict from :func:`resolve_config`. ``resume_from`` continues a checkpoint's run
    (its model and diffusion config must match). ``stop_at`` ends the run early at that step
    (with a checkpoint), leaving the schedule as if it went on.
    """
    config = resolve_config(base=config)
    settings = TrainConfig(**config["train"])
    end_step = settings.steps if stop_at is None else min(int(stop_at), settings.steps)
    checkpoint_path, resume, run_dir = check_training_inputs(config, checkpoint_path, resume_from, run_dir, end_step)
    train_split = training_split(settings, train_split)
    preview_steps = {round(settings.steps * (i + 1) / settings.previews) for i in range(settings.previews)}
    with distributed(device) as (context, device):
        run = start_run(config, device, context, resume)
        images, main = train_split.images.to(device), context.is_main
        with RunLogger(run.step, end_step, settings.log_every, run_dir=run_dir if main else None, config=config,
                       progress=progress and main,
                       previous_wall_s=float(resume["metadata"].get("wall_time_s", 0.0)) if resume else 0.0) as log:
            for step in range(run.step, end_step):
                index = batch_indices(step, len(train_split), settings.batch_size, settings.seed)
                set_learning_rate(run.optimizer, lr := learning_rate(step, settings))
                loss = training_step(run, images[index.to(device)], train_split.labels[index])
                run.step, run.images_seen = step + 1, run.images_seen + settings.batch_size
                log.record(run.step, settings.batch_size, lr, loss=loss)
                if main and run_dir is not None and run.step in preview_steps:
                    write_preview(run_dir, run)
                    log.pause()  # previews are not training time
                if main and checkpoint_path is not None and (run.step % settings.checkpoint_every == 0
                                                             or run.step == end_step):
                    save_run(checkpoint_path, run, config, train_split.source, log.elapsed(), context.world_size)
    run.model.eval()
    run.ema_model.eval()
    return TrainResult(run.model, run.ema_model, run.diffusion, config, log.history, checkpoint_path, run_dir,
                       train_split.source, run.step, log.elapsed())


def load_or_train(checkpoint_path: str | Path, config: dict, device: str | None = "auto",
                  run_dir: str | Path | None = None, progress: bool = True) -> tuple[ckpt.LoadedModel, TrainResult | None]:
    """Load ``checkpoint_path`` if it holds a finished run of this config, continue it if the run was interrupted,
    else train it there (03-train)."""
    checkpoint_path = Path(checkpoint_path)
    config = resolve_config(base=config)
    resume = None
    if checkpoint_path.is_file():
        payload = ckpt.load_checkpoint(checkpoint_path, ckpt.MODEL_KIND)
        same_config = resolve_config(base=payload["config"]) == config  # older files lack newer keys
        if same_config and payload["metadata"].get("complete"):
            return ckpt.load_model(checkpoint_path, device), None
        resume = checkpoint_path if same_config else None  # an interrupted run: continue it
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    result = train(config, checkpoint_path=checkpoint_path, resume_from=resume, run_dir=run_dir, device=device,
                   progress=progress)
    return ckpt.load_model(checkpoint_path, device), result
