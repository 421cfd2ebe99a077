"""Training throughput of the CFG UNet on this machine, beside the fp32 matmul peak and (if installed)
the diffusers UNet2DModel of the Hugging Face course's class-conditioned MNIST example.

    python benchmarks/train_throughput.py [--batch-size 64] [--rounds 5] [--config default]

Prints one table row per model: parameters, forward GFLOPs per image (torch.utils.flop_counter),
training FLOPs per image (forward + backward, counted), images/s, achieved GFLOP/s and the fraction
of the fp32 matmul peak measured in the same run. Rounds of the models are interleaved so that
machine noise hits both alike; the median round is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cfgutils.diffusion import GaussianDiffusion, DiffusionConfig
from cfgutils.train import build_model, default_config
from cfgutils.unet import count_parameters, forward_flops


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
    """A model plus one training step on random MNIST-shaped data."""

    def __init__(self, name, model, step_fn, forward_fn):
        self.name, self.model, self.step_fn, self.forward_fn = name, model, step_fn, forward_fn
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.times: list[float] = []

    def train_step(self, batch):
        loss = self.step_fn(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def counted_train_flops(self, batch) -> float:
        with FlopCounterMode(display=False) as counter:
            loss = self.step_fn(batch)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() / batch["x"].shape[0]


def ours(config_name: str) -> Candidate:
    config = default_config(config_name)
    model = build_model(config, seed=0)
    diffusion = GaussianDiffusion(DiffusionConfig.from_dict(config["diffusion"]))

    def step(batch):
        return diffusion.training_loss(model, batch["x"], batch["y"], batch["t"], batch["noise"])

    return Candidate(f"cfgutils UNet ({config_name})", model, step, lambda: forward_flops(model))


def huggingface_course_unet() -> Candidate | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None

    class ClassConditioned(torch.nn.Module):
        """The HF course's class-conditioned MNIST UNet: a 4-dim class embedding as extra input channels."""

        def __init__(self):
            super().__init__()
            self.class_embedding = torch.nn.Embedding(11, 4)
            self.unet = UNet2DModel(sample_size=28, in_channels=1 + 4, out_channels=1, layers_per_block=2,
                                    block_out_channels=(32, 64, 64),
                                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                                    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))

        def forward(self, x, t, y):
            classes = self.class_embedding(y)[:, :, None, None].expand(-1, -1, 28, 28)
            return self.unet(torch.cat([x, classes], dim=1), t).sample

    torch.manual_seed(0)
    model = ClassConditioned()

    def step(batch):
        return torch.nn.functional.mse_loss(model(batch["x"], batch["t"], batch["y"]), batch["noise"])

    def forward():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        return counter.get_total_flops()

    return Candidate("diffusers UNet2DModel (HF course MNIST)", model, step, forward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--config", default="default", help="cfgutils preset to measure")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(args.batch_size, 1, 28, 28, generator=generator),
             "noise": torch.randn(args.batch_size, 1, 28, 28, generator=generator),
             "t": torch.randint(0, 1000, (args.batch_size,), generator=generator),
             "y": torch.randint(0, 11, (args.batch_size,), generator=generator)}
    candidates = [c for c in (ours(args.config), huggingface_course_unet()) if c is not None]
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
              f"{'GFLOP/s':>8s} {'of peak':>7s}")
    print(header)
    print("-" * len(header))
    rates = {}
    for candidate in candidates:
        step_time = statistics.median(candidate.times)
        images_per_s = args.batch_size / step_time
        train_flops = candidate.counted_train_flops(batch)
        achieved = train_flops * images_per_s / 1e9
        rates[candidate.name] = images_per_s
        print(f"{candidate.name:42s} {count_parameters(candidate.model):9,d} {candidate.forward_fn() / 1e9:13.3f} "
              f"{train_flops / 1e9:15.3f} {images_per_s:7.0f} {achieved:8.1f} {achieved / max(peak, peak_after):7.0%}")
    if len(candidates) == 2:
        ratio = rates[candidates[0].name] / rates[candidates[1].name]
        print(f"speed ratio (ours / diffusers, images/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
