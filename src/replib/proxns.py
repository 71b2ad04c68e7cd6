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
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from . import models
from .data import Split, num_batches
from .metrics import count_params, diff_se, evaluate, flops
from .models.base import init_slimming
from .models.densenet import DenseNet
from .models.vgg import CFGS, VGG, M
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


def _consumer_after(model: nn.Module, bn_name: str) -> nn.Module:
    """The conv / linear that reads a BN through its ReLU (and pooling / flatten only).

    In VGG, DenseNet and the pre-activation ResNets every BN is followed, in registration
    order, by a ReLU and then by the one layer that consumes it; anything else is refused.
    """
    names = [n for n, _ in model.named_modules()]
    mods = dict(model.named_modules())
    i = names.index(bn_name) + 1
    # skip the BN's own children (none for BatchNorm2d) and check the ReLU
    if i >= len(names) or not isinstance(mods[names[i]], nn.ReLU):
        raise ValueError(f"{bn_name} is not followed by a ReLU")
    for n in names[i + 1:]:
        m = mods[n]
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return m
        if not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
            raise ValueError(f"{bn_name}: {n} ({type(m).__name__}) sits between the BN and "
                             "its consumer")
    raise ValueError(f"{bn_name} has no consumer layer")


@torch.no_grad()
def fold_pruned_constants_(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Move the constant output of every masked channel into its consumer's bias.

    A channel whose scaling factor is 0 still outputs ``relu(beta)``, a constant; removing it
    (as the official code and :func:`prune_channels` do) also removes that constant from the
    next layer, which the next BN's running mean still expects. Adding
    ``relu(beta_j) * sum(W[:, j])`` to the consumer's bias keeps the network's function (exactly
    for 1x1 convs and the classifier, up to zero-padding borders for 3x3 convs). Not in the
    paper: a diagnostic reading of "pruning the zero channels leaves accuracy unchanged".
    """
    for name, mask in masks.items():
        off = ~mask.bool()
        if not off.any():
            continue
        bn = model.get_submodule(name)
        const = torch.relu(bn.bias[off.to(bn.bias.device)])
        layer = _consumer_after(model, name)
        w = layer.weight[:, off.to(layer.weight.device)]
        shift = (w.flatten(2).sum(-1) if w.dim() == 4 else w) @ const
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0],
                                                  device=layer.weight.device))
        layer.bias += shift
    return model


# --------------------------------------------------------------------------- budgets

LR0 = 0.1  # the paper's initial learning rate; alpha = 1 / lr (Sec. 5.1)


def drift_steps(lam: float, beta: float, alpha: float, start: float = 0.5) -> float:
    """Steps Algorithm 1 needs to move an unneeded scaling factor from ``start`` to exactly 0.

    With a zero loss gradient, gamma and xi settle into a common drift: xi leads gamma by
    ``delta``, ``gamma`` moves by ``beta delta / (alpha + beta)`` and xi by the same amount, and
    the soft threshold ``lam / (alpha + beta)`` of line 4 balances ``beta delta + alpha r = lam``,
    so both fall by ``r = lam / (2 alpha + beta)`` per step: ``start (2 alpha + beta) / lam``
    steps (13,300 for VGG-19's lam = 0.0045, beta = 100 at alpha = 10; 12,600 with the
    weight decay, which pulls too).
    """
    if lam <= 0:
        raise ValueError(f"lam={lam} must be > 0")
    return start * (2.0 * alpha + beta) / lam


def phase1_steps(n_train: int, epochs: int, batch_size: int = 64) -> int:
    """SGD steps before the first LR drop (at ``max(1, round(0.5 * epochs))`` epochs)."""
    return max(1, int(round(0.5 * epochs))) * num_batches(n_train, batch_size)


CIFAR_TRAIN = 50_000  # CIFAR-10/100 training images


def _epochs_and_hparams(spec) -> tuple[int, Mapping]:
    """``(epochs, hparams)`` of a :class:`~replib.experiments.spec.RunSpec`, a record, or a
    record's ``spec``."""
    if hasattr(spec, "hp"):
        return int(spec.epochs), spec.hp
    spec = spec.get("spec", spec)
    return int(spec["epochs"]), spec["hparams"]


def train_images(spec) -> int:
    """Training images of a run: its subset, else CIFAR's :data:`CIFAR_TRAIN` less any
    held-out validation images. ``spec``: as for :func:`train_steps`."""
    _, hp = _epochs_and_hparams(spec)
    return int(hp.get("train_subset") or CIFAR_TRAIN - hp.get("val_size", 0))


def train_steps(spec) -> int:
    """SGD steps of a run's training stage, fine-tuning not counted: epochs x batches of its
    :func:`train_images` (the last, partial batch counts, as in :func:`phase1_steps`).
    ``spec``: a :class:`~replib.experiments.spec.RunSpec`, a record, or a record's ``spec``."""
    epochs, hp = _epochs_and_hparams(spec)
    return epochs * num_batches(train_images(spec), int(hp["batch_size"]))


PAPER_BATCH_SIZE = 64  # Sec. 5.1's batch size


def paper_schedule(batch_size: int = PAPER_BATCH_SIZE) -> dict[str, int]:
    """The paper's training length (Sec. 5.1), fine-tuning not counted: ``{"epochs": 160,
    "batches_per_epoch": 782, "batch_size": 64}``, the epochs of the paper's cut (:data:`CUTS`)
    over its training images in batches of ``batch_size`` (the last, partial batch counts)."""
    _, n, epochs, _ = CUTS["paper"]["vgg19"]
    return {"epochs": epochs, "batches_per_epoch": num_batches(n, batch_size),
            "batch_size": batch_size}


def paper_train_steps(batch_size: int = PAPER_BATCH_SIZE) -> int:
    """The paper's training length in SGD steps (Sec. 5.1: 160 epochs of CIFAR's 50,000
    training images in batches of 64): 125,120, :func:`paper_schedule`'s epochs times batches
    per epoch."""
    s = paper_schedule(batch_size)
    return s["epochs"] * s["batches_per_epoch"]


def steps_vs_paper(spec) -> str:
    """A run's training length against the paper's: ``"942 SGD steps (0.75% of the
    paper's)"`` (:func:`train_steps` over :func:`paper_train_steps`; fine-tuning not counted).
    ``spec``: as for :func:`train_steps`."""
    steps = train_steps(spec)
    return f"{steps:,} SGD steps ({100 * steps / paper_train_steps():.2f}% of the paper's)"


DRIFT_FRACTION = 1.0  # at a cut budget, the zero-gradient drift takes the first LR phase


def penalty_settings(model: str, n_train: int, epochs: int, batch_size: int = 64,
                     beta: float | None = None) -> dict:
    """lam and beta (proximal NS), s (original NS) and the scale kappa for a training length.

    At the paper's length (160 epochs: 62,560 steps before the first LR drop) these are the
    official values. A cut budget has ~100 times fewer steps, fewer than :func:`drift_steps`
    needs to bring *any* scaling factor from 0.5 to zero (13,300 at VGG-19's setting), so lam
    is multiplied by the smallest kappa >= 1 for which that drift fits in the first LR phase
    (``DRIFT_FRACTION`` of it), and original NS's s by the same kappa. beta stays the paper's
    unless given (an ablation): it sets how closely gamma follows xi, which is what makes
    removing the channels with xi = 0 harmless.
    """
    p = paper_settings(model)
    beta = p["beta"] if beta is None else float(beta)
    steps = phase1_steps(n_train, epochs, batch_size)
    kappa = max(1.0, drift_steps(p["lam"], beta, 1.0 / LR0) / (DRIFT_FRACTION * steps))
    return {"lam": p["lam"] * kappa, "beta": beta, "s": p["s"] * kappa, "kappa": kappa}


# What each budget runs: (width, training images, epochs, fine-tuning epochs).
CUTS = {
    "smoke": {"vgg19": (0.125, 64, 1, 1), "deep": (0.125, 64, 1, 1)},
    "cpu": {"vgg19": (0.25, 10_000, 6, 2), "deep": (0.25, 5_000, 4, 0)},
    "paper": {"vgg19": (1.0, CIFAR_TRAIN, 160, 160), "deep": (1.0, CIFAR_TRAIN, 160, 160)},
}
LONG = {"smoke": {"vgg19": {"epochs": 2}},
        "cpu": {"vgg19": {"epochs": 24}, "densenet40": {"epochs": 24, "n_train": 10_000},
                "preresnet164": {"epochs": 24, "n_train": 10_000},
                "preresnet110": {"epochs": 24, "n_train": 10_000}},
        "paper": {}}
"""The longer runs per budget and network: what departs from the budget's own cut, everything
else equal. Notebook 02 runs them as pairs (proximal NS, then original NS at its matched
fraction); notebook 03 needs the proximal NS run only (Table 3 has no original NS row), so
ResNet-110's entry is a single run. At ``cpu``, VGG-19 trains 24 epochs (four times its cut)
and the deep networks 24 epochs on 10,000 images (six times their cut's epochs on twice its
images: the same SGD steps as VGG-19's). The statements a cut can test are judged on them,
the longest training we can afford on a CPU. Empty at ``paper``: the budget's own runs are
already the paper's length."""
LONG_SEEDS = {"cpu": {"densenet40": (0, 1), "preresnet164": (0, 1)}}
"""Seeds of the longer runs where one is not enough (default: seed 0 alone). DenseNet-40's
collapse gap at ``cpu`` came out at the threshold (10.3 points, one standard error about 3)
and ResNet-164's one standard error below it (8.7 points, about 2.9), so their pairs also run
a second seed and their statements are judged on the mean of the two (:func:`judge_on_long`)."""
METHOD_TASKS = {"baseline": "proxns_baseline", "original": "proxns_original_ns",
                "proximal": "proxns_proximal_ns"}


def methods(model: str, budget: str) -> list[str]:
    """The methods run for ``model`` at ``budget``. At ``cpu`` the deep nets (seconds per SGD
    step on this book's CPU, proxns/02 gives them per run) skip the baseline, which no claim a
    cut can test needs, and their fine-tuning (``budget_cut``); VGG-19 runs everything."""
    if budget == "cpu" and model != "vgg19":
        return ["original", "proximal"]
    return ["baseline", "original", "proximal"]


def budget_cut(model: str, budget: str) -> dict:
    """Width, training subset, epochs and fine-tuning epochs of ``model`` at ``budget``."""
    from .experiments.budgets import check_budget

    check_budget(budget)
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not known; allowed values: {list(MODELS)}")
    width, n, epochs, ft = CUTS[budget]["vgg19" if model == "vgg19" else "deep"]
    return {"width": width, "n_train": n, "epochs": epochs, "finetune_epochs": ft}


def run_spec(model: str, method: str, budget: str, dataset: str = "cifar10",
             percent: float | None = None, seed: int = 0, beta: float | None = None,
             drift_fraction: float | None = None, epochs: int | None = None,
             n_train: int | None = None):
    """The spec every notebook uses for (model, method, budget): one record per setting.

    ``percent`` (original NS only) is the fraction of channels to prune; the notebooks pass the
    proximal NS run's fraction (as the paper's Table 2 does, "about the same proportion").
    ``beta`` and ``drift_fraction`` override the budget's choices (ablations; proximal NS only).
    ``epochs`` and ``n_train`` override the budget's training length and subset (lam, s
    rescaled for them as the budget's own are; the longer pairs of notebook 02, :data:`LONG`).
    """
    from . import experiments as ex

    if method not in METHOD_TASKS:
        raise ValueError(f"method={method!r} is not known; allowed values: {list(METHOD_TASKS)}")
    cut = budget_cut(model, budget)
    if epochs is not None:
        if int(epochs) < 1:
            raise ValueError(f"epochs={epochs} must be >= 1")
        cut["epochs"] = int(epochs)
    if n_train is not None:
        if not 1 <= int(n_train) <= CIFAR_TRAIN:
            raise ValueError(f"n_train={n_train} must be in 1..{CIFAR_TRAIN} (CIFAR's training "
                             "images)")
        cut["n_train"] = int(n_train)
    pen = penalty_settings(model, cut["n_train"], cut["epochs"], beta=beta)
    if drift_fraction is not None and budget != "paper":
        p = paper_settings(model)
        steps = phase1_steps(cut["n_train"], cut["epochs"])
        kappa = max(1.0, drift_steps(p["lam"], pen["beta"], 1.0 / LR0) / (drift_fraction * steps))
        pen = {"lam": p["lam"] * kappa, "beta": pen["beta"], "s": p["s"] * kappa, "kappa": kappa}
    hp: dict = {"width": cut["width"],
                "train_subset": 0 if cut["n_train"] >= CIFAR_TRAIN else cut["n_train"]}
    if budget == "smoke":
        hp.update(test_subset=20, curve=[0.5])
    if method == "original":
        if percent is None:
            raise ValueError("percent is required for method='original'")
        hp.update(s=pen["s"], percent=float(percent),
                  finetune_epochs=cut["finetune_epochs"])
    elif method == "proximal":
        hp.update(lam=pen["lam"], beta=pen["beta"], finetune_epochs=cut["finetune_epochs"])
    return ex.make_spec("proxns", METHOD_TASKS[method], dataset=dataset, model=model,
                        epochs=cut["epochs"], seed=seed, budget=budget, **hp)


def table2_records(model_names: Iterable[str], budget: str, dataset: str = "cifar10",
                   rerun: bool = False, out: dict | None = None) -> dict[tuple[str, str], dict]:
    """Run (or look up) Table 2's runs of each network on ``dataset`` (``cifar10``: Table 2a,
    ``cifar100``: Table 2b): proximal NS, the baseline where :func:`methods` has one, and
    original NS pruned to proximal NS's matched fraction. Keyed by (model, method), in that
    order. Each record goes into ``out`` (a new dict by default, returned) as soon as it
    exists, so a caller keeps the records made before an error, or before the planner of
    ``make reproduce`` stops at a result it does not have yet (original NS's fraction)."""
    from . import experiments as ex

    if dataset not in TABLE2:
        raise ValueError(f"dataset={dataset!r}: Table 2 has {sorted(TABLE2)}")
    records: dict[tuple[str, str], dict] = {} if out is None else out
    for m in model_names:
        records[(m, "proximal")] = ex.run(run_spec(m, "proximal", budget, dataset=dataset),
                                          rerun=rerun)
        if "baseline" in methods(m, budget):
            records[(m, "baseline")] = ex.run(run_spec(m, "baseline", budget, dataset=dataset),
                                              rerun=rerun)
        percent = matched_percent(records[(m, "proximal")]["metrics"])
        records[(m, "original")] = ex.run(
            run_spec(m, "original", budget, dataset=dataset, percent=percent), rerun=rerun)
    return records


def matched_percent(proximal_metrics: Mapping[str, float]) -> float:
    """Original NS prunes proximal NS's channel fraction, rounded down to a whole percent
    (Table 2a: 74.59% -> 74.00% for VGG-19)."""
    return math.floor(proximal_metrics["channels_pruned_pct"]) / 100.0


CLAIM_KEYS = {"vgg19": "vgg19", "densenet40": "densenet40", "preresnet164": "resnet164",
              "preresnet110": "resnet110"}


# --------------------------------------------------------------------------- the paper's tables

# Table 1: total channels, mean number of gamma_i = 0 over 5 runs on CIFAR-10 and CIFAR-100.
TABLE1 = {"vgg19": (5504, 4105.2, 3057.0), "densenet40": (9360, 6936.4, 6071.6),
          "preresnet164": (12112, 8765.4, 7115.8)}

_T2_COLS = ("time", "time_ft", "channels", "params", "flops", "acc_pruned", "acc_ft")
# Table 2a (CIFAR-10): seconds per epoch pre-pruned / fine-tuned (RTX 2080), % channels /
# parameters / FLOPs pruned, test accuracy after pruning / after fine-tuning. None: "—".
TABLE2A = {
    ("vgg19", "baseline"): (38.10, None, None, None, None, 93.83, None),
    ("vgg19", "original"): (40.39, 29.40, 74.00, 90.22, 54.67, 10.00, 93.81),
    ("vgg19", "proximal"): (42.71, 30.39, 74.59, 91.17, 57.54, 93.71, 93.38),
    ("densenet40", "baseline"): (117.45, None, None, None, None, 94.25, None),
    ("densenet40", "original"): (119.49, 74.45, 74.01, 67.13, 60.46, 41.46, 93.94),
    ("densenet40", "VCP (quoted)"): (None, None, 60.00, 59.67, 44.78, 93.16, None),
    ("densenet40", "proximal"): (118.86, 76.10, 74.11, 67.75, 57.35, 93.58, 93.64),
    ("preresnet164", "baseline"): (146.41, None, None, None, None, 94.75, None),
    ("preresnet164", "original"): (151.62, 112.80, 71.98, 52.95, 59.27, 16.61, 93.21),
    ("preresnet164", "VCP (quoted)"): (None, None, 74.00, 56.70, 49.08, 93.16, None),
    ("preresnet164", "proximal"): (150.13, 114.26, 72.37, 65.84, 63.54, 93.19, 93.41),
}
# Table 2b (CIFAR-100), same columns. The baseline's fine-tuned time is "—"; its time column
# has one number only.
TABLE2B = {
    ("vgg19", "baseline"): (37.83, None, None, None, None, 72.73, None),
    ("vgg19", "original"): (39.98, 30.74, 55.00, 78.53, 38.66, 1.00, 72.91),
    ("vgg19", "proximal"): (42.31, 30.04, 55.54, 79.62, 41.17, 72.81, 72.70),
    ("densenet40", "baseline"): (117.17, None, None, None, None, 74.55, None),
    ("densenet40", "original"): (119.32, 77.95, 65.01, 59.29, 52.61, 25.96, 74.50),
    ("densenet40", "VCP (quoted)"): (None, None, 37.00, 37.73, 22.67, 72.19, None),
    ("densenet40", "proximal"): (120.89, 82.92, 64.87, 59.15, 45.00, 73.70, 73.98),
    ("preresnet164", "baseline"): (145.37, None, None, None, None, 76.79, None),
    ("preresnet164", "original"): (150.65, 115.95, 59.00, 26.66, 45.17, 2.39, 76.68),
    ("preresnet164", "VCP (quoted)"): (None, None, 47.00, 17.59, 27.16, 73.76, None),
    ("preresnet164", "proximal"): (149.15, 117.88, 58.75, 42.28, 47.93, 75.26, 75.68),
}
TABLE2 = {"cifar10": TABLE2A, "cifar100": TABLE2B}
# the data set's field in a claim id
DATASET_KEYS = {"cifar10": "c10", "cifar100": "c100"}
# Table 3 (CIFAR-10): % parameters / FLOPs pruned, accuracy post-pruned / fine-tuned.
TABLE3 = {
    ("densenet40", "HRank (quoted)"): (53.80, 61.00, None, 93.68),
    ("densenet40", "GAL-0.05 (quoted)"): (56.70, 54.70, 93.53, 94.50),
    ("densenet40", "proximal"): (67.75, 57.54, 93.58, 93.64),
    ("preresnet110", "L1 (quoted)"): (32.60, 38.70, None, 93.30),
    ("preresnet110", "GAL-0.5 (quoted)"): (44.80, 48.50, 92.55, 92.74),
    ("preresnet110", "HRank (quoted)"): (39.40, 41.20, None, 94.23),
    ("preresnet110", "proximal"): (50.70, 48.54, 93.25, 93.27),
}
METHOD_NAMES = {"baseline": "Baseline", "original": "Original NS", "proximal": "Proximal NS"}


def _pct(x):
    return None if x is None else 100.0 * x


def result_row(rec: Mapping) -> dict:
    """One Table-2-style row of our measurements from a record (accuracies in %)."""
    spec, m = rec["spec"], rec["metrics"]
    method = {v: k for k, v in METHOD_TASKS.items()}[spec["task"]]
    row = {"network": PAPER_NAMES[spec["model"]], "method": METHOD_NAMES[method],
           "width": spec["hparams"]["width"], "s / epoch": m["epoch_time_s"],
           "s / epoch (fine-tune)": m.get("finetune_epoch_time_s")}
    if method == "baseline":
        row.update({"acc trained": _pct(m["test_acc"]), "acc pruned": None})
        return row
    row.update({
        "% channels": m["channels_pruned_pct"], "% params": m["params_pruned_pct"],
        "% FLOPs": m["flops_pruned_pct"], "acc trained": _pct(m["test_acc_trained"]),
        "acc pruned": _pct(m["test_acc_pruned"]),
        "acc pruned (folded)": _pct(m["test_acc_pruned_folded"]),
        "acc fine-tuned": _pct(m.get("test_acc_finetuned")),
    })
    return row


def paper_row(model: str, method: str, dataset: str = "cifar10") -> dict:
    """The paper's Table 2a (``cifar10``) or 2b (``cifar100``) row in the columns of
    :func:`result_row`."""
    if dataset not in TABLE2:
        raise ValueError(f"dataset={dataset!r}: Table 2 has {sorted(TABLE2)}")
    v = dict(zip(_T2_COLS, TABLE2[dataset][(model, method)]))
    return {"network": PAPER_NAMES[model], "method": METHOD_NAMES.get(method, method),
            "width": 1.0, "s / epoch": v["time"], "s / epoch (fine-tune)": v["time_ft"],
            "% channels": v["channels"], "% params": v["params"], "% FLOPs": v["flops"],
            "acc trained": None if method != "baseline" else v["acc_pruned"],
            "acc pruned": None if method == "baseline" else v["acc_pruned"],
            "acc fine-tuned": v["acc_ft"]}


# --------------------------------------------------------------------------- figures


def _label(rec: Mapping) -> str:
    method = {v: k for k, v in METHOD_TASKS.items()}[rec["spec"]["task"]]
    return METHOD_NAMES[method]


def plot_zero_counts(records: Iterable[Mapping]):
    """% of scaling factors exactly 0 after each epoch (xi for proximal NS, gamma otherwise)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for rec in records:
        total = rec["metrics"]["channels"]
        key = "zero_xi" if "zero_xi" in rec["history"][0] else "zero_gamma"
        ep = [h["epoch"] for h in rec["history"]]
        ax.plot(ep, [100.0 * h[key] / total for h in rec["history"]], marker="o",
                label=f"{PAPER_NAMES[rec['spec']['model']]}, {_label(rec)}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("% scaling factors exactly 0")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _model_panels(records: list[Mapping], stacked: bool = False):
    """One panel per network (in order of first appearance), side by side or ``stacked``.

    Returns the figure and a list of ``(ax, model, that model's records)``."""
    import matplotlib.pyplot as plt

    models_ = list(dict.fromkeys(r["spec"]["model"] for r in records))
    n = len(models_)
    if stacked:
        fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False)
        axes = axes[:, 0]
    else:
        fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.4), squeeze=False)
        axes = axes[0]
    return fig, [(ax, model, [r for r in records if r["spec"]["model"] == model])
                 for ax, model in zip(axes, models_)]


