"""Metrics with one stated convention each.

* accuracy: top-1 / top-5 on a whole split, model in eval mode;
* sparsity: fraction of exactly-zero entries among the *prunable* weights (conv and linear
  ``weight`` tensors; biases and BN parameters are counted separately, as the papers do);
* compression rate: prunable weights / nonzero prunable weights (the l0 paper's "x");
* neuron compression rate (ACNN): original / kept neurons over input and hidden layers;
* FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` for one input at batch size
  1, i.e. **2 x multiply-accumulates of conv and matmul only** (BN, ReLU, pooling not
  counted). ``sparse_flops`` scales each layer's count by the density of its weight.
* latency: median wall time of repeated forward passes (ms), after warm-up;
* the standard error of a difference of two accuracies: binomial, ``diff_se``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .data import Split, batches


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    amp: bool = False,
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy of ``model`` on a whole split."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    split = split.to(device)
    loss = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    for x, y in batches(split, batch_size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x).float()
        loss += nn.functional.cross_entropy(out, y, reduction="sum")
        k = min(5, out.shape[1])
        pred = out.topk(k, dim=1).indices
        top1 += (pred[:, 0] == y).sum()
        top5 += (pred == y.unsqueeze(1)).any(1).sum()
    model.train(was_training)
    n = len(split)
    return {"loss": float(loss) / n, "acc": float(top1) / n, "top5": float(top5) / n}


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv and linear weight tensors by name (the effective weight when parametrized)."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            out[f"{name}.weight" if name else "weight"] = mod.weight
    return out


def count_params(model: nn.Module) -> int:
    """All parameters (a parametrized weight counts once, by its original tensor)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def nonzero(tensors: Iterable[torch.Tensor]) -> int:
    return int(sum(int((t != 0).sum()) for t in tensors))


def sparsity(model: nn.Module) -> float:
    """Fraction of prunable weights that are exactly zero."""
    ws = list(prunable_weights(model).values())
    total = sum(w.numel() for w in ws)
    return 1.0 - nonzero(ws) / total


def compression_rate(model: nn.Module) -> float:
    """Prunable weights / nonzero prunable weights (inf when all are zero)."""
    ws = list(prunable_weights(model).values())
    nz = nonzero(ws)
    return float("inf") if nz == 0 else sum(w.numel() for w in ws) / nz


def neuron_compression_rate(original: Iterable[int], kept: Iterable[int]) -> float:
    """ACNN's NCR: sum of original neurons / sum of kept neurons (input + hidden layers).

    The ACNN paper's MNIST row 219-81-43 gives (784 + 300 + 100) / (219 + 81 + 43) = 3.45.
    """
    o, k = sum(original), sum(kept)
    if k <= 0:
        raise ValueError("kept neurons must be positive")
    return o / k


def _flop_counter(model: nn.Module, input_shape: tuple[int, ...]):
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.zeros((1, *input_shape), device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter


def layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs (2 x MACs of conv and matmul) per conv/linear module for one input."""
    per_module = _flop_counter(model, input_shape).get_flop_counts()
    names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    out = {}
    for key, ops in per_module.items():
        # FlopCounterMode keys modules by their qualified name under the root's class name
        short = key.split(".", 1)[1] if "." in key else ""
        if short in names:
            out[short] = int(sum(ops.values()))
    return out


def flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Total FLOPs of one forward pass (2 x MACs of conv and matmul, batch 1)."""
    return int(_flop_counter(model, input_shape).get_total_flops())


def sparse_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs when zero weights are skipped: each layer's count times its weight density."""
    per_layer = layer_flops(model, input_shape)
    mods = dict(model.named_modules())
    total = 0
    for name, f in per_layer.items():
        w = mods[name].weight
        total += int(round(f * float((w != 0).sum()) / w.numel()))
    return total


@torch.no_grad()
def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 50,
    warmup: int = 5,
) -> float:
    """Median wall time of one forward pass in milliseconds."""
    device = next(model.parameters()).device
    x = torch.randn((batch_size, *input_shape), device=device)
    model.eval()
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def diff_se(acc: float, n: int) -> float:
    """Standard error of the difference of two independent accuracies near ``acc`` on ``n``
    test images each: ``sqrt(2 acc (1 - acc) / n)``."""
    if n < 1 or not 0.0 <= acc <= 1.0:
        raise ValueError(f"diff_se needs 0 <= acc <= 1 and n >= 1, got acc={acc}, n={n}")
    return math.sqrt(2 * acc * (1 - acc) / n)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (Pearson's of their tie-averaged ranks,
    as pandas ranks them); NaN when either is constant."""
    import pandas as pd

    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of one length >= 2, got {len(x)} and {len(y)}")
    return float(pd.Series(list(x), dtype=float).rank().corr(
        pd.Series(list(y), dtype=float).rank()))
