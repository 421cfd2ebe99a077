"""The reference study's two networks, rebuilt from their published description (notebook 07-ablations).

**The diffusion network** (:class:`ReferenceUNet`): the MNIST guidance study that cfgutils reproduces trained
a small UNet of 129,569 parameters that works at full 28x28 resolution. Its facts, in the order the data flows:

* **conditioning**: a sinusoidal embedding (dim 32, max period 10,000; sines then cosines) of the *raw
  integer* timestep, and a one-hot vector over 11 entries: entry 0 is "no label", entry c + 1 is class c.
  Each residual block adds a linear map of each to its features after the BatchNorm.
* **residual block**: conv3x3 -> ReLU -> BatchNorm -> + Linear(time) + Linear(label) -> conv3x3 -> ReLU,
  plus the block's input (unchanged, or through a 1x1 conv when the width changes).
* **shape**: a block to 16 channels at 28x28 -> 2x2 max-pool, block to 32 at 14x14 -> max-pool, block to
  64 at 7x7 -> 2x2 transposed conv up, concatenate the 14x14 features, block to 32 -> transposed conv up,
  concatenate the 28x28 features, block to 16 -> 1x1 conv to one channel.
* **BatchNorm**: batch statistics while training, running statistics when sampling (``model.eval()``).

cfgutils' null label is ``num_classes``; this network puts it in one-hot entry 0, as the study did, so the
same weights mean the same thing. It predicts the noise eps (train it with ``diffusion.prediction: eps``).

**The classifier** (:class:`ReferenceClassifier`, 8,118 parameters) that scored the study's samples:
conv(1 -> 4, 3x3) -> ReLU -> 2x2 max-pool -> conv(4 -> 4, 3x3) -> ReLU -> flatten (4 x 11 x 11 = 484) ->
Linear(484 -> 16) -> ReLU -> Linear(16 -> 10) -> softmax. It was trained on the mean squared error between
its softmax and the one-hot label, on images in [-1, 1] with N(0, 0.1^2) noise added, and applied to the raw
(unclamped) samples. Here it returns logits (the softmax is applied by the loss and by ``predict_proba``);
its 16-wide hidden layer is its feature vector.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: width of the sinusoidal time embedding (the study's value)
TIME_DIM = 32


def sinusoidal_embedding(t: torch.Tensor, dim: int = TIME_DIM, max_period: float = 10_000.0) -> torch.Tensor:
    """[sin(t f_k), cos(t f_k)] with f_k = max_period^(-k / (dim/2)), k = 0 .. dim/2 - 1, of raw timesteps (07)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ReferenceBlock(nn.Module):
    """conv3x3 -> ReLU -> BatchNorm (+ time, + label) -> conv3x3 -> ReLU, plus the input (07)."""

    def __init__(self, in_channels: int, out_channels: int, label_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.time = nn.Linear(TIME_DIM, out_channels)
        self.label = nn.Linear(label_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, time: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.relu(self.conv1(x)))
        h = h + self.time(time)[:, :, None, None] + self.label(label)[:, :, None, None]
        return F.relu(self.conv2(h)) + self.skip(x)


class ReferenceUNet(nn.Module):
    """The reference study's UNet: eps(x_t, t, y) at full resolution, 129,569 parameters at width 16 (07).

    ``config`` is a :class:`cfgutils.core.unet.UNetConfig` with ``architecture="reference"``; only its
    ``base_channels`` and ``num_classes`` apply. ``y`` holds classes 0 .. num_classes - 1 or the null label.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        c, label_dim = config.base_channels, config.num_classes + 1
        self.down1 = ReferenceBlock(1, c, label_dim)
        self.down2 = ReferenceBlock(c, 2 * c, label_dim)
        self.middle = ReferenceBlock(2 * c, 4 * c, label_dim)
        self.up_conv1 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.up1 = ReferenceBlock(4 * c, 2 * c, label_dim)
        self.up_conv2 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.up2 = ReferenceBlock(2 * c, c, label_dim)
        self.out = nn.Conv2d(c, 1, 1)

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """The label vector: entry 0 for the null label, entry c + 1 for class c."""
        return F.one_hot((y + 1) % (self.config.num_classes + 1), self.config.num_classes + 1).float()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        time, label = sinusoidal_embedding(t), self.one_hot(y)
        d1 = self.down1(x, time, label)  # 28x28
        d2 = self.down2(F.max_pool2d(d1, 2), time, label)  # 14x14
        h = self.middle(F.max_pool2d(d2, 2), time, label)  # 7x7
        h = self.up1(torch.cat([self.up_conv1(h), d2], dim=1), time, label)
        h = self.up2(torch.cat([self.up_conv2(h), d1], dim=1), time, label)
        return self.out(h)


class ReferenceClassifier(nn.Module):
    """The reference study's 8,118-parameter digit classifier; returns logits, ``features`` the 16-d hidden layer (07)."""

    def __init__(self, num_classes: int = 10, hidden: int = 16):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4 * 11 * 11, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer (N x 16, after ReLU) of images in [-1, 1]."""
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