def _finish_panel(ax, model: str, xlabel: str, ylabel: str, legend_size: int = 8) -> None:
    ax.set_title(PAPER_NAMES[model])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size)


def plot_scale_histograms(records: Iterable[Mapping]):
    """Histograms of log10 |gamma| (and |xi| for proximal NS), exact zeros as a separate bar."""
    fig, panels = _model_panels(list(records))
    for ax, model, recs in panels:
        for rec in recs:
            arts = rec["artifacts"]
            for key, what in (("hist_gamma", "|gamma|"), ("hist_xi", "|xi|")):
                if key not in arts:
                    continue
                h = arts[key]
                edges = h["edges"]
                ax.stairs(h["counts"], edges, label=f"{_label(rec)} {what}")
                if h["zeros"]:
                    ax.bar(edges[0] - 0.5, h["zeros"], width=0.6, alpha=0.6,
                           label=f"{_label(rec)} {what} = 0 ({h['zeros']})")
        _finish_panel(ax, model, "log10 |scale| (bar on the left: exactly 0)", "channels",
                      legend_size=7)
    fig.tight_layout()
    return fig


def plot_prune_curves(records: Iterable[Mapping]):
    """Accuracy after pruning a fraction of channels (no fine-tuning), per net and method."""
    fig, panels = _model_panels(list(records))
    for ax, model, recs in panels:
        for rec in recs:
            curve = rec["artifacts"].get("curve") or []
            line, = ax.plot([c["channels_pruned_pct"] for c in curve],
                            [100 * c["acc"] for c in curve], marker=".", label=_label(rec))
            m = rec["metrics"]
            if "test_acc_pruned" in m:
                ax.plot([m["channels_pruned_pct"]], [100 * m["test_acc_pruned"]], marker="*",
                        markersize=13, color=line.get_color(), linestyle="none")
        _finish_panel(ax, model, "% channels pruned (smallest |scale| first)",
                      "test accuracy % before fine-tuning")
    fig.tight_layout()
    return fig


