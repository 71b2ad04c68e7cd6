"""Network slimming, original and proximal: the pieces the ``proxns`` tasks put together.

Bui et al., *A proximal algorithm for network slimming* (proxns paper), compare two ways of
minimizing Eq. (2), ``L(W, gamma) + lam ||gamma||_1`` over the BatchNorm scaling factors gamma:

- **original network slimming** (Liu et al.): the subgradient step Eq. (3b), i.e. the loss plus
  ``s * sum |gamma|`` (:func:`slimming_penalty`; the official code adds ``s * sign(gamma)`` to
  the gradient, and ``sign(0) = 0`` as in torch), then pruning the smallest ``|gamma|`` globally
  by a percentage (:func:`replib.sparsity.prune.bn_channel_masks` with ``percent``) and
  fine-tuning;
- **proximal NS**: Algorithm 1 (:class:`replib.sparsity.optim.ProximalSlimming` after every
  SGD step), whose auxiliary copy xi of gamma is soft-thresholded to *exact* zeros; the channels
  with ``xi = 0`` are removed, no threshold to choose.

This module adds what both need around the sparsity core: the networks at a width multiplier
(the ``cpu`` budget's cut), the scaling factors by layer, zero counts, physical removal with the
%-pruned statistics of Tables 2-3, and accuracy as a function of the pruned fraction.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

from . import models
from .data import Split
from .metrics import count_params, evaluate, flops
from .models.base import init_slimming
from .models.densenet import DenseNet
from .models.vgg import CFGS, M, VGG
from .sparsity.prune import bn_channel_masks, zero_bn_channels_
from .sparsity.shrink import shrink_channels

log = logging.getLogger(__name__)

MODELS = ("vgg19", "densenet40", "preresnet164", "preresnet110")

# Settings of the official code (references.md, (E)) and of Liu et al.'s README (baseline code):
# lam, beta of proximal NS (script.sh; the paper's Sec. 5.1 gives beta = 1.0 for ResNet-110);
# s, the subgradient weight of original NS, and its README prune percent.
PAPER_SETTINGS: dict[str, dict[str, float]] = {
    "vgg19": {"lam": 0.0045, "beta": 100.0, "s": 1e-4, "percent": 0.7},
    "densenet40": {"lam": 0.004, "beta": 100.0, "s": 1e-5, "percent": 0.4},
    "preresnet164": {"lam": 0.002, "beta": 0.25, "s": 1e-5, "percent": 0.4},
    "preresnet110": {"lam": 0.002, "beta": 1.0, "s": 1e-5, "percent": 0.4},
}

# Paper names of our model keys, for tables.
PAPER_NAMES = {"vgg19": "VGG-19", "densenet40": "DenseNet-40", "preresnet164": "ResNet-164",
               "preresnet110": "ResNet-110"}


def paper_settings(model: str) -> dict[str, float]:
    """lam, beta (proximal NS), s and percent (original NS) of the official code for ``model``."""
    if model not in PAPER_SETTINGS:
        raise ValueError(f"model={model!r} is not known; allowed values: {list(PAPER_SETTINGS)}")
    return dict(PAPER_SETTINGS[model])


# --------------------------------------------------------------------------- networks


def scale_width(n: int, width: float) -> int:
    """``round(n * width)`` (half up), at least 1: the width multiplier of one layer."""
    return max(1, int(math.floor(n * width + 0.5)))


def vgg_cfg(width: float = 1.0, depth: int = 19) -> list:
    """VGG's layer cfg with every conv width multiplied by ``width`` (max-pools unchanged)."""
    return [v if v == M else scale_width(int(v), width) for v in CFGS[depth]]


@torch.no_grad()
def narrow_channels_(model: nn.Module, width: float, input_shape=(3, 32, 32)) -> nn.Module:
    """Keep ``round(width * c)`` output channels of every conv (and what is coupled to it).

    A width multiplier for nets without a width argument (the pre-activation ResNets): each
    DepGraph group of Torch-Pruning (a conv with the BNs, residual partners and consumers that
    share its channels) keeps its first channels. Weights are then re-initialized as the
    slimming code does (conv N(0, sqrt(2/(k^2 out))), BN scale 0.5, PyTorch default linear),
    so the result is a freshly initialized narrower net of the same topology.
    """
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width={width} must lie in (0, 1]")
    if width < 1.0:
        example = torch.zeros(1, *input_shape)
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for group in list(dg.get_all_groups(ignored_layers=heads, root_module_types=[nn.Conv2d])):
            root = group[0].dep.target.module
            n = root.out_channels
            k = scale_width(n, width)
            if k < n:
                dg.get_pruning_group(root, tp.prune_conv_out_channels,
                                     list(range(k, n))).prune()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    init_slimming(model, 0.5, linear_std=None)
    return model


def build_model(name: str, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """``name`` (vgg19, densenet40, preresnet164, preresnet110) at a width multiplier.

    ``width=1`` is the registry's network (the paper's). Below 1: VGG-19 scales its cfg
    (64 -> 16 at 0.25), DenseNet-40 its growth rate (12 -> 3 at 0.25; stem = 2 x growth), the
    pre-ResNets every conv (:func:`narrow_channels_`); depth and topology never change.
    """
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not known; allowed values: {list(MODELS)}")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width={width} must lie in (0, 1]")
    if width == 1.0:
        return models.get(name, num_classes=num_classes)
    if name == "vgg19":
        return VGG(vgg_cfg(width), num_classes)
    if name == "densenet40":
        return DenseNet(40, scale_width(12, width), num_classes)
    return narrow_channels_(models.get(name, num_classes=num_classes), width,
                            models.input_shape(name))


