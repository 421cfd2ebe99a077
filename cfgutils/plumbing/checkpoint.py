"""Checkpoints: state_dicts + config + metadata, written atomically, read with ``weights_only=True`` (03-train).

Every checkpoint is a plain dict::

    {"kind": "cfg-unet" | "image-classifier", "format": 1,
     "config": {...}, "state": {"model": ..., ...}, "metadata": {...}}

``metadata`` always holds ``data_source`` (which data trained it), ``step``, ``cfgutils_version``,
``torch_version`` and ``created`` (UTC, ISO 8601).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.diffusion import DiffusionConfig, GaussianDiffusion
from ..core.guidance import Guidance
from ..core.rules import make_guidance
from ..core.unet import ConditionalUNet, UNetConfig, build_network
from ..errors import UserInputError
from . import paths
from .config import resolve_config
from .data import dataset_info
from .device import pick_device

FORMAT_VERSION = 1
MODEL_KIND = "cfg-unet"
KINDS = {"cfg-unet": "a CFG diffusion model (UNet)", "image-classifier": "an image classifier"}
#: kinds earlier releases wrote, read as the kind they became (the shipped classifiers carry "mnist-classifier")
OLD_KINDS = {"mnist-classifier": "image-classifier"}


class CheckpointError(UserInputError):
    """A checkpoint that is missing, unreadable, or of the wrong kind."""


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Validate a file path we are about to write: its folder must exist, and it must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{what} path {path} is a folder; give a file name such as {path / 'model.pt'}.")
    if not path.parent.is_dir():
        raise UserInputError(f"{what} folder {path.parent} does not exist; create it first.")
    return path


def base_metadata(data_source: str, step: int, **extra: Any) -> dict[str, Any]:
    """The metadata every checkpoint carries: data source, step, versions, creation time (03-train)."""
    return {
        "data_source": data_source,
        "step": int(step),
        "cfgutils_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, kind: str, config: dict, state: dict, metadata: dict) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, then rename (03-train)."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    path = check_output_path(path, "checkpoint")
    payload = {"kind": kind, "format": FORMAT_VERSION, "config": config, "state": state, "metadata": metadata}
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_current_umask())  # the temporary file is 0600; give it a normal file's mode
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check that it is of ``kind`` (03-train)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a cfgutils checkpoint ({first_line[:120]}).") from error
    if isinstance(payload, dict) and payload.get("kind") in OLD_KINDS:
        payload["kind"] = OLD_KINDS[payload["kind"]]
    if not isinstance(payload, dict) or payload.get("kind") not in KINDS or "state" not in payload:
        raise CheckpointError(f"{path} is not a cfgutils checkpoint (no 'kind'/'state' entries).")
    if payload["kind"] != kind:
        raise CheckpointError(f"{path} holds {KINDS[payload['kind']]}, but {KINDS[kind]} was expected.")
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format')}, this cfgutils reads {FORMAT_VERSION}.")
    return payload


# --------------------------------------------------------------------------------------------- diffusion models
@dataclass
class LoadedModel:
    """A diffusion model ready to sample: network (EMA weights unless asked otherwise), diffusion, metadata."""

    model: ConditionalUNet
    diffusion: GaussianDiffusion
    config: dict
    metadata: dict
    path: Path | None
    weights: str  # "ema" or "raw"

    @property
    def dataset(self) -> str:
        """The dataset it was trained on (``train.dataset`` of its config; "mnist" for older files)."""
        return self.config["train"]["dataset"]


def load_model(path: str | Path, device: str | torch.device | None = "auto", raw_weights: bool = False) -> LoadedModel:
    """Load a CFG UNet checkpoint for sampling, EMA weights by default (04-cfg-sampling)."""
    payload = load_checkpoint(path, MODEL_KIND)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    if raw_weights and "model" not in payload["state"]:
        raise CheckpointError(f"{path} was exported with EMA weights only; raw weights are not in it")
    try:
        config = resolve_config(base=payload["config"])
        model = build_network(UNetConfig.from_dict(config["model"]))
        model.load_state_dict(payload["state"]["model" if raw_weights else "ema"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} does not fit the model it describes: "
                              f"{str(error).splitlines()[0][:160]}") from error
    model.to(device).eval().requires_grad_(False)
    diffusion = GaussianDiffusion(DiffusionConfig.from_dict(config["diffusion"]))
    return LoadedModel(model, diffusion, config, payload["metadata"], Path(path), "raw" if raw_weights else "ema")


def export_for_sampling(source: str | Path, destination: str | Path) -> Path:
    """Write a small copy of a training checkpoint with the EMA weights only (what data/pretrained/ ships)."""
    payload = load_checkpoint(source, MODEL_KIND)
    destination = check_output_path(destination, "export")
    metadata = {**payload["metadata"], "exported_from": Path(source).name, "contents": "EMA weights only"}
    return save_checkpoint(destination, MODEL_KIND, payload["config"], {"ema": payload["state"]["ema"]}, metadata)


def find_model(preferred: str | Path | None = None, dataset: str = "mnist") -> Path | None:
    """The checkpoint 04-06 use: ``preferred`` if given (it must exist), else 03's output, else the shipped one.

    For Fashion-MNIST both live in a ``fashion-mnist/`` subfolder (``data/pretrained/fashion-mnist/cfg-unet.pt``).
    """
    return _find(preferred, tuple(paths.for_dataset(p, dataset) for p in (paths.TRAINED_MODEL, paths.PRETRAINED_MODEL)))


def find_classifier(preferred: str | Path | None = None, dataset: str = "mnist") -> Path | None:
    """The classifier 05-06 use: ``preferred`` if given (it must exist), else a trained one, else the shipped one."""
    return _find(preferred, tuple(paths.for_dataset(p, dataset)
                                  for p in (paths.TRAINED_CLASSIFIER, paths.PRETRAINED_CLASSIFIER)))


def load_guidance(name: str = "cfg", device: str | torch.device | None = "auto", guide_model: str | Path | None = None,
                  **parameters) -> Guidance:
    """A guidance rule by name; autoguidance loads its guide model (default: the shipped ``autoguide.pt``) (08)."""
    if name != "autoguidance":
        if guide_model is not None:
            raise UserInputError(f"--guide-model is for autoguidance only, not for guidance {name!r}")
        return make_guidance(name, **parameters)
    path = Path(guide_model) if guide_model is not None else paths.PRETRAINED_GUIDE
    guide = load_model(path, device)  # a missing or damaged file is a one-line CheckpointError
    guidance = make_guidance(name, guide_model=guide.model, guide_diffusion=guide.diffusion, guide_name=str(path),
                             **parameters)
    guidance.guide_dataset = guide.dataset  # check_guide_fits refuses a guide of another dataset
    return guidance


def check_guide_fits(guidance: Guidance, model, diffusion: GaussianDiffusion | None = None,
                     dataset: str | None = None) -> None:
    """Refuse a guide network whose classes, noise schedule or dataset differ from the sampled model's (08)."""
    if guidance.guide is None:
        return
    guide, guide_diffusion = guidance.guide
    guide_dataset = getattr(guidance, "guide_dataset", None)
    if dataset is not None and guide_dataset is not None:
        check_dataset(f"the guide model {getattr(guidance, 'guide_name', '')}".rstrip(), guide_dataset,
                      guide.config.num_classes, None, dataset,
                      hint=f"pass --guide-model with a {dataset_info(dataset).title} model (none is shipped)")
    if guide.config.num_classes != model.config.num_classes:
        raise UserInputError(f"the guide model has {guide.config.num_classes} classes, the sampled "
                             f"model {model.config.num_classes}")
    if diffusion is not None and (guide_diffusion.timesteps != diffusion.timesteps or not torch.allclose(
            guide_diffusion.alpha_bar64, diffusion.alpha_bar64)):
        raise UserInputError("the guide model was trained with another noise schedule than the sampled model "
                             f"({guide_diffusion.config.schedule}, T = {guide_diffusion.timesteps} against "
                             f"{diffusion.config.schedule}, T = {diffusion.timesteps})")