def plot_layer_channels(records: Iterable[Mapping]):
    """Kept fraction of each BN layer's channels after pruning (layers in network order)."""
    fig, panels = _model_panels([r for r in records if r["artifacts"].get("layers")],
                                stacked=True)
    for ax, model, recs in panels:
        for rec in recs:
            layers = rec["artifacts"]["layers"]
            ax.plot(range(len(layers)), [la["kept"] / la["channels"] for la in layers],
                    marker=".", linewidth=0.8, label=_label(rec))
        _finish_panel(ax, model, "BN layer (network order)", "kept fraction")
    fig.tight_layout()
    return fig


def layer_group(name: str) -> str:
    """A BN layer's name with its block indices replaced by ``*`` (``stages.layer3.11.bn2`` ->
    ``stages.layer3.*.bn2``): the same position in every block of a stage."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "*", name)


def pruned_by_layer_group(records: Mapping[str, Mapping]) -> list[dict]:
    """Channels pruned per :func:`layer_group`, one column per record (keyed by a label), in
    network order: where each method puts its pruned channels (their cost in parameters
    differs by layer). The records must be of one network. Rows: ``{"layers": group,
    "channels": n, <label>: pruned, ...}``."""
    rows: dict[str, dict] = {}
    names = None
    for label, rec in records.items():
        layers = rec["artifacts"].get("layers")
        if not layers:
            raise ValueError(f"record {rec.get('run_id', label)!r} has no per-layer counts")
        these = [(la["layer"], la["channels"]) for la in layers]
        if names is not None and these != names:
            raise ValueError("the records are not of one network: their BN layers differ")
        names = these
        for la in layers:
            row = rows.setdefault(layer_group(la["layer"]),
                                  {"layers": layer_group(la["layer"]), "channels": 0})
            row[label] = row.get(label, 0) + la["channels"] - la["kept"]
    for name, n in names or []:
        rows[layer_group(name)]["channels"] += n
    return list(rows.values())


def settings_table(model_names: Iterable[str], budget: str):
    """Per network: the cut (width, data, epochs) and the penalties, paper's vs this budget's."""
    import pandas as pd

    rows = []
    for model in model_names:
        cut = budget_cut(model, budget)
        p = paper_settings(model)
        pen = penalty_settings(model, cut["n_train"], cut["epochs"])
        rows.append({
            "network": PAPER_NAMES[model], "width": cut["width"],
            "train images": cut["n_train"], "epochs": cut["epochs"],
            "fine-tune epochs": cut["finetune_epochs"],
            "steps before 1st LR drop": phase1_steps(cut["n_train"], cut["epochs"]),
            "paper lam / beta / s": f"{p['lam']:g} / {p['beta']:g} / {p['s']:g}",
            "drift steps at paper lam, beta": round(drift_steps(p["lam"], p["beta"], 1 / LR0)),
            "ours lam / beta / s": f"{pen['lam']:.4g} / {pen['beta']:g} / {pen['s']:.3g}",
            "kappa": round(pen["kappa"], 2),
            "drift steps ours": round(drift_steps(pen["lam"], pen["beta"], 1 / LR0)),
        })
    return pd.DataFrame(rows)


def cut_texts(model_names: Iterable[str], budget: str) -> dict[str, str]:
    """How ``budget`` departs from the paper, per network, keyed by the network's claim key
    (:data:`CLAIM_KEYS`, the second field of a claim id): for the notes of
    :func:`replib.experiments.claims.gate_cut`."""
    out = {}
    for model in model_names:
        c = budget_cut(model, budget)
        pen = penalty_settings(model, c["n_train"], c["epochs"])
        out[CLAIM_KEYS[model]] = (
            f"{PAPER_NAMES[model]}: width x{c['width']:g}, {c['n_train']} images, "
            f"{c['epochs']}+{c['finetune_epochs']} epochs, lambda x{pen['kappa']:.3g}, "
            f"beta {pen['beta']:g}")
    return out


COLLAPSE_POINTS = 10.0  # "collapses": original NS loses at least this much more than proximal NS


def degenerate(rec: Mapping) -> str:
    """Why a proximal NS run cannot test "pruning leaves the accuracy unchanged" ('' if it can):
    a network trained to less than twice chance accuracy has little accuracy to lose."""
    m = rec["metrics"]
    acc = m.get("test_acc_trained", m.get("test_acc"))
    classes = 100 if rec["spec"]["dataset"] == "cifar100" else 10
    if acc < 2.0 / classes:
        return (f"not testable: proximal NS trained to {100 * acc:.1f}% only (chance "
                f"{100 / classes:.0f}%), so pruning has no accuracy to lose")
    return ""


def collapse_gap(proximal: Mapping, original: Mapping) -> tuple[float, float]:
    """``(gap, se)``: the accuracy original NS loses on pruning minus what proximal NS loses
    (points; ``C-*-ns-collapse`` holds when it is at least :data:`COLLAPSE_POINTS`), and a
    standard error for it that treats its four accuracies as independent binomials on
    ``test_n`` images each (:func:`replib.metrics.diff_se` per drop, added in quadrature), which
    overstates it for accuracies measured on the same images."""
    px, ns = proximal["metrics"], original["metrics"]
    gap = ns["acc_drop_pruning_pts"] - px["acc_drop_pruning_pts"]
    se = math.hypot(diff_se(px["test_acc_trained"], px["test_n"]),
                    diff_se(ns["test_acc_trained"], ns["test_n"]))
    return gap, 100.0 * se


def collapse_words(gap: float, verb: str = "lost") -> str:
    """A collapse gap (:func:`collapse_gap`) in words, original NS's side, by its sign at one
    decimal: ``"lost 0.2 points more than proximal NS"``, ``"... fewer than ..."``, or ``"lost as
    many points as proximal NS"`` where it rounds to 0.0. ``verb``: its form (``"loses"``)."""
    if round(abs(gap), 1) == 0:
        return f"{verb} as many points as proximal NS"
    return f"{verb} {abs(gap):.1f} points {'more' if gap > 0 else 'fewer'} than proximal NS"


