"""Model registry: every network the five papers train, by one name each.

>>> net = get("resnet20", num_classes=10, shortcut="A")
>>> input_shape("resnet20")
(3, 32, 32)

Every model takes an image batch (N, C, H, W) (MLPs flatten it) and exposes
``prunable_layers()`` (all conv and linear layers); MLPs also expose ``hidden_layers()``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from replib.models.base import PrunableModel
from replib.models.densenet import DenseNet, densenet40
from replib.models.mlp import MLP, LeNet5Caffe, lenet300, mlp3072
from replib.models.preresnet import PreResNet, preresnet110, preresnet164
from replib.models.resnet import ResNet, resnet18, resnet20, resnet56, wrn20
from replib.models.vgg import VGG, vgg11, vgg16, vgg19

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int]]] = {
    "lenet300": (lenet300, MNIST_SHAPE),
    "lenet5_caffe": (LeNet5Caffe, MNIST_SHAPE),
    "mlp3072": (mlp3072, CIFAR_SHAPE),
    "resnet20": (resnet20, CIFAR_SHAPE),
    "resnet56": (resnet56, CIFAR_SHAPE),
    "wrn20": (wrn20, CIFAR_SHAPE),
    "preresnet110": (preresnet110, CIFAR_SHAPE),
    "preresnet164": (preresnet164, CIFAR_SHAPE),
    "vgg11": (vgg11, CIFAR_SHAPE),
    "vgg16": (vgg16, CIFAR_SHAPE),
    "vgg19": (vgg19, CIFAR_SHAPE),
    "densenet40": (densenet40, CIFAR_SHAPE),
    "resnet18": (resnet18, CIFAR_SHAPE),
}

__all__ = [
    "MLP",
    "VGG",
    "DenseNet",
    "LeNet5Caffe",
    "PreResNet",
    "PrunableModel",
    "ResNet",
    "get",
    "input_shape",
    "names",
]


def names() -> list[str]:
    """The registered model names, in the order of the papers' tables (MNIST nets first)."""
    return list(_REGISTRY)


def _lookup(name: str) -> tuple[Callable[..., nn.Module], tuple[int, int, int]]:
    if name not in _REGISTRY:
        raise ValueError(f"model={name!r} is not known; allowed values: {names()}")
    return _REGISTRY[name]


def get(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs; ``kwargs`` go to its constructor.

    Keywords by family: ``resnet20/56``, ``wrn20``, ``resnet18``: ``shortcut`` ("B" default,
    or "A"), ``bn_init``; ``vgg*``: ``conv_bias``, ``bn_init``, ``init``; ``preresnet*``:
    ``cfg``, ``bn_init``; ``densenet40``: ``bn_init``; ``lenet5_caffe``: ``conv_relu``.
    """
    builder, _ = _lookup(name)
    return builder(num_classes=num_classes, **kwargs)


def input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) of one input image: (1, 28, 28) for MNIST nets, (3, 32, 32) for CIFAR."""
    return _lookup(name)[1]
