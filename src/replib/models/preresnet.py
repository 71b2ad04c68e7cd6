"""Pre-activation bottleneck ResNets of the (proximal) network-slimming code.

- ResNet-164 (n = 18): proximal NS paper, Tables 1 and 2a-2b (CIFAR-10/100).
- ResNet-110 (n = 12): proximal NS paper, Table 3. As references.md notes, the official code's
  depth 110 is this *bottleneck* net (depth = 9n + 2), not He et al.'s basic-block ResNet-110.

Unlike the official code there is no ``channel_selection`` layer: a pruned net is a smaller
net of the same class, built from a per-block channel ``cfg`` (or by Torch-Pruning in place).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from replib.models.base import BNInit, PrunableModel, init_slimming

EXPANSION = 4


def default_cfg(depth: int) -> list[int]:
    """The official code's default channel cfg, flattened: 3 entries per block, then the last BN.

    Per block ``[in, mid1, mid2]`` = channels into bn1, out of conv1, out of conv2:
    ``[16,16,16], [64,16,16]*(n-1), [64,32,32], [128,32,32]*(n-1), [128,64,64],
    [256,64,64]*(n-1), [256]``.
    """
    n = _blocks_per_stage(depth)
    cfg: list[int] = []
    for stage_in, planes in ((16, 16), (EXPANSION * 16, 32), (EXPANSION * 32, 64)):
        cfg += [stage_in, planes, planes]
        cfg += [EXPANSION * planes, planes, planes] * (n - 1)
    return cfg + [EXPANSION * 64]


def _blocks_per_stage(depth: int) -> int:
    if (depth - 2) % 9 != 0 or depth < 11:
        raise ValueError(f"depth={depth} must be 9n+2 with n >= 1")
    return (depth - 2) // 9


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1, plus the shortcut of the input.

    ``cfg = (c_in, c1, c2)``: bn1 sees ``c_in`` channels (prunable: conv1 reads only the kept
    ones), conv1 gives ``c1``, conv2 gives ``c2``, and conv3 always gives ``out_channels``
    (planes x 4, never pruned, as the residual sum needs it). The residual is taken from the
    block's raw input, through a bias-free 1x1 conv when shape changes (no BN, as the
    official code). ``in_channels`` is the width of the residual stream entering the block.
    """

    def __init__(
        self, in_channels: int, out_channels: int, cfg: Sequence[int], stride: int
    ) -> None:
        super().__init__()
        c_in, c1, c2 = cfg
        if c_in != in_channels:
            raise ValueError(
                f"cfg={list(cfg)}: bn1 must see all {in_channels} input channels "
                "(prune channels physically instead of selecting them)"
            )
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c1)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c2)
        self.relu3 = nn.ReLU()
        self.conv3 = nn.Conv2d(c2, out_channels, 1, bias=False)
        self.downsample: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        return out + self.downsample(x)


class PreResNet(PrunableModel):
    """conv3x3 3->16, three stages of n pre-activation bottlenecks, BN-ReLU-avgpool-fc.

    Stage widths (planes) 16/32/64 with output planes x 4 = 64/128/256; stages 2 and 3 start
    with stride 2. The final average pool is adaptive (equal to the reference AvgPool2d(8) at
    32x32). Initialisation as the slimming code: conv N(0, sqrt(2/(k^2 out))), BN scale
    ``bn_init`` (0.5), PyTorch's default linear initialisation.
    """

    def __init__(
        self,
        depth: int = 164,
        num_classes: int = 10,
        cfg: Sequence[int] | None = None,
        bn_init: BNInit = 0.5,
    ) -> None:
        super().__init__()
        n = _blocks_per_stage(depth)
        self.depth = depth
        self.cfg = list(cfg) if cfg is not None else default_cfg(depth)
        if len(self.cfg) != 9 * n + 1:
            raise ValueError(f"cfg has {len(self.cfg)} entries; depth={depth} needs {9 * n + 1}")
        self.conv1 = nn.Conv2d(3, 16, 3, 1, padding=1, bias=False)
        stages: list[tuple[str, nn.Module]] = []
        in_channels = 16
        for s, planes in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                k = 3 * (s * n + b)
                stride = 2 if (s > 0 and b == 0) else 1
                out_channels = EXPANSION * planes
                block = PreActBottleneck(in_channels, out_channels, self.cfg[k : k + 3], stride)
                blocks.append(block)
                in_channels = out_channels
            stages.append((f"layer{s + 1}", nn.Sequential(*blocks)))
        self.stages = nn.Sequential(OrderedDict(stages))
        if self.cfg[-1] != in_channels:
            raise ValueError(f"cfg[-1]={self.cfg[-1]} must equal the {in_channels} final channels")
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)
        init_slimming(self, bn_init, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.stages(self.conv1(x))))
        return self.fc(self.flatten(self.pool(out)))


def preresnet110(num_classes: int = 10, **kwargs) -> PreResNet:
    """Bottleneck pre-activation ResNet-110 (n = 12) of the proximal NS code."""
    return PreResNet(110, num_classes, **kwargs)


def preresnet164(num_classes: int = 10, **kwargs) -> PreResNet:
    """Bottleneck pre-activation ResNet-164 (n = 18), about 1.7M parameters."""
    return PreResNet(164, num_classes, **kwargs)