def table2_claims(records: Mapping[tuple[str, str], Mapping],
                  ds: str | None = None) -> tuple[dict, dict]:
    """Claim values of ``data/claims/proxns.csv`` (Table 2a or 2b and the Sec. 5.2 statements)
    from the records keyed by (model, method), all of one data set, and notes for the claims
    left unmeasured (the Sec. 5.2 comparisons are not made on a :func:`degenerate` proximal NS
    run). ``ds``, the claim ids' data set field (``c10``, ``c100``), is the records' own by
    default; a ``ds`` that is not theirs is refused."""
    if not records:
        return {}, {}
    sets = {rec["spec"].get("dataset", "cifar10") for rec in records.values()}
    if len(sets) > 1:
        raise ValueError(f"Table 2's records must be of one data set; got {sorted(sets)}")
    own = DATASET_KEYS.get(sets.pop())
    if own is None or (ds is not None and ds != own):
        raise ValueError(f"ds={ds!r} does not name the records' data set ({own!r}); "
                         f"allowed data sets: {sorted(DATASET_KEYS)}")
    ds = own
    out: dict = {}
    notes: dict = {}
    for model in dict.fromkeys(m for m, _ in records):
        key = CLAIM_KEYS[model]
        base = records.get((model, "baseline"))
        ns, px = records.get((model, "original")), records.get((model, "proximal"))
        if base is not None:
            out[f"T2-{key}-{ds}-base-acc"] = 100.0 * base["metrics"]["test_acc"]
        for meth, rec in (("ns", ns), ("px", px)):
            if rec is None:
                continue
            m = rec["metrics"]
            out[f"T2-{key}-{ds}-{meth}-channels"] = m["channels_pruned_pct"]
            out[f"T2-{key}-{ds}-{meth}-params"] = m["params_pruned_pct"]
            out[f"T2-{key}-{ds}-{meth}-flops"] = m["flops_pruned_pct"]
            out[f"T2-{key}-{ds}-{meth}-acc-pruned"] = 100.0 * m["test_acc_pruned"]
            if "test_acc_finetuned" in m:
                out[f"T2-{key}-{ds}-{meth}-acc-finetuned"] = 100.0 * m["test_acc_finetuned"]
                out[f"T2-{key}-{ds}-{meth}-ft-time-ratio"] = (m["finetune_epoch_time_s"]
                                                             / m["epoch_time_s"])
            if base is not None:
                out[f"T2-{key}-{ds}-{meth}-time-ratio"] = (m["epoch_time_s"]
                                                          / base["metrics"]["epoch_time_s"])
        if ns is not None:
            out[f"S1-{key}-{ds}-ns-zero-pct"] = (100.0 * ns["metrics"]["zero_gamma"]
                                                 / ns["metrics"]["channels"])
        if px is None:
            continue
        why = degenerate(px)
        cids = [f"C-{key}-{ds}-px-prune-drop"]
        out[cids[0]] = px["metrics"]["acc_drop_pruning_pts"]
        if ns is not None:
            gap, se = collapse_gap(px, ns)
            out[f"C-{key}-{ds}-ns-collapse"] = bool(gap >= COLLAPSE_POINTS)
            notes[f"C-{key}-{ds}-ns-collapse"] = (
                f"original NS {collapse_words(gap)} (threshold "
                f"{COLLAPSE_POINTS:g}; one standard error at most {se:.1f})")
            out[f"C-{key}-{ds}-params-ge"] = (px["metrics"]["params_pruned_pct"]
                                             - ns["metrics"]["params_pruned_pct"])
            cids += [f"C-{key}-{ds}-ns-collapse", f"C-{key}-{ds}-params-ge"]
        if why:
            for cid in cids:
                notes[cid] = f"{why}; measured: {out[cid]}"
                out[cid] = None
    return out, notes


