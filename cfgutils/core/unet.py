"""A small class-conditional UNet for 28x28 MNIST, built to train fast on a CPU (notebook 02-unet).

Design, in the order the data flows:

* **patchify**: a 2x2 pixel-unshuffle turns 1x28x28 into 4x14x14 (no information lost), so every
  convolution runs at 14x14 or 7x7 — four times fewer FLOPs than working at 28x28.
* **conditioning**: a sinusoidal embedding of the timestep goes through an MLP; a learned label
  embedding with ``num_classes + 1`` rows (index ``num_classes`` = 10 is the *null label*, "no label",
  which classifier-free guidance needs) is added to it. The sum conditions every residual block
  through a per-channel scale and shift after its second GroupNorm (adaptive GroupNorm).
* **GroupNorm** everywhere (BatchNorm's train/eval switch is a classic sampling bug).
* self-attention at the lowest resolution (7x7 = 49 tokens, cheap) for global shape.
* **unpatchify**: a 2x2 pixel-shuffle back to 1x28x28. The last convolution starts at zero, so the
  untrained network predicts 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError, config_from_dict, one_of
from .reference import ReferenceUNet

#: the networks a config can build: cfgutils' patchify UNet (this file) or the reference study's (core/reference.py)
ARCHITECTURES = ("patch-unet", "reference")


@dataclass(frozen=True)
class UNetConfig:
    """Widths and depth of :class:`ConditionalUNet`; saved with every checkpoint (02-unet)."""

    base_channels: int = 48  # channels at the first (14x14) level
    channel_mults: tuple[int, ...] = (1, 2)  # width multiplier per level; each further level halves the size
    blocks_per_level: int = 1  # residual blocks per level on the way down (the way up has one more)
    attention: bool = True  # self-attention at the lowest resolution
    patch_size: int = 2  # pixel-unshuffle factor of the stem (1 = work at 28x28)
    groups: int = 8  # GroupNorm groups
    embedding_mult: int = 4  # conditioning width = base_channels * embedding_mult
    num_classes: int = 10  # digits; the null label is index num_classes
    dropout: float = 0.0
    architecture: str = "patch-unet"  # or "reference": the reference study's network (only base_channels applies)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict:
        return {**asdict(self), "channel_mults": list(self.channel_mults)}

    @classmethod
    def from_dict(cls, values: dict) -> "UNetConfig":
        """Build and validate from a plain dict (YAML, a checkpoint), refusing unknown keys (02-unet)."""
        return config_from_dict(cls, values, "model")

    def validate(self) -> None:
        one_of(self.architecture, ARCHITECTURES, "model architecture")
        widths = [self.base_channels * m for m in self.channel_mults]
        if self.base_channels <= 0 or not self.channel_mults or min(self.channel_mults) <= 0:
            raise UserInputError("model widths must be positive")
        if self.architecture == "reference":
            return
        if any(w % self.groups for w in widths):
            raise UserInputError(f"every level width {widths} must be divisible by groups={self.groups}")
        size = 28 // self.patch_size
        if 28 % self.patch_size or size % (2 ** (len(self.channel_mults) - 1)):
            raise UserInputError(f"patch_size={self.patch_size} with {len(self.channel_mults)} levels "
                                 "does not divide 28x28 evenly")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t`` (N,) -> (N, dim) (02-unet)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the conditioning vector gives a scale and shift after the second norm."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.to_scale_shift = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.to_scale_shift(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a (small) feature map, with a residual connection."""

    def __init__(self, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, height * width).unbind(1)
        attended = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(attended.transpose(-1, -2).reshape(n, c, height, width))


class ConditionalUNet(nn.Module):
    """Predicts the network target (noise or velocity) from x_t, timestep t and label y (02-unet).

    ``y`` holds digits 0-9 or ``config.null_label`` (10) for "no label".
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        config = config or UNetConfig()
        config.validate()
        self.config = config
        c0 = config.base_channels
        widths = [c0 * m for m in config.channel_mults]
        emb = c0 * config.embedding_mult
        stem_channels = config.patch_size ** 2
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_embedding = nn.Embedding(config.num_classes + 1, emb)
        self.stem = nn.Conv2d(stem_channels, widths[0], 3, padding=1)

        block = lambda cin, cout: ResidualBlock(cin, cout, emb, config.groups, config.dropout)  # noqa: E731
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skip_widths = [widths[0]]
        current = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.blocks_per_level):
                self.down_blocks.append(block(current, width))
                current = width
                skip_widths.append(current)
            if level < len(widths) - 1:
                self.downsamplers.append(nn.Conv2d(current, current, 3, stride=2, padding=1))
                skip_widths.append(current)
        self.mid_block1 = block(current, current)
        self.mid_attention = SelfAttention(current, config.groups) if config.attention else nn.Identity()
        self.mid_block2 = block(current, current)

        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for _ in range(config.blocks_per_level + 1):
                self.up_blocks.append(block(current + skip_widths.pop(), width))
                current = width
            if level > 0:
                # 1x1 conv to 4x the next width, then a 2x2 pixel-shuffle: a cheap learned upsampling
                self.upsamplers.append(nn.Sequential(nn.Conv2d(current, 4 * widths[level - 1], 1), nn.PixelShuffle(2)))
                current = widths[level - 1]
        self.out_norm = nn.GroupNorm(config.groups, current)
        self.out_conv = nn.Conv2d(current, stem_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The conditioning vector: MLP(sinusoidal(t)) + label_embedding(y), then SiLU."""
        return F.silu(self.time_mlp(timestep_embedding(t, self.config.base_channels)) + self.label_embedding(y))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        config = self.config
        embedding = self.embed(t, y)
        h = F.pixel_unshuffle(x, config.patch_size) if config.patch_size > 1 else x
        h = self.stem(h)
        skips = [h]
        blocks = iter(self.down_blocks)
        for level in range(len(config.channel_mults)):
            for _ in range(config.blocks_per_level):
                h = next(blocks)(h, embedding)
                skips.append(h)
            if level < len(config.channel_mults) - 1:
                h = self.downsamplers[level](h)
                skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, embedding)), embedding)
        blocks = iter(self.up_blocks)
        for index, level in enumerate(reversed(range(len(config.channel_mults)))):
            for _ in range(config.blocks_per_level + 1):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), embedding)
            if level > 0:
                h = self.upsamplers[index](h)
        h = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, config.patch_size) if config.patch_size > 1 else h


def build_network(config: UNetConfig) -> nn.Module:
    """The network a model config describes: :class:`ConditionalUNet` or the reference study's UNet (02, 07)."""
    config.validate()
    return ReferenceUNet(config) if config.architecture == "reference" else ConditionalUNet(config)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters, frozen ones included (a model loaded for sampling has requires_grad off) (02-unet)."""
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: ConditionalUNet, batch_size: int = 1) -> int:
    """FLOPs of one forward pass per image, counted by ``torch.utils.flop_counter`` (02-unet)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.zeros(batch_size, 1, 28, 28, device=device)
    t = torch.zeros(batch_size, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops() // batch_size
