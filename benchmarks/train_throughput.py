"""Training throughput of the CFG UNet on this machine, beside the fp32 matmul peak and (if installed)
the diffusers UNet2DModel of the Hugging Face course's class-conditioned MNIST example.

    python benchmarks/train_throughput.py [--batch-size 64] [--rounds 5] [--config default] [--opts K V ...]

Prints one table row per model: parameters, forward GFLOPs per image (torch.utils.flop_counter),
training FLOPs per image (forward + backward, counted), images/s, achieved GFLOP/s and the fraction
of the fp32 matmul peak measured in the same run. Rounds of the models are interleaved so that
machine noise hits both alike. Like the peak (the best of three timings), a model's speed is its best
round: on a shared machine the slow rounds measure the neighbours, not the code. The median round is
printed too.

Both models take ``cfgutils.workflows.train.training_step`` itself: label dropout, noise, the weighted
loss, backward, gradient clipping at 1, fused AdamW and the EMA update, in the memory layout ``train``
uses for ours (channels-last on a CPU), on random MNIST-shaped batches; only the network differs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from cfgutils.core.diffusion import DiffusionConfig, GaussianDiffusion
from cfgutils.core.unet import count_parameters, forward_flops
from cfgutils.plumbing.config import TrainConfig, resolve_config
from cfgutils.plumbing.device import keep_freed_memory
from cfgutils.core.optim import make_optimizer
from cfgutils.workflows.train import (
    TrainingRun,
    build_model,
    to_training_layout,
    training_step,
)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 * repeats / best / 1e9


class Candidate:
    """A network plus ``training_step`` (the one ``cfgutils.workflows.train.train`` runs) on random MNIST-shaped data."""

    def __init__(self, name, model, forward_fn, device):
        self.name, self.model, self.forward_fn = name, model, forward_fn
        diffusion = GaussianDiffusion(DiffusionConfig())
        settings = TrainConfig(lr=1e-4, grad_clip=1.0)
        ema_model = copy.deepcopy(model).requires_grad_(False)
        self.run = TrainingRun(model, ema_model, model, make_optimizer(model, settings.lr, device),
                               torch.Generator().manual_seed(0), diffusion, settings, device)
        self.times: list[float] = []

    def train_step(self, batch):
        training_step(self.run, batch["x"], batch["y"])

    def counted_train_flops(self, batch) -> float:
        with FlopCounterMode(display=False) as counter:
            loss = self.run.diffusion.training_loss(self.model, batch["x"], batch["y"], batch["t"], batch["noise"])
            loss.backward()
        self.run.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() / batch["x"].shape[0]


def ours(config_name: str, opts: list[str], device: torch.device) -> Candidate:
    config = resolve_config(config_name, opts)
    model = to_training_layout(build_model(config, seed=0), device)
    label = config_name + "".join(f" {key.split('.')[-1]}={value}" for key, value in zip(opts[::2], opts[1::2]))
    return Candidate(f"cfgutils UNet ({label})", model, lambda: forward_flops(model), device)


def huggingface_course_unet(device: torch.device) -> Candidate | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None

    class ClassConditioned(torch.nn.Module):
        """The HF course's class-conditioned MNIST UNet: a 4-dim class embedding as extra input channels."""

        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(null_label=10)  # label 10 = "no label", as in cfgutils
            self.class_embedding = torch.nn.Embedding(11, 4)
            self.unet = UNet2DModel(sample_size=28, in_channels=1 + 4, out_channels=1, layers_per_block=2,
                                    block_out_channels=(32, 64, 64),
                                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                                    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))

        def forward(self, x, t, y):
            classes = self.class_embedding(y)[:, :, None, None].expand(-1, -1, 28, 28)
            return self.unet(torch.cat([x, classes], dim=1), t).sample

    torch.manual_seed(0)
    model = ClassConditioned().to(device)  # its own layout: channels-last makes it slower (33% vs 39% of peak)

    def forward():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        return counter.get_total_flops()

    return Candidate("diffusers UNet2DModel (HF course MNIST)", model, forward, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps-per-round", type=int, default=10, help="training steps per timed round")
    parser.add_argument("--config", default="default", help="cfgutils preset (or YAML file) to measure")
    parser.add_argument("--opts", nargs="+", default=[], metavar="K V",
                        help="config overrides, as for `python -m cfgutils train` (e.g. model.base_channels 48)")
    parser.add_argument("--no-reference", action="store_true", help="skip the diffusers model")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(args.batch_size, 1, 28, 28, generator=generator),
             "noise": torch.randn(args.batch_size, 1, 28, 28, generator=generator),
             "t": torch.randint(0, 1000, (args.batch_size,), generator=generator),
             "y": torch.randint(0, 11, (args.batch_size,), generator=generator)}
    device = torch.device("cpu")
    keep_freed_memory()  # as cfgutils.workflows.train.train does on a CPU
    candidates = [ours(args.config, args.opts, device)]
    reference = None if args.no_reference else huggingface_course_unet(device)
    candidates += [reference] if reference is not None else []
    peak = matmul_peak_gflops()
    for candidate in candidates:  # warm-up
        for _ in range(2):
            candidate.train_step(batch)
    for _ in range(args.rounds):
        for candidate in candidates:
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                candidate.train_step(batch)
            candidate.times.append((time.perf_counter() - start) / args.steps_per_round)
    peak_after = matmul_peak_gflops()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"fp32 matmul peak {peak:.0f} GFLOP/s (before) / {peak_after:.0f} (after)")
    header = (f"{'model':42s} {'params':>9s} {'fwd GFLOP/img':>13s} {'train GFLOP/img':>15s} {'img/s':>7s} "
              f"{'(median)':>8s} {'GFLOP/s':>8s} {'of peak':>7s}")
    print(header)
    print("-" * len(header))
    rates = {}
    for candidate in candidates:
        images_per_s = args.batch_size / min(candidate.times)
        median_images_per_s = args.batch_size / statistics.median(candidate.times)
        train_flops = candidate.counted_train_flops(batch)
        achieved = train_flops * images_per_s / 1e9
        rates[candidate.name] = images_per_s
        print(f"{candidate.name:42s} {count_parameters(candidate.model):9,d} {candidate.forward_fn() / 1e9:13.3f} "
              f"{train_flops / 1e9:15.3f} {images_per_s:7.0f} {median_images_per_s:8.0f} {achieved:8.1f} "
              f"{achieved / max(peak, peak_after):7.0%}")
    if len(candidates) == 2:
        ratio = rates[candidates[0].name] / rates[candidates[1].name]
        print(f"speed ratio (ours / diffusers, images/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