# Claims a cut budget can test: properties of the algorithms, not the paper's magnitudes.
JUDGED_AT_CUT_PREFIXES = ("C-", "S1-")


def run_length(rec: Mapping) -> str:
    """How long a record trained: ``"24 epochs, 10,000 images"`` (its :func:`train_images`,
    the count :func:`train_steps` uses)."""
    epochs, _ = _epochs_and_hparams(rec)
    return f"{epochs} epochs, {train_images(rec):,} images"


PAUSE_FACTOR = 3.0  # an epoch this many times the run's median epoch time held a pause


def slow_epochs(rec: Mapping, factor: float = PAUSE_FACTOR
                ) -> tuple[list[tuple[int, float]], float]:
    """The epochs of a record's history that took more than ``factor`` times its median epoch
    time, as ``(epoch, seconds)``, and that median: on a shared machine such an epoch most
    likely waited for another job, and it makes the record's mean ``epoch_time_s`` longer
    than the run's typical epoch."""
    times = [(h["epoch"], h["epoch_time_s"]) for h in rec.get("history", [])
             if h.get("epoch_time_s") is not None]
    if not times:
        return [], float("nan")
    med = statistics.median(t for _, t in times)
    return [(e, t) for e, t in times if t > factor * med], med


def table3_rows(records: Mapping[str, Mapping], budget: str,
                longer: Mapping[str, Mapping] | None = None) -> list[dict]:
    """Table 3: our proximal NS rows (from records keyed by model) and the paper's rows;
    ``longer`` (proximal NS records keyed by model, the longer runs of :data:`LONG`) adds a row
    under ours, labelled with its :func:`run_length`."""
    rows = []
    for (model, method), (par, fl, post, ft) in TABLE3.items():
        if method == "proximal":
            ours = [(budget, records.get(model)),
                    (f"{budget}, {run_length(longer[model])}" if longer and model in longer
                     else "", (longer or {}).get(model))]
            for label, rec in ours:
                if rec is None:
                    continue
                m = rec["metrics"]
                rows.append({"network": PAPER_NAMES[model],
                             "method": f"Proximal NS (ours, {label})",
                             "% params": m["params_pruned_pct"], "% FLOPs": m["flops_pruned_pct"],
                             "acc pruned": 100 * m["test_acc_pruned"],
                             "acc fine-tuned": _pct(m.get("test_acc_finetuned"))})
        name = "Proximal NS (paper)" if method == "proximal" else method
        rows.append({"network": PAPER_NAMES[model], "method": name, "% params": par,
                     "% FLOPs": fl, "acc pruned": post, "acc fine-tuned": ft})
    return rows


