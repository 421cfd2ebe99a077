"""Sampling speed per sampler and step count, on this machine.

    python benchmarks/sampling_speed.py [--model data/pretrained/cfg-unet.pt] [--big-batch 1000]

For each sampler and step count it prints: model evaluations (network calls per sample; each guided
call runs the conditional and null label together in one batch of 2n), wall time of a 10-image
guided grid (one of each digit, s = 3 i.e. w = 2; median of 3), and images/s for a batch of
--big-batch guided samples. The default sampler must make the 10-image grid in <= 1 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cfgutils.core.samplers import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SamplerSettings,
    class_labels,
    generate,
)
from cfgutils.plumbing.checkpoint import find_model, load_model

CASES = [("ddpm", 1000), ("ddpm", 100), ("ddim", 50), ("ddim", 20), ("dpmpp", 20), ("dpmpp", 12), ("dpmpp", 8)]


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="diffusion checkpoint (default: 03's, else the shipped one)")
    parser.add_argument("--big-batch", type=int, default=1000, help="samples for the images/s column")
    parser.add_argument("--skip-slow", action="store_true", help="skip the big batch for 1000-step DDPM")
    args = parser.parse_args()
    path = find_model(args.model)
    if path is None:
        raise SystemExit("no checkpoint: train one (notebook 03) or pass --model")
    loaded = load_model(path, "cpu")
    labels = class_labels("all", 1)
    big_labels = torch.arange(args.big_batch) % 10
    print(f"model {path} ({loaded.metadata.get('step')} steps), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; guided at s = 3 (w = 2)")
    header = f"{'sampler':8s} {'steps':>5s} {'model evals':>11s} {'10-image grid (s)':>17s} {'images/s (batch %d)' % args.big_batch:>22s}"
    print(header)
    print("-" * len(header))
    for sampler, steps in CASES:
        settings = SamplerSettings(sampler, steps)
        generate(loaded.model, loaded.diffusion, labels, 3.0, SamplerSettings(sampler, 2), seed=0)  # warm-up
        grid_s = timed(lambda: generate(loaded.model, loaded.diffusion, labels, 3.0, settings, seed=0),
                       1 if steps >= 1000 else 3)
        if args.skip_slow and steps >= 1000:
            rate = "skipped"
        else:
            big_s = timed(lambda: generate(loaded.model, loaded.diffusion, big_labels, 3.0, settings, seed=0,
                                           batch_size=250), 1)
            rate = f"{args.big_batch / big_s:.0f}"
        default = "  <- default" if sampler == DEFAULT_SAMPLER and steps == DEFAULT_STEPS[sampler] else ""
        print(f"{sampler:8s} {steps:5d} {steps:11d} {grid_s:17.3f} {rate:>22s}{default}")


if __name__ == "__main__":
    main()