# --------------------------------------------------------------------------- scaling factors


def batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every affine BN layer by name: the channels network slimming scores (all of them)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine}


def total_channels(model: nn.Module) -> int:
    """Number of scaling factors (5504 for VGG-19, 9360 DenseNet-40, 12112 ResNet-164)."""
    return sum(bn.num_features for bn in batchnorms(model).values())


def scaling_factors(model: nn.Module) -> dict[str, Tensor]:
    """The BN scales gamma by layer name (detached views)."""
    return {n: bn.weight.detach() for n, bn in batchnorms(model).items()}


def slimming_penalty(s: float) -> Callable[[nn.Module], Tensor]:
    """``s * sum_i |gamma_i|`` over all BN scales: the l1 term of Eq. (2), trained by Eq. (3b).

    Autograd's derivative of ``|x|`` is ``sign(x)`` with ``sign(0) = 0``, the subgradient the
    official network-slimming code adds to ``gamma.grad`` (``updateBN``).
    """
    if s < 0:
        raise ValueError(f"s={s} must be >= 0")

    def penalty(model: nn.Module) -> Tensor:
        return s * sum(bn.weight.abs().sum() for bn in batchnorms(model).values())

    return penalty


def count_zeros(tensors: Iterable[Tensor]) -> int:
    """Entries exactly equal to 0 (Table 1 counts scaling factors equal to zero)."""
    return int(sum(int((t == 0).sum()) for t in tensors))


def log_histogram(tensors: Iterable[Tensor], lo: float = -8.0, hi: float = 1.0,
                  bins: int = 54) -> dict:
    """Histogram of ``log10|x|`` on ``[lo, hi]`` plus the exact zeros and the tiny ones apart.

    JSON-able: ``edges`` (bins + 1 values of log10|x|), ``counts``, ``zeros`` (x == 0),
    ``below`` (0 < |x| < 10^lo), ``above`` (|x| > 10^hi).
    """
    x = torch.cat([t.detach().flatten().abs().double().cpu() for t in tensors])
    nz = x[x > 0]
    logs = torch.log10(nz)
    inside = logs[(logs >= lo) & (logs <= hi)]
    counts = torch.histc(inside, bins=bins, min=lo, max=hi) if inside.numel() else \
        torch.zeros(bins, dtype=torch.double)
    return {
        "edges": torch.linspace(lo, hi, bins + 1).tolist(),
        "counts": [int(c) for c in counts.tolist()],
        "zeros": int((x == 0).sum()),
        "below": int((logs < lo).sum()),
        "above": int((logs > hi).sum()),
    }


# --------------------------------------------------------------------------- pruning


def masked_copy(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """A copy with the masked channels switched off (BN gamma = beta = 0), same architecture."""
    new = copy.deepcopy(model)
    zero_bn_channels_(new, masks)
    return new


def layer_channels(masks: Mapping[str, Tensor]) -> list[dict]:
    """Per BN layer: name, channels, kept channels (for the per-layer figure)."""
    return [{"layer": n, "channels": int(m.numel()), "kept": int(m.sum())}
            for n, m in masks.items()]


def prune_channels(model: nn.Module, masks: Mapping[str, Tensor], input_shape,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Physically remove the masked channels; return the smaller net and Table 2's statistics.

    ``shrink_channels`` (Torch-Pruning) cuts each masked channel from its conv, BN and consumer
    layers, or, where a BN reads a tensor shared with other layers (the first BN of a
    pre-activation bottleneck on the residual stream, DenseNet's BNs on the concatenation),
    from that BN and its convs only, with a channel selection in front; it checks that the
    result computes what the masked net computes. ``bn_channel_masks`` never empties a layer.

    Statistics: ``channels``, ``channels_pruned`` (masked), ``channels_pruned_pct``,
    ``params``/``params_pruned_pct`` and ``flops``/``flops_pruned_pct`` (2 x MACs of conv and
    linear layers at batch 1, :func:`replib.metrics.flops`) of the unpruned vs the shrunk net.
    """
    model = model.to(device).eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    shrunk = shrink_channels(model, masks, example)
    total = sum(int(m.numel()) for m in masks.values())
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    p0, p1 = count_params(model), count_params(shrunk)
    f0, f1 = flops(model, input_shape), flops(shrunk, input_shape)
    stats = {
        "channels": total,
        "channels_pruned": pruned,
        "channels_pruned_pct": 100.0 * pruned / total,
        "params": p0,
        "params_after": p1,
        "params_pruned_pct": 100.0 * (1.0 - p1 / p0),
        "flops": f0,
        "flops_after": f1,
        "flops_pruned_pct": 100.0 * (1.0 - f1 / f0),
    }
    return shrunk, stats


def prune_curve(model: nn.Module, test: Split, percents: Iterable[float],
                scales: Mapping[str, Tensor] | None = None,
                device: torch.device | str = "cpu") -> list[dict]:
    """Test accuracy after switching off the ``p`` smallest-scale channels, for each ``p``.

    No fine-tuning: this is the "post pruned" accuracy of Table 2 as a function of the pruned
    fraction (global ranking of ``|gamma|``, or of ``scales``, e.g. proximal NS's xi).
    Evaluated on the masked net, which computes what the physically pruned net computes.
    """
    out = []
    for p in percents:
        masks = bn_channel_masks(model, percent=float(p), scales=scales)
        acc = evaluate(masked_copy(model, masks), test, device=device)["acc"]
        pruned = sum(int((~m).sum()) for m in masks.values())
        total = sum(int(m.numel()) for m in masks.values())
        out.append({"percent": float(p), "channels_pruned_pct": 100.0 * pruned / total,
                    "acc": acc})
    return out