def table3_claims(records: Mapping[str, Mapping]) -> tuple[dict, dict]:
    """Claim values of Table 3 (and the Sec. 5.2 comparisons with the quoted methods), and
    notes for those left unmeasured."""
    out: dict = {}
    notes: dict = {}
    for model, key in (("densenet40", "densenet40"), ("preresnet110", "resnet110")):
        if model not in records:
            continue
        m = records[model]["metrics"]
        out[f"T3-{key}-params"] = m["params_pruned_pct"]
        out[f"T3-{key}-flops"] = m["flops_pruned_pct"]
        out[f"T3-{key}-acc-pruned"] = 100 * m["test_acc_pruned"]
        if "test_acc_finetuned" in m:
            out[f"T3-{key}-acc-finetuned"] = 100 * m["test_acc_finetuned"]
    if "densenet40" in records:
        out["T3-densenet40-params-most"] = records["densenet40"]["metrics"]["params_pruned_pct"]
    if "preresnet110" in records:
        m = records["preresnet110"]["metrics"]
        out["T3-resnet110-params-best"] = m["params_pruned_pct"]
        out["T3-resnet110-flops-best"] = m["flops_pruned_pct"]
        out["C-resnet110-c10-px-prune-drop"] = m["acc_drop_pruning_pts"]
        why = degenerate(records["preresnet110"])
        if why:
            notes["C-resnet110-c10-px-prune-drop"] = f"{why}; measured: {m['acc_drop_pruning_pts']}"
            out["C-resnet110-c10-px-prune-drop"] = None
    return out, notes


