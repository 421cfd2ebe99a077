"""``python -m cfgutils sample``: guided samples of one class (or all) written as PNGs, a grid, npz and meta.json.

Under ``torchrun --nproc_per_node N -m cfgutils sample ...`` the chunks of ``--batch-size`` samples are
dealt round-robin to the processes and gathered in order on rank 0, which writes the files: the
result is the same as one process with the same seed and batch size.
"""

from __future__ import annotations

import argparse

import torch

from ..core.guidance import Guidance, w_from_s
from ..core.samplers import SamplerSettings, chunk_count, class_labels, generate
from ..plumbing.checkpoint import LoadedModel, check_guide_fits, load_model
from ..plumbing.data import class_index
from ..plumbing.distributed import DistributedContext, distributed, gather_chunks, my_chunks
from .common import (add_dataset_argument, add_sampler_arguments, check_output_dir, guidance_from_args, model_dataset,
                     sample_meta, settings_from_args, write_samples)


def distributed_generate(loaded: LoadedModel, labels: torch.Tensor, scale: float, settings: SamplerSettings,
                         seed: int, batch_size: int, guidance: Guidance | None, context: DistributedContext,
                         progress: bool = True) -> torch.Tensor | None:
    """:func:`generate`, its chunks split across torchrun processes; all samples on rank 0, None elsewhere."""
    mine = my_chunks(chunk_count(len(labels), batch_size), context) if context.world_size > 1 else None
    local = generate(loaded.model, loaded.diffusion, labels, scale, settings, seed, batch_size, guidance,
                     progress=progress and context.is_main, chunk_indices=mine).cpu()
    return gather_chunks(mine, local, batch_size, len(labels), context)


def register(subparsers) -> None:
    """Add the ``sample`` command."""
    parser = subparsers.add_parser(
        "sample", help="sample a class or garment (or all classes) with classifier-free guidance",
        description="Sample CLASS from MODEL with guidance scale s and write one PNG per sample, grid.png, "
                    "samples.npz (images uint8 Nx28x28, labels) and meta.json into OUTDIR.")
    parser.add_argument("model", metavar="MODEL.pt", help="diffusion checkpoint (from `train`)")
    parser.add_argument("label", metavar="CLASS", help="a class index 0-9 or name (Fashion-MNIST: e.g. Sneaker, "
                                                       "'Ankle boot'), or 'all' for N of every class")
    parser.add_argument("outdir", metavar="OUTDIR", help="output folder (created)")
    parser.add_argument("-n", "--n", type=int, default=16,
                        help="samples (per class with 'all'); default 16 (under torchrun write -n: torchrun claims --n)")
    add_dataset_argument(parser)
    add_sampler_arguments(parser)
    parser.set_defaults(handler=_run)


def labels_for(spec: str, n: int, dataset: str) -> torch.Tensor:
    """Labels for ``n`` samples of one class given by index or name, or of every class for ``"all"`` (04)."""
    if str(spec).strip() == "all":
        return class_labels("all", n)
    return class_labels(class_index(spec, dataset), n)


def _run(args: argparse.Namespace) -> int:
    class_labels("all", args.n)  # validates n; the class is checked against the model's dataset below
    settings = settings_from_args(args)
    guidance = guidance_from_args(args)
    scale = guidance.validate_scale(args.guidance_scale)
    outdir = check_output_dir(args.outdir)
    with distributed(args.device) as (context, device):
        loaded = load_model(args.model, device, raw_weights=args.raw_weights)
        dataset = model_dataset(args, loaded)
        labels = labels_for(args.label, args.n, dataset)
        check_guide_fits(guidance, loaded.model, loaded.diffusion, dataset)
        images = distributed_generate(loaded, labels, scale, settings, args.seed, args.batch_size, guidance, context)
        if not context.is_main:
            return 0
        meta = sample_meta(loaded, scale, settings, args.seed, args.batch_size, guidance, label=str(args.label))
        write_samples(outdir, images, labels, meta, nrow=args.n if str(args.label) == "all" else min(args.n, 16))
    print(f"wrote {len(labels)} samples (s = {scale:g}, w = {w_from_s(scale):g}, {settings.sampler}, "
          f"{settings.resolved_steps()} steps, guidance {guidance!r}) to {outdir}")
    return 0
