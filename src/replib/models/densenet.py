"""DenseNet-40 (no bottleneck, compression 1) of the (proximal) network-slimming code.

Serves the proximal NS paper, Tables 1, 2a-2b and 3 (CIFAR-10/100; 9360 BN channels).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from replib.models.base import BNInit, PrunableModel, init_slimming


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` new channels, concatenated after the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1-avgpool2 between dense blocks (compression 1: width unchanged)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            OrderedDict(
                bn=nn.BatchNorm2d(in_channels),
                relu=nn.ReLU(),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                pool=nn.AvgPool2d(2),
            )
        )


class DenseNet(PrunableModel):
    """conv3x3 3 -> 2*growth, 3 dense blocks of (depth - 4) / 3 layers with 2 transitions,
    then BN-ReLU-global avgpool-fc.

    Depth 40, growth 12: 24 stem channels, 12 layers per block, 456 channels into the head,
    1,059,298 parameters for 10 classes. The head pool is adaptive (the reference's
    AvgPool2d(8) at 32x32). Initialisation as the slimming code: conv N(0, sqrt(2/(k^2 out))),
    BN scale ``bn_init`` (0.5), PyTorch's default linear initialisation.
    """

    def __init__(
        self,
        depth: int = 40,
        growth: int = 12,
        num_classes: int = 10,
        bn_init: BNInit = 0.5,
    ) -> None:
        super().__init__()
        if (depth - 4) % 3 != 0 or depth < 7:
            raise ValueError(f"depth={depth} must be 3n+4 with n >= 1")
        n = (depth - 4) // 3
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        parts: list[tuple[str, nn.Module]] = []
        for b in range(1, 4):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            parts.append((f"block{b}", nn.Sequential(*layers)))
            if b < 3:
                parts.append((f"trans{b}", Transition(channels, channels)))
        self.blocks = nn.Sequential(OrderedDict(parts))
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        init_slimming(self, bn_init, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


def densenet40(num_classes: int = 10, **kwargs) -> DenseNet:
    """DenseNet-40, growth rate 12, no bottleneck, no compression."""
    return DenseNet(40, 12, num_classes, **kwargs)