def exploratory_vgg_spec():
    """The run made while choosing the ``cpu`` cut: VGG-19 x0.25, 10,000 images, 8 epochs,
    lam = 0.0945 (kappa = 21), beta = 100, no fine-tuning. Kept as an ablation: 2 more epochs
    after the zeros have formed than the ``cpu`` setting."""
    from . import experiments as ex

    return ex.make_spec("proxns", "proxns_proximal_ns", dataset="cifar10", model="vgg19",
                        epochs=8, budget="cpu", width=0.25, train_subset=10_000, lam=0.0945,
                        beta=100.0, finetune_epochs=0)


def fill_missing(notebook: str, values: Mapping, notes: Mapping, reason: str,
                 loaded: Iterable[str] = ()) -> tuple[dict, dict]:
    """Give every claim of ``notebook`` in the ledger that has no value (and no ledger reason,
    like CIFAR-100's) an explicit None with ``reason``, so its status says why it is not run.
    ``loaded``: data sets (``cifar100``) whose runs were made here, so that the ledger's "not
    available offline" is not true of their claims: those are filled too."""
    from .experiments import claims

    loaded = list(loaded)
    unknown = sorted(set(loaded) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"loaded={unknown}: allowed data sets are {sorted(DATASET_KEYS)}")
    keys = tuple(f"-{DATASET_KEYS[d]}-" for d in loaded)
    values, notes = dict(values), dict(notes)
    for c in claims.load_claims("proxns"):
        cid = c["claim_id"]
        applies = not c["not_run_reason"] or any(k in cid for k in keys)
        if c["notebook"] == notebook and applies and cid not in values:
            values[cid] = None
            notes.setdefault(cid, reason)
    return values, notes


def long_seeds(model: str, budget: str) -> tuple[int, ...]:
    """The seeds of ``model``'s longer runs at ``budget`` (:data:`LONG_SEEDS`; else seed 0)."""
    return LONG_SEEDS.get(budget, {}).get(model, (0,))


def long_pairs(model: str, budget: str, rerun: bool = False) -> list[dict]:
    """:func:`long_records` pairs, one per seed of :func:`long_seeds` (seed 0 first); empty
    when the budget has no longer run for ``model``."""
    pairs = [long_records(model, budget, rerun, seed=s) for s in long_seeds(model, budget)]
    return [p for p in pairs if p is not None]


def long_records(model: str, budget: str, rerun: bool = False,
                 pair: bool = True, seed: int = 0) -> dict | None:
    """Run (or look up) ``model``'s longer runs of :data:`LONG`: ``{"proximal": record,
    "original": record}``, original NS pruned to the proximal run's matched fraction, or
    ``{"proximal": record}`` alone when ``pair`` is False; None when the budget has no longer
    run for ``model``."""
    from . import experiments as ex
    from .experiments.budgets import check_budget

    check_budget(budget)
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not known; allowed values: {list(MODELS)}")
    over = LONG[budget].get(model)
    if over is None:
        return None
    px = ex.run(run_spec(model, "proximal", budget, seed=seed, **over), rerun=rerun)
    if not pair:
        return {"proximal": px}
    ns = ex.run(run_spec(model, "original", budget, percent=matched_percent(px["metrics"]),
                         seed=seed, **over), rerun=rerun)
    return {"proximal": px, "original": ns}


