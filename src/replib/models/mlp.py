"""Fully connected nets and LeNet-5-Caffe, the MNIST / Fashion-MNIST / CIFAR-10 MLP workloads.

- LeNet-300-100 (784-300-100-10): ACNN paper, Tables 1-4 (MNIST, Fashion-MNIST); l0 paper,
  Experiment 2 (Fig. 4, Table 1).
- MLP 3072-1024-1024-10: ACNN paper, Section 4.1.3, Tables 5-6 (CIFAR-10).
- LeNet-5-Caffe: l0 paper, Experiments 1 and 2 (Figs. 2, 3, 5, Table 1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from replib.models.base import PrunableModel


class MLP(PrunableModel):
    """A ReLU multilayer perceptron ``sizes[0] - sizes[1] - ... - sizes[-1]``.

    The input image batch (N, C, H, W) is flattened, so ``sizes[0]`` must equal C*H*W. Layers
    are ``fc1 .. fcK`` (``fcK`` is the classifier), with ReLU between them and none after the
    last. PyTorch's default ``nn.Linear`` initialisation is kept: neither the ACNN nor the l0
    paper states one.
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes={list(sizes)} must name at least an input and an output")
        self.sizes = tuple(int(s) for s in sizes)
        self.flatten = nn.Flatten()
        layers: list[tuple[str, nn.Module]] = []
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            layers.append((f"fc{i}", nn.Linear(fan_in, fan_out)))
            if i < len(self.sizes) - 1:
                layers.append((f"relu{i}", nn.ReLU()))
        self.layers = nn.Sequential(OrderedDict(layers))

    def hidden_layers(self) -> list[nn.Linear]:
        """All ``nn.Linear`` layers in forward order, the output layer last.

        Neuron pruning of hidden unit j in layer i removes row j of ``hidden_layers()[i]`` and
        column j of ``hidden_layers()[i + 1]``; the last layer's outputs (the classes) are
        never pruned.
        """
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


def lenet300(num_classes: int = 10) -> MLP:
    """LeNet-300-100: 784-300-100-``num_classes`` (266,610 parameters for 10 classes)."""
    return MLP((784, 300, 100, num_classes))


def mlp3072(num_classes: int = 10) -> MLP:
    """The ACNN paper's CIFAR-10 MLP, 3072-1024-1024-``num_classes``."""
    return MLP((3072, 1024, 1024, num_classes))


class LeNet5Caffe(PrunableModel):
    """LeNet-5-Caffe (the Caffe ``lenet_train_test.prototxt`` net the l0 paper cites, [39]).

    conv5x5 1->20 (no padding), maxpool 2, conv5x5 20->50, maxpool 2, fc 800->500, ReLU,
    fc 500->classes: 431,080 parameters for 10 classes. The Caffe net has no nonlinearity after
    the convolutions; ``conv_relu=True`` adds ReLU after each one, as in the L0-HC code
    (AMLab ``L0LeNet5``), which changes no parameter count.
    """

    def __init__(self, num_classes: int = 10, conv_relu: bool = False) -> None:
        super().__init__()
        self.conv_relu = conv_relu

        def act() -> nn.Module:
            return nn.ReLU() if conv_relu else nn.Identity()

        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 20, kernel_size=5),
                act1=act(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(20, 50, kernel_size=5),
                act2=act(),
                pool2=nn.MaxPool2d(2),
            )
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(800, 500), relu=nn.ReLU(), fc2=nn.Linear(500, num_classes))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))
