"""Shared pieces of every model: the prunable-layer interface and the reference initialisations.

Every network in :mod:`replib.models` is built from plain ``nn.Conv2d``, ``nn.BatchNorm2d`` and
``nn.Linear`` modules with ordinary residual additions and ``torch.cat`` concatenations, so that
magnitude pruning (masks on ``.weight``), BN-scale methods (network slimming) and physical
channel removal (Torch-Pruning dependency graphs) all see the same, traceable structure.
"""

from __future__ import annotations

import math

from torch import nn

BNInit = float | str
"""How BN scales start: a constant, or ``"uniform"`` for gamma ~ U(0, 1) (open_lth)."""


class PrunableModel(nn.Module):
    """An ``nn.Module`` that names the layers whose weights the sparse methods act on."""

    def prunable_layers(self) -> list[nn.Module]:
        """All ``nn.Conv2d`` and ``nn.Linear`` modules, in registration order.

        This is every layer with a weight matrix or kernel, shortcut (downsample) convolutions
        and the classifier included; callers that follow a paper which spares some of them
        (e.g. open_lth's VGG ignoring ``fc.weight``) filter this list themselves.
        """
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def init_batchnorm(module: nn.Module, bn_init: BNInit) -> None:
    """Set every BN scale to ``bn_init`` (or U(0, 1) for ``"uniform"``) and every BN shift to 0."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            if bn_init == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            elif isinstance(bn_init, (int, float)) and not isinstance(bn_init, bool):
                nn.init.constant_(m.weight, float(bn_init))
            else:
                raise ValueError(
                    f"bn_init={bn_init!r} is not known; allowed values: a number or 'uniform'"
                )
            nn.init.zeros_(m.bias)


def init_slimming(
    module: nn.Module, bn_init: BNInit = 0.5, linear_std: float | None = 0.01
) -> None:
    """Initialisation of the network-slimming code base (VGG, pre-ResNet, DenseNet).

    Conv weights ~ N(0, sqrt(2 / (k^2 * out_channels))), conv biases 0, BN scale ``bn_init``
    (0.5 there) and shift 0, linear weights ~ N(0, ``linear_std``) and biases 0 (references.md,
    (E), for VGG). ``linear_std=None`` keeps PyTorch's default linear initialisation, which the
    slimming pre-ResNet and DenseNet do not override.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
    init_batchnorm(module, bn_init)


def init_open_lth(module: nn.Module, bn_init: BNInit = "uniform") -> None:
    """Initialisation of open_lth's CIFAR models: Kaiming-normal conv/linear weights, zero biases.

    open_lth's ``cifar_resnet_*`` and ``cifar_vgg_*`` default to ``batchnorm_init='uniform'``,
    i.e. BN scale ~ U(0, 1) (references.md, (B)).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    init_batchnorm(module, bn_init)