def _check_long(long: Mapping[str, Mapping]) -> str:
    """The network of one longer pair (or proximal NS run alone); ValueError if malformed."""
    if "proximal" not in long or not set(long) <= {"proximal", "original"}:
        raise ValueError(f"longer runs are a proximal NS run and optionally its original NS "
                         f"pair; got {sorted(long)}")
    model = long["proximal"]["spec"]["model"]
    if "original" in long and long["original"]["spec"]["model"] != model:
        raise ValueError("a longer pair must be of one network: "
                         f"{model} and {long['original']['spec']['model']}")
    return model


def mean_collapse_gap(pairs: Sequence[Mapping[str, Mapping]]
                      ) -> tuple[float, float, list[tuple[float, float]]]:
    """``(gap, se, per_seed)`` of several seeds' longer pairs (``{"proximal": rec, "original":
    rec}``): the mean of their :func:`collapse_gap` and its standard error (the seeds' own
    standard errors in quadrature, divided by their number), what :func:`judge_on_long` judges
    ``C-*-ns-collapse`` on, and each pair's own ``(gap, se)``, in the order of ``pairs``."""
    if not pairs:
        raise ValueError("mean_collapse_gap needs at least one pair")
    gaps = [collapse_gap(p["proximal"], p["original"]) for p in pairs]
    return (sum(g for g, _ in gaps) / len(gaps),
            math.sqrt(sum(e * e for _, e in gaps)) / len(gaps), gaps)


def _seed_mean(model: str, longs: list[Mapping[str, Mapping]], seeds: list[int],
               ds: str) -> tuple[dict, dict]:
    """The Sec. 5.2 statements of several seeds' longer pairs: each number the mean over the
    seeds, the collapse statement judged on the mean gap (its standard error: the seeds' own
    standard errors in quadrature, divided by their number), each seed's value in the note.
    A statement left unmeasured in any seed (a network that learned nothing) is unmeasured."""
    key = CLAIM_KEYS[model]
    per = [table2_claims({(model, m): r for m, r in lg.items()}, ds=ds) for lg in longs]
    out: dict = {}
    why: dict = {}
    for cid in per[0][0]:
        if not cid.startswith(f"C-{key}-{ds}-"):
            continue
        got = [v.get(cid) for v, _ in per]
        if any(g is None for g in got):
            out[cid] = None
            why[cid] = "; ".join(f"seed {s}: {w.get(cid, v.get(cid))}"
                                 for s, (v, w) in zip(seeds, per))
            continue
        if cid.endswith("-ns-collapse"):
            gap, se, gaps = mean_collapse_gap(longs)
            out[cid] = bool(gap >= COLLAPSE_POINTS)
            why[cid] = (f"original NS {collapse_words(gap)} on average "
                        f"(threshold {COLLAPSE_POINTS:g}; one standard error of the mean at most "
                        f"{se:.1f}; per seed: "
                        + ", ".join(f"seed {s} {g:.1f}" for s, (g, _) in zip(seeds, gaps)) + ")")
        else:
            out[cid] = sum(got) / len(got)
            why[cid] = "mean over seeds; per seed: " + ", ".join(
                f"seed {s} {g:.2f}" for s, g in zip(seeds, got))
    return out, why


def judge_on_long(values: Mapping, notes: Mapping,
                  long: Mapping[str, Mapping] | Sequence[Mapping[str, Mapping]] | None,
                  ds: str = "c10") -> tuple[dict, dict]:
    """Replace a network's Sec. 5.2 statements (``C-<net>-*``) in ``values`` by those of its
    longer runs of :func:`long_records` (a pair, or a proximal NS run alone, which judges only
    the accuracy lost on pruning; or a list of such, one per seed, of one network, judged on
    their mean: :func:`long_pairs`), noting the budget's own (shorter) value beside; unchanged
    when ``long`` is None or empty. Magnitudes (``T2-*``, ``T3-*``) stay the budget's own."""
    values, notes = dict(values), dict(notes)
    longs = [long] if isinstance(long, Mapping) else list(long or [])
    if not longs:
        return values, notes
    models = {_check_long(lg) for lg in longs}
    if len(models) > 1:
        raise ValueError(f"the seeds of a longer pair must be of one network; got {sorted(models)}")
    kinds = {frozenset(lg) for lg in longs}
    seeds = [lg["proximal"]["spec"].get("seed", 0) for lg in longs]
    if len(kinds) > 1 or len(set(seeds)) < len(seeds):
        raise ValueError(f"several longer pairs must be alike and of distinct seeds; got seeds "
                         f"{seeds}")
    model = models.pop()
    if len(longs) == 1:
        runs = {(model, meth): rec for meth, rec in longs[0].items()}
        lv, lwhy = table2_claims(runs, ds=ds)
    else:
        lv, lwhy = _seed_mean(model, longs, seeds, ds)
    pair = (f"longer {PAPER_NAMES[model]} {'pair' if 'original' in longs[0] else 'run'}, "
            f"{run_length(longs[0]['proximal'])}"
            + (f", seeds {', '.join(map(str, seeds))}" if len(longs) > 1 else ""))
    for cid, v in lv.items():
        if not cid.startswith(f"C-{CLAIM_KEYS[model]}-{ds}-"):
            continue
        short = values.get(cid)
        short = "not testable" if short is None else (
            f"{short:.2f}" if isinstance(short, float) else str(short))
        values[cid] = v
        notes[cid] = (f"judged on the {pair}; the shorter cut's value: {short}"
                      + (f"; {lwhy[cid]}" if cid in lwhy else ""))
    return values, notes