def check_dataset(what: str, trained_on: str, num_classes: int, class_names, dataset: str,
                  hint: str | None = None) -> None:
    """Refuse a model or classifier trained on another dataset than ``dataset``, naming both (04, 05)."""
    info = dataset_info(dataset)
    if num_classes != info.num_classes:
        raise UserInputError(f"{what} has {num_classes} classes, {info.title} {info.num_classes}")
    if trained_on != info.name or (class_names is not None and tuple(class_names) != info.class_names):
        raise UserInputError(f"{what} was trained on {dataset_info(trained_on).title}, not {info.title}: "
                             + (hint or f"use a {info.title} one"))


def check_model_dataset(loaded: LoadedModel, dataset: str) -> None:
    """Refuse to sample ``dataset`` with a diffusion model trained on another one (04-cfg-sampling)."""
    check_dataset(f"model {loaded.path}", loaded.dataset, loaded.model.config.num_classes,
                  loaded.metadata.get("class_names"), dataset,
                  hint=f"pass --dataset {loaded.dataset} (notebooks: the dataset parameter) or a "
                       f"{dataset_info(dataset).title} model")


def _find(preferred: str | Path | None, candidates: tuple[Path, ...]) -> Path | None:
    if preferred:
        if not Path(preferred).is_file():
            raise CheckpointError(f"checkpoint {preferred} does not exist")
        return Path(preferred)
    return next((candidate for candidate in candidates if candidate.is_file()), None)
