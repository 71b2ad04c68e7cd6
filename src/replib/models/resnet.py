"""Post-activation ResNets with basic blocks (He et al. 2016), CIFAR stem.

- ResNet-20: lottery paper, Figs. 5, 8, 9 (open_lth ``cifar_resnet_20``); l0 paper,
  Experiment 3 (Fig. 6, Table 2; "about 274 thousand parameters").
- ResNet-56: lottery paper, Table II (pruning comparison on CIFAR-10).
- WideResNet-20: lottery paper, Fig. 6 ("ResNet-20 with 64 convolutional filters in the first
  block", open_lth ``cifar_resnet_20_64``: widths 64/128/256).
- ResNet-18 (CIFAR stem: 3x3 conv, stride 1, no max-pool): iRDA paper, Tables 1-8.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from replib.models.base import BNInit, PrunableModel, init_batchnorm, init_open_lth

SHORTCUTS = ("A", "B")


class ShortcutA(nn.Module):
    """He et al.'s option A: parameter-free shortcut, subsample by ``stride``, zero-pad channels.

    The input's channels come first and the ``out_channels - in_channels`` zero channels after.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"out_channels={out_channels} must be >= in_channels={in_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    The shortcut is the identity unless the stride or the width changes; then it is a 1x1 conv
    with BN (option B, as open_lth and torchvision) or :class:`ShortcutA` (option A).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = ShortcutA(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


STEMS = ("cifar", "imagenet")


class ResNet(PrunableModel):
    """Stem conv3x3(3 -> widths[0])-BN-ReLU, stages of basic blocks, global average pool, fc.

    ``stem="imagenet"``: conv7x7 stride 2 - BN - ReLU - max-pool 3x3 stride 2 instead, the
    network of He et al. for 224x224 ImageNet images (iRDA's Table 3 ILSVRC2012 row).

    Stage ``s`` has ``blocks[s]`` blocks of width ``widths[s]``; the first block of every stage
    but the first halves the resolution. The global pool is adaptive, so the net also takes
    64x64 inputs (Tiny ImageNet); at 32x32 it equals the fixed 8x8 / 4x4 pools of the papers.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        num_classes: int = 10,
        shortcut: str = "B",
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is not known; allowed values: {SHORTCUTS}")
        if stem not in STEMS:
            raise ValueError(f"stem={stem!r} is not known; allowed values: {STEMS}")
        if len(widths) != len(blocks):
            raise ValueError(f"widths={list(widths)} and blocks={list(blocks)} differ in length")
        self.shortcut = shortcut
        if stem == "cifar":
            layers = OrderedDict(conv=nn.Conv2d(3, widths[0], 3, 1, padding=1, bias=False),
                                 bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU())
        else:  # He et al.'s ImageNet stem: 7x7 stride-2 conv and a 3x3 stride-2 max-pool
            layers = OrderedDict(conv=nn.Conv2d(3, widths[0], 7, 2, padding=3, bias=False),
                                 bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU(),
                                 pool=nn.MaxPool2d(3, 2, padding=1))
        self.stem = nn.Sequential(layers)
        stages: list[tuple[str, nn.Module]] = []
        in_channels = widths[0]
        for s, (width, n) in enumerate(zip(widths, blocks), start=1):
            stage = []
            for b in range(n):
                stride = 2 if (s > 1 and b == 0) else 1
                stage.append(BasicBlock(in_channels, width, stride, shortcut))
                in_channels = width
            stages.append((f"layer{s}", nn.Sequential(*stage)))
        self.stages = nn.Sequential(OrderedDict(stages))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def cifar_resnet(
    depth: int,
    width: int = 16,
    num_classes: int = 10,
    shortcut: str = "B",
    bn_init: BNInit = "uniform",
) -> ResNet:
    """He et al.'s CIFAR ResNet of depth 6n+2: 3 stages of n blocks, widths w/2w/4w.

    Defaults follow open_lth (the lottery paper's framework): option-B shortcuts, Kaiming-normal
    weights, BN scales ~ U(0, 1). For the l0 paper's ResNet20 pass ``shortcut="A"`` if wanted
    and ``bn_init=1.0`` (the Keras default).
    """
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"depth={depth} must be 6n+2 with n >= 1")
    n = (depth - 2) // 6
    net = ResNet((width, 2 * width, 4 * width), (n, n, n), num_classes, shortcut)
    init_open_lth(net, bn_init)
    return net


def resnet20(num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet-20 (n = 3): 272,474 parameters with option-B, 269,722 with option-A shortcuts."""
    return cifar_resnet(20, 16, num_classes, **kwargs)


def resnet56(num_classes: int = 10, **kwargs) -> ResNet:
    """ResNet-56 (n = 9)."""
    return cifar_resnet(56, 16, num_classes, **kwargs)


def wrn20(num_classes: int = 10, **kwargs) -> ResNet:
    """WideResNet-20 of the lottery paper: the ResNet-20 layout with widths 64/128/256."""
    return cifar_resnet(20, 64, num_classes, **kwargs)


def resnet18(num_classes: int = 10, shortcut: str = "B", bn_init: BNInit = 1.0) -> ResNet:
    """ResNet-18 with the CIFAR stem: 4 stages of 2 basic blocks, widths 64/128/256/512.

    The iRDA paper states no initialisation; PyTorch's default layer initialisation is kept and
    BN scales start at ``bn_init`` (1.0).
    """
    net = ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, shortcut)
    init_batchnorm(net, bn_init)
    return net
