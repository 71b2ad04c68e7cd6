"""CIFAR VGG nets (conv-BN-ReLU stacks with a single linear classifier).

- VGG-19: proximal NS paper, Tables 1 and 2a-2b (CIFAR-10/100; 5504 BN channels); iRDA paper,
  Table 2.
- VGG-16: iRDA paper, Tables 2 and 4.
- VGG-11: lottery paper, Fig. 7 (open_lth ``cifar_vgg_11``: ``conv_bias=True``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from replib.models.base import BNInit, PrunableModel, init_open_lth, init_slimming

M = "M"
INITS = ("slimming", "open_lth")
CFGS: dict[int, list[int | str]] = {
    11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512],
    16: [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512],
    19: [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M]
    + [512, 512, 512, 512],
}


class VGG(PrunableModel):
    """conv3x3(pad 1)-BN-ReLU layers and 2x2 max-pools per ``cfg``, then avgpool and one Linear.

    As the network-slimming code: no max-pool after the last conv block, the head is
    AvgPool2d(2) + ``Linear(cfg[-1], num_classes)``; here the pool is adaptive to 1x1, which
    is the same at 32x32 and also takes 64x64 inputs. Convs have no bias unless
    ``conv_bias=True`` (open_lth's variant, lottery paper). ``init="slimming"`` is the slimming
    code's: conv N(0, sqrt(2/(k^2 out))), BN scale ``bn_init`` (0.5), linear N(0, 0.01);
    ``init="open_lth"`` is Kaiming-normal weights (pair it with ``bn_init="uniform"``).
    ``cfg`` may be a pruned one (fewer channels per layer).
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 10,
        conv_bias: bool = False,
        bn_init: BNInit = 0.5,
        init: str = "slimming",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init={init!r} is not known; allowed values: {INITS}")
        self.cfg = list(cfg)
        layers: list[tuple[str, nn.Module]] = []
        in_channels, i, p = 3, 0, 0
        for v in self.cfg:
            if v == M:
                p += 1
                layers.append((f"pool{p}", nn.MaxPool2d(2)))
                continue
            i += 1
            conv = nn.Conv2d(in_channels, int(v), 3, padding=1, bias=conv_bias)
            layers.append((f"conv{i}", conv))
            layers.append((f"bn{i}", nn.BatchNorm2d(int(v))))
            layers.append((f"relu{i}", nn.ReLU()))
            in_channels = int(v)
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)
        if init == "slimming":
            init_slimming(self, bn_init)
        else:
            init_open_lth(self, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def vgg(depth: int, num_classes: int = 10, **kwargs) -> VGG:
    """VGG-``depth`` (11, 16 or 19) with the CIFAR head."""
    if depth not in CFGS:
        raise ValueError(f"depth={depth} is not known; allowed values: {sorted(CFGS)}")
    return VGG(CFGS[depth], num_classes, **kwargs)


def vgg11(num_classes: int = 10, **kwargs) -> VGG:
    """VGG-11 (lottery paper).

    open_lth's variant is ``conv_bias=True, init="open_lth", bn_init="uniform"``.
    """
    return vgg(11, num_classes, **kwargs)


def vgg16(num_classes: int = 10, **kwargs) -> VGG:
    """VGG-16 (iRDA paper)."""
    return vgg(16, num_classes, **kwargs)


def vgg19(num_classes: int = 10, **kwargs) -> VGG:
    """VGG-19 of network slimming: 20,035,018 parameters for 10 classes."""
    return vgg(19, num_classes, **kwargs)
