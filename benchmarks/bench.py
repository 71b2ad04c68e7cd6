"""``make bench``: replib's training paths against baselines, measured side by side as ratios.

Four sections in one run; every item is repeated, the repeats are **interleaved** (repeat r of
every item runs before repeat r+1 of any) and the median over repeats is reported:

1. **loops**: steady-state time per training step (batch 128, SGD momentum 0.9, wd 1e-4) of

   * ``replib``: :func:`replib.train.fit` over whole-split uint8 tensors (per-batch
     normalization and, on CIFAR-10, pad-4 crop + flip on tensors: ``replib_aug``);
   * ``bare``: the same model (same initialization) on the same tensors, pre-normalized and
     pre-shuffled, a plain ``for`` loop over index slices (no augmentation);
   * ``dataloader_w0/w2``: ``torchvision`` dataset + per-sample transforms (``ToTensor``,
     ``Normalize``; on CIFAR-10 ``RandomCrop(32, 4)`` + ``RandomHorizontalFlip`` first) through
     ``torch.utils.data.DataLoader`` with 0 or 2 workers (2 workers on the CPU for
     LeNet-300-100 only: on 2 shared cores the conv nets gain nothing from them);

   for LeNet-300-100 and LeNet-5-Caffe on MNIST and ResNet-20 on CIFAR-10 (channels_last for
   the conv nets in every variant), plus ``replib_contiguous`` (the channels_last speed-up) and
   MLP 3072-1024-1024 on CIFAR-10 (CPU calibration). Each timed run takes ``warmup`` steps
   first and times the next ``steps`` (for ``fit`` through its ``after_step`` hook), so
   first-call allocations and worker start-up are left out for every variant alike.
2. **data**: the input pipeline alone (no model), replib's ``batches`` against the
   DataLoader pipeline, on MNIST and on CIFAR-10 with augmentation.
3. **optim**: one ``step()`` of each sparse optimizer of :mod:`replib.sparsity.optim` on fixed
   gradients against plain SGD with the same momentum and weight decay (steps timed one by
   one, median step), on the three networks; the whole training step (forward + backward +
   step) measured on LeNet-300-100 and derived as ``(fwd_bwd + step) / (fwd_bwd + SGD step)``.
4. **gpu_epochs** (CUDA only): one full CIFAR-10 epoch of ResNet-20, VGG-19 (batch 64, as in
   the ProxNS paper), ResNet-18 and pre-activation ResNet-164 (batch 64) through ``fit``:
   bf16 autocast, channels_last, the whole split and its augmentation on the GPU.

Clocks: on the CPU the headline number is the CPU time of this process (one torch thread by
default), because on a shared machine the wall clock of a one-thread process mostly measures
the scheduler; DataLoader runs with worker processes are timed and compared on the wall clock;
both clocks are recorded for every repeat. On CUDA: wall clock, synchronized.

The record (machine, torch version, threads, load average, both clocks of every repeat of
every item, medians, ratios) goes to ``benchmarks/results/<date>-<device>.json``;
``benchmarks/report.py`` renders it for the book's Compute page.

Usage: ``python benchmarks/bench.py [--device cpu|cuda] [--compile] [--threads N]
[--repeats R] [--quick] [--sections loops,data,optim,gpu_epochs] [--out DIR] [--no-save]``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from replib import data, models
from replib.sparsity import optim as sopt
from replib.train import fit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH = 128

# (model, dataset, steps, warmup) of the loop section; ``quick`` divides the step counts.
LOOP_WORKLOADS = {
    "lenet300": ("mnist", 100, 3),
    "lenet5_caffe": ("mnist", 6, 1),
    "resnet20": ("cifar10", 2, 1),
}
CALIBRATION = {"mlp3072": ("cifar10", 4, 1)}
SECTIONS = ("loops", "data", "optim", "gpu_epochs")
GPU_EPOCHS = (("resnet20", 128), ("vgg19", 64), ("resnet18", 128), ("preresnet164", 64))


# ---------------------------------------------------------------- helpers


def _median_of(times: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(t[k] for t in times) for k in ("wall", "cpu")}


def now() -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process): every timer reads both.

    On a shared machine the wall clock of a one-thread process includes the time the
    scheduler gives to other processes (a step of 2 ms is regularly stretched to 20 ms);
    the process CPU time does not. CPU-device ratios therefore use CPU time, except where
    work runs in other processes (``DataLoader`` workers), which only the wall clock sees.
    """
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float], n: int = 1) -> dict[str, float]:
    w, c = now()
    return {"wall": (w - t0[0]) / n, "cpu": (c - t0[1]) / n}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def build_model(name: str, device: torch.device, channels_last: bool = False,
                seed: int = 0) -> nn.Module:
    """The registry's model with a fixed initialization (every variant starts identical)."""
    torch.manual_seed(seed)
    model = models.get(name).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def sgd(params) -> torch.optim.SGD:
    """Plain SGD as the experiments use it (``tasks.common.TRAIN_DEFAULTS``)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def maybe_compile(model: nn.Module, compile_: bool) -> nn.Module:
    return torch.compile(model) if compile_ else model


def train_subset(split: data.Split, n: int) -> data.Split:
    """The first ``n`` images of a fixed shuffle (``n`` = warmup + timed steps, whole batches)."""
    g = torch.Generator().manual_seed(1234)
    idx = torch.randperm(len(split), generator=g)[:n]
    return split.subset(idx.to(split.labels.device), "bench subset")


class Timestamps:
    """``after_step`` hook of ``fit``: wall-clock times after step ``first - 1`` and ``last``."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.marks = (warmup - 1, warmup + steps - 1)
        self.device = device
        self.t: dict[int, tuple[float, float]] = {}

    def __call__(self, model: nn.Module, step: int) -> None:
        if step in self.marks:
            _sync(self.device)
            self.t[step] = now()

    def per_step(self, steps: int) -> dict[str, float]:
        (w0, c0), (w1, c1) = self.t[self.marks[0]], self.t[self.marks[1]]
        return {"wall": (w1 - w0) / steps, "cpu": (c1 - c0) / steps}


# ---------------------------------------------------------------- section 1: loops


def time_replib(name: str, split: data.Split, *, steps: int, warmup: int,
                device: torch.device, channels_last: bool, augment: bool = False,
                compile_: bool = False) -> float:
    """Seconds per step of :func:`replib.train.fit` (one epoch of ``warmup + steps`` batches)."""
    sub = train_subset(split, (warmup + steps) * BATCH)
    model = maybe_compile(build_model(name, device), compile_)
    hook = Timestamps(warmup, steps, device)
    fit(model, sub, epochs=1, optimizer=sgd(model.parameters()), batch_size=BATCH,
        after_step=hook, pad=4 if augment else 0, flip=augment, device=device,
        channels_last=channels_last, progress=False, desc="bench")
    return hook.per_step(steps)


def bare_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              amp: bool) -> None:
    """One plain training step of the baselines: cross-entropy (bf16 autocast if ``amp``),
    ``zero_grad``, backward, optimizer step."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_bare(name: str, split: data.Split, *, steps: int, warmup: int,
              device: torch.device, channels_last: bool, compile_: bool = False) -> float:
    """Seconds per step of a hand-written loop over pre-normalized, pre-shuffled tensors."""
    sub = train_subset(split, (warmup + steps) * BATCH).to(device)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(sub), generator=g).to(device)
    x_all = sub.normalize(sub.images[perm])
    y_all = sub.labels[perm]
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    model = maybe_compile(build_model(name, device, channels_last), compile_)
    model.train()
    opt = sgd(model.parameters())
    amp = device.type == "cuda"
    t0 = now()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = now()
        x = x_all[i * BATCH:(i + 1) * BATCH]
        y = y_all[i * BATCH:(i + 1) * BATCH]
        bare_step(model, opt, x, y, amp)
    _sync(device)
    return since(t0, steps)


class CifarLike(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10.__getitem__`` does, fed from replib's arrays.

    torchvision's class checks the official files' MD5 sums and refuses the rebuilt offline
    copy of CIFAR-10; the per-sample work is the same: an HWC uint8 array becomes a PIL
    image, then the transform runs on it.
    """

    def __init__(self, split: data.Split, transform: Callable) -> None:
        self.data = split.images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        self.targets = split.labels.cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def torchvision_dataset(dataset: str, split: data.Split, augment: bool):
    """(torchvision dataset with per-sample transforms, its class name)."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    info = data.DATASETS[dataset]
    steps = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if augment:
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + steps
    transform = T.Compose(steps)
    if dataset in ("mnist", "fashionmnist"):
        cls = tvd.MNIST if dataset == "mnist" else tvd.FashionMNIST
        try:
            return cls(str(data.data_root()), train=True, transform=transform), cls.__name__
        except RuntimeError:
            pass
    return CifarLike(split, transform), "CifarLike"


def dataloader(dataset: str, split: data.Split, n_batches: int, *, device: torch.device,
               workers: int, augment: bool,
               tv_cache: dict | None = None) -> torch.utils.data.DataLoader:
    """A shuffling ``DataLoader`` over a fixed random subset of ``n_batches`` batches of the
    torchvision dataset (built once per ``(dataset, augment)`` when ``tv_cache`` is given)."""
    key = (dataset, augment)
    if tv_cache is not None and key in tv_cache:
        ds = tv_cache[key]
    else:
        ds = torchvision_dataset(dataset, split, augment)[0]
        if tv_cache is not None:
            tv_cache[key] = ds
    g = torch.Generator().manual_seed(1234)
    idx = torch.randperm(len(ds), generator=g)[:n_batches * BATCH].tolist()
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, idx), batch_size=BATCH, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda")


def time_dataloader(name: str, dataset: str, split: data.Split, *, steps: int, warmup: int,
                    device: torch.device, channels_last: bool, workers: int,
                    augment: bool = False, tv_cache: dict | None = None) -> float:
    """Seconds per step with a torchvision dataset + transforms through a ``DataLoader``."""
    loader = dataloader(dataset, split, warmup + steps, device=device, workers=workers,
                        augment=augment, tv_cache=tv_cache)
    model = build_model(name, device, channels_last)
    model.train()
    opt = sgd(model.parameters())
    amp = device.type == "cuda"
    t0 = now()
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            _sync(device)
            t0 = now()
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bare_step(model, opt, x, y, amp)
    _sync(device)
    return since(t0, steps)


def loop_items(quick: bool, device: torch.device, compile_: bool) -> list[dict]:
    """The items of section 1: one dict per (model, variant) with a zero-argument timer."""
    items: list[dict] = []
    splits: dict[str, data.Split] = {}
    tv_cache: dict = {}

    def split_of(ds: str) -> data.Split:
        if ds not in splits:
            splits[ds] = data.load(ds, "train")
        return splits[ds]

    workloads = dict(LOOP_WORKLOADS, **CALIBRATION)
    for name, (ds, steps, warmup) in workloads.items():
        if quick:
            steps = max(1, steps // 10)
        split = split_of(ds)
        cl = name != "mlp3072" and _is_conv(models.get(name))
        aug = ds.startswith("cifar")
        kw = dict(steps=steps, warmup=warmup, device=device)

        base = {"model": name, "dataset": ds, "steps": steps, "warmup": warmup}

        def add(variant: str, fn: Callable[[], float], base=base, **meta) -> None:
            items.append({**base, "variant": variant, "timer": fn, **meta})

        add("replib", functools.partial(time_replib, name, split, channels_last=cl,
                                        compile_=compile_, **kw),
            channels_last=cl, augment=False)
        if name in CALIBRATION:
            continue
        add("bare", functools.partial(time_bare, name, split, channels_last=cl,
                                      compile_=compile_, **kw),
            channels_last=cl, augment=False)
        if aug:
            add("replib_aug", functools.partial(time_replib, name, split, channels_last=cl,
                                                augment=True, compile_=compile_, **kw),
                channels_last=cl, augment=True)
        for workers in (0, 2):
            if workers and device.type == "cpu" and name != "lenet300":
                continue  # 2 workers on 2 shared cores: measured where the loader matters
            add(f"dataloader_w{workers}",
                functools.partial(time_dataloader, name, ds, split, channels_last=cl,
                                  workers=workers, augment=aug, tv_cache=tv_cache, **kw),
                channels_last=cl, augment=aug, workers=workers,
                **({"clock": "wall"} if workers else {}))
        if cl:
            add("replib_contiguous", functools.partial(time_replib, name, split,
                                                       channels_last=False, compile_=compile_,
                                                       **kw),
                channels_last=False, augment=False)
    return items


def time_data_replib(split: data.Split, *, batches: int, warmup: int, device: torch.device,
                     augment: bool) -> float:
    """Seconds per batch of :func:`replib.data.batches` alone (gather, augment, normalize)."""
    sub = train_subset(split, (warmup + batches) * BATCH).to(device)
    t0 = now()
    it = data.batches(sub, BATCH, shuffle=True, seed=0, pad=4 if augment else 0, flip=augment)
    for i, _batch in enumerate(it):
        if i == warmup:
            _sync(device)
            t0 = now()
    _sync(device)
    return since(t0, batches)


def time_data_loader(dataset: str, split: data.Split, *, batches: int, warmup: int,
                     device: torch.device, augment: bool, workers: int,
                     tv_cache: dict | None = None) -> float:
    """Seconds per batch of the torchvision dataset + transforms + ``DataLoader`` alone."""
    loader = dataloader(dataset, split, warmup + batches, device=device, workers=workers,
                        augment=augment, tv_cache=tv_cache)
    t0 = now()
    for i, (x, _) in enumerate(loader):
        if i == warmup:
            _sync(device)
            t0 = now()
        x = x.to(device, non_blocking=True)
    _sync(device)
    return since(t0, batches)


DATA_WORKLOADS = {"mnist": (40, 2, False), "cifar10": (20, 2, True)}


def data_items(quick: bool, device: torch.device) -> list[dict]:
    """Section 1b: the input pipeline alone, batches per second without any model."""
    items: list[dict] = []
    tv_cache: dict = {}
    for ds, (n, warmup, aug) in DATA_WORKLOADS.items():
        if quick:
            n = 2
        split = data.load(ds, "train")
        base = {"dataset": ds, "batches": n, "warmup": warmup, "augment": aug}
        items.append({**base, "variant": "replib", "timer": functools.partial(
            time_data_replib, split, batches=n, warmup=warmup, device=device, augment=aug)})
        for w in (0, 2):
            items.append({**base, "variant": f"dataloader_w{w}", "workers": w,
                          **({"clock": "wall"} if w else {}),
                          "timer": functools.partial(
                              time_data_loader, ds, split, batches=n, warmup=warmup,
                              device=device, augment=aug, workers=w, tv_cache=tv_cache)})
    return items


def data_ratios(items: list[dict]) -> list[dict]:
    rows = []
    for ds in dict.fromkeys(it["dataset"] for it in items):
        rep = _median(items, dataset=ds, variant="replib")
        w0 = _median(items, dataset=ds, variant="dataloader_w0")
        w2 = _median(items, "median_wall_s", dataset=ds, variant="dataloader_w2")
        rep_wall = _median(items, "median_wall_s", dataset=ds, variant="replib")
        rows.append({"dataset": ds, "replib_batch_s": rep,
                     "dataloader_w0_over_replib": w0 / rep,
                     "dataloader_w2_over_replib_wall": w2 / rep_wall})
    return rows


# ---------------------------------------------------------------- section 2: optimizers


def bn_scales(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


class SlimmingStep:
    """SGD followed by :class:`ProximalSlimming` on the BN scales (ProxNS Algorithm 1)."""

    def __init__(self, model: nn.Module) -> None:
        self.base = sgd(model.parameters())
        self.slim = sopt.ProximalSlimming(bn_scales(model), lam=1e-4, beta=100.0,
                                          base_optimizer=self.base,
                                          generator=torch.Generator(
                                              device=next(model.parameters()).device
                                          ).manual_seed(0))

    def step(self) -> None:
        self.base.step()
        self.slim.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)


def _irda_step2(model: nn.Module):
    opt = sopt.IRDA(sopt.l1_param_groups(model, lam=1e-4), lam=1e-4, gamma=1.0)
    opt.start_retraining()
    return opt


# name -> (builder(model) -> optimizer-like with .step(), needs BatchNorm)
OPTIMIZERS: dict[str, tuple[Callable[[nn.Module], object], bool]] = {
    "sgd": (lambda m: sgd(m.parameters()), False),
    "prox_sgd": (lambda m: sopt.ProxSGD(sopt.l1_param_groups(m, lam=1e-4), lr=0.1, lam=1e-4,
                                        momentum=0.9, weight_decay=1e-4), False),
    "sqrt_prox_sgd": (lambda m: sopt.SqrtProxSGD(sopt.l1_param_groups(m, lam=1e-6), lr=0.1,
                                                 lam=1e-6, gamma=1.0, momentum=0.9,
                                                 weight_decay=1e-4), False),
    "rda": (lambda m: sopt.RDA(sopt.l1_param_groups(m, lam=1e-4), lam=1e-4, gamma=1.0), False),
    "rda_init_anchor": (lambda m: sopt.RDA(sopt.l1_param_groups(m, lam=1e-4), lam=1e-4,
                                           gamma=1.0, anchor="init"), False),
    "irda_step2": (_irda_step2, False),
    "masked_sgd": (lambda m: sopt.MaskedSGD(m.parameters(), lr=0.1, momentum=0.9,
                                            weight_decay=1e-4), False),
    "adam": (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), False),
    "prox_adam": (lambda m: sopt.ProxAdam(sopt.l1_param_groups(m, lam=1e-4), lr=1e-3,
                                          lam=1e-4), False),
    "sgd+proximal_slimming": (SlimmingStep, True),
}
OPT_MODELS = ("lenet300", "lenet5_caffe", "resnet20")


def set_fixed_grads(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(p.device)


def time_opt_step(model_name: str, opt_name: str, *, inner: int, device: torch.device,
                  warmup: int = 3) -> float:
    """Seconds per ``step()`` of optimizer ``opt_name`` on fixed gradients.

    Each of the ``inner`` steps is timed on its own and the median is returned: one step
    takes microseconds to milliseconds, so a single preemption by another process on the
    shared machine would otherwise dominate the mean.
    """
    model = build_model(model_name, device)
    set_fixed_grads(model)
    opt = OPTIMIZERS[opt_name][0](model)
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(inner):
        _sync(device)
        t0 = now()
        opt.step()
        _sync(device)
        times.append(since(t0))
    return _median_of(times)


def _fake_batch(model_name: str, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((BATCH, *models.input_shape(model_name)), generator=g).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)
    return x, y


def time_fwd_bwd(model_name: str, *, inner: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per forward + backward (no optimizer step) on a fixed batch."""
    cl = _is_conv(models.get(model_name))
    model = build_model(model_name, device, cl)
    x, y = _fake_batch(model_name, device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    t0 = now()
    for i in range(warmup + inner):
        if i == warmup:
            _sync(device)
            t0 = now()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    _sync(device)
    return since(t0, inner)


def time_full_step(model_name: str, opt_name: str, *, inner: int, device: torch.device,
                   warmup: int = 2) -> float:
    """Seconds per forward + backward + optimizer step with optimizer ``opt_name``.

    The median over ``inner`` individually timed steps (robust to preemption)."""
    model = build_model(model_name, device)
    x, y = _fake_batch(model_name, device)
    opt = OPTIMIZERS[opt_name][0](model)
    times = []
    for i in range(warmup + inner):
        _sync(device)
        t0 = now()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(since(t0))
    return _median_of(times)


def optim_items(quick: bool, device: torch.device) -> list[dict]:
    items: list[dict] = []
    for m in OPT_MODELS:
        has_bn = bool(bn_scales(models.get(m)))
        inner = 3 if quick else 30
        for o, (_, needs_bn) in OPTIMIZERS.items():
            if needs_bn and not has_bn:
                continue
            items.append({"model": m, "optimizer": o, "kind": "step", "inner": inner,
                          "timer": lambda m=m, o=o, n=inner: time_opt_step(
                              m, o, inner=n, device=device)})
        fb_inner = 2 if quick else {"lenet300": 20, "lenet5_caffe": 3, "resnet20": 1}[m]
        items.append({"model": m, "optimizer": None, "kind": "fwd_bwd", "inner": fb_inner,
                      "timer": lambda m=m, n=fb_inner: time_fwd_bwd(m, inner=n, device=device)})
    # measured full steps on the MNIST MLP, where they are cheap
    full_inner = 2 if quick else 20
    for o, (_, needs_bn) in OPTIMIZERS.items():
        if not needs_bn:
            items.append({"model": "lenet300", "optimizer": o, "kind": "full_step",
                          "inner": full_inner,
                          "timer": lambda o=o: time_full_step("lenet300", o, inner=full_inner,
                                                              device=device)})
    return items


# ---------------------------------------------------------------- section 3: GPU epochs


def time_gpu_epoch(name: str, batch_size: int, device: torch.device, compile_: bool) -> dict:
    """Per-epoch seconds of ``fit`` on the whole CIFAR-10 training split (epoch 2 of 2)."""
    split = data.load("cifar10", "train", device=device)
    model = maybe_compile(build_model(name, device), compile_)
    opt = sgd(model.parameters())
    hist = fit(model, split, epochs=2, optimizer=opt, batch_size=batch_size, pad=4, flip=True,
               device=device, progress=False, desc=f"bench {name}")
    return {"model": name, "batch_size": batch_size, "first_epoch_s": hist[0]["epoch_time_s"],
            "epoch_s": hist[1]["epoch_time_s"]}


# ---------------------------------------------------------------- running and the record


def run_interleaved(items: list[dict], repeats: int, log: Callable[[str], None],
                    clock: str = "cpu") -> None:
    """Repeat r of every item before repeat r+1 of any; store per-repeat times and medians.

    ``median_s`` is the item's headline number: the median over repeats of its CPU time
    (``clock="cpu"``) or wall time (``clock="wall"``, and always for items that set
    ``"clock": "wall"``, i.e. ``DataLoader`` workers).
    """
    for item in items:
        item["times_wall"], item["times_cpu"] = [], []
    for r in range(repeats):
        for item in items:
            t = item["timer"]()
            if not isinstance(t, dict):
                t = {"wall": t, "cpu": t}
            item["times_wall"].append(t["wall"])
            item["times_cpu"].append(t["cpu"])
        log(f"  repeat {r + 1}/{repeats} done")
    for item in items:
        item["median_wall_s"] = statistics.median(item["times_wall"])
        item["median_cpu_s"] = statistics.median(item["times_cpu"])
        item["clock"] = item.get("clock", clock)
        item["median_s"] = item["median_wall_s" if item["clock"] == "wall" else "median_cpu_s"]
        del item["timer"]


def find_item(items: list[dict], **match) -> dict | None:
    """The first item whose fields equal ``match`` (None where none does)."""
    for it in items:
        if all(it.get(k) == v for k, v in match.items()):
            return it
    return None


def _median(items: list[dict], key: str = "median_s", **match) -> float | None:
    it = find_item(items, **match)
    return None if it is None else it[key]


def reference_variant(items: list[dict], model: str) -> str:
    """replib's loop that the ``DataLoader`` pipeline of ``model`` is compared with: the
    augmented one where it was measured (CIFAR, where the ``DataLoader`` augments too), else
    the plain one."""
    return "replib_aug" if find_item(items, model=model, variant="replib_aug") else "replib"


def loop_ratios(items: list[dict]) -> list[dict]:
    """Per model: replib / bare, DataLoader / replib, augmentation cost, contiguous / CL.

    Everything on the headline clock (CPU time on the CPU), except the two-worker
    ``DataLoader``, compared with replib on the wall clock (its work is in other processes).
    The ``DataLoader`` runs augmentation on CIFAR, so it is compared with replib's augmented
    loop there.
    """
    rows = []
    for name in dict.fromkeys(it["model"] for it in items):
        if name in CALIBRATION:
            continue
        rep = _median(items, model=name, variant="replib")
        bare = _median(items, model=name, variant="bare")
        aug = _median(items, model=name, variant="replib_aug")
        ref = reference_variant(items, name)
        w0 = _median(items, model=name, variant="dataloader_w0")
        w2 = _median(items, "median_wall_s", model=name, variant="dataloader_w2")
        ref_wall = _median(items, "median_wall_s", model=name, variant=ref)
        cont = _median(items, model=name, variant="replib_contiguous")
        rows.append({
            "model": name,
            "replib_over_bare": rep / bare,
            "dataloader_w0_over_replib": w0 / (aug if aug is not None else rep)
            if w0 is not None else None,
            "dataloader_w2_over_replib_wall": w2 / ref_wall if w2 is not None else None,
            "augment_cost": aug / rep if aug is not None else None,
            "contiguous_over_channels_last": cont / rep if cont is not None else None,
        })
    return rows


def epoch_estimates(items: list[dict], n_train: dict[str, int]) -> list[dict]:
    """Per-epoch seconds implied by replib's steady-state step time (full training split)."""
    rows = []
    for it in items:
        if it["variant"] in ("replib", "replib_contiguous", "replib_aug"):
            n = n_train[it["dataset"]]
            rows.append({"model": it["model"], "dataset": it["dataset"],
                         "variant": it["variant"], "channels_last": it["channels_last"],
                         "steps_per_epoch": math.ceil(n / BATCH),
                         "epoch_s": it["median_s"] * math.ceil(n / BATCH)})
    return rows


def optim_ratios(items: list[dict]) -> list[dict]:
    rows = []
    for m in dict.fromkeys(it["model"] for it in items if it["kind"] == "step"):
        sgd_step = _median(items, model=m, optimizer="sgd", kind="step")
        adam_step = _median(items, model=m, optimizer="adam", kind="step")
        fb = _median(items, model=m, kind="fwd_bwd")
        sgd_full = _median(items, model=m, optimizer="sgd", kind="full_step")
        for it in items:
            if it["model"] != m or it["kind"] != "step":
                continue
            o = it["optimizer"]
            full = _median(items, model=m, optimizer=o, kind="full_step")
            rows.append({
                "model": m, "optimizer": o, "step_s": it["median_s"],
                "step_over_sgd": it["median_s"] / sgd_step,
                "step_over_adam": (it["median_s"] / adam_step if "adam" in o else None),
                "train_step_over_sgd_derived": (fb + it["median_s"]) / (fb + sgd_step),
                "train_step_over_sgd_measured": (full / sgd_full if full is not None
                                                 and sgd_full else None),
            })
    return rows


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fmt(v, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def print_tables(record: dict) -> None:
    if "loops" in record:
        print_loop_tables(record)
    if "data" in record:
        print("\n== Input pipeline alone: seconds per batch of 128 (no model)")
        for it in record["data"]["items"]:
            print(f"{it['dataset']:10s} {it['variant']:16s} {it['median_s']:9.5f} "
                  f"({it['clock']})")
        for r in record["data"]["ratios"]:
            print(f"{r['dataset']:10s} DataLoader/replib: w0 {r['dataloader_w0_over_replib']:.1f}x"
                  f", w2 (wall) {r['dataloader_w2_over_replib_wall']:.1f}x")
    if "optim" in record:
        print_optim_table(record)
    if record.get("gpu_epochs"):
        print("\n== GPU epochs (CIFAR-10, whole split on the GPU)")
        for r in record["gpu_epochs"]:
            print(f"{r['model']:14s} batch {r['batch_size']:4d} {r['epoch_s']:8.1f} s/epoch")


def print_loop_tables(record: dict) -> None:
    print("\n== Training loops: steady-state seconds per step (median of interleaved repeats; "
          "clock: process CPU time, or wall for DataLoader workers / CUDA)")
    print(f"{'model':14s} {'variant':18s} {'s/step':>9s} {'clock':>5s}  repeats (cpu | wall)")
    for it in record["loops"]["items"]:
        reps = " ".join(f"{t:.4f}" for t in it["times_cpu"])
        walls = " ".join(f"{t:.4f}" for t in it["times_wall"])
        print(f"{it['model']:14s} {it['variant']:18s} {it['median_s']:9.4f} {it['clock']:>5s}"
              f"  {reps} | {walls}")
    print("\n== Loop ratios (goals: replib/bare <= 1.10; DataLoader/replib >= 5 on MNIST nets)")
    print(f"{'model':14s} {'replib/bare':>12s} {'DL(w0)/replib':>14s} {'DL(w2)/replib wall':>19s} "
          f"{'aug cost':>9s} {'contig/CL':>10s}")
    for r in record["loops"]["ratios"]:
        print(f"{r['model']:14s} {_fmt(r['replib_over_bare']):>12s} "
              f"{_fmt(r['dataloader_w0_over_replib']):>14s} "
              f"{_fmt(r['dataloader_w2_over_replib_wall']):>19s} {_fmt(r['augment_cost']):>9s} "
              f"{_fmt(r['contiguous_over_channels_last']):>10s}")
    print("\n== Per-epoch seconds implied (full training split, batch 128)")
    for r in record["loops"]["epoch_estimates"]:
        print(f"{r['model']:14s} {r['variant']:18s} {r['epoch_s']:9.1f} s")


def print_optim_table(record: dict) -> None:
    print("\n== Optimizer step vs SGD (goal: <= 1.30)")
    print(f"{'model':14s} {'optimizer':22s} {'step ms':>8s} {'step/SGD':>9s} "
          f"{'train-step/SGD':>15s} {'measured':>9s}")
    for r in record["optim"]["ratios"]:
        print(f"{r['model']:14s} {r['optimizer']:22s} {1e3 * r['step_s']:8.3f} "
              f"{r['step_over_sgd']:9.2f} {r['train_step_over_sgd_derived']:15.3f} "
              f"{_fmt(r['train_step_over_sgd_measured'], '.3f'):>9s}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model in the replib and bare loops (and GPU epochs)")
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("REPLIB_THREADS") or 1),
                    help="torch CPU threads (default: REPLIB_THREADS or 1: on a shared 2-core "
                         "machine one thread gives far steadier ratios)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny step counts (a smoke test)")
    ap.add_argument("--sections", default="loops,data,optim,gpu_epochs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device={args.device!r}; allowed values: ['cpu', 'cuda']")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device=cuda but torch.cuda.is_available() is False")
    sections = [s for s in args.sections.split(",") if s]
    bad = set(sections) - set(SECTIONS)
    if bad:
        raise ValueError(f"--sections {sorted(bad)}; allowed values: {list(SECTIONS)}")
    if args.repeats < 1:
        raise ValueError(f"--repeats={args.repeats} must be >= 1")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("REPLIB_PROGRESS", "0")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    clock = "cpu" if device.type == "cpu" else "wall"
    t_start = time.perf_counter()
    record: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "settings": {"batch_size": BATCH, "repeats": args.repeats, "quick": args.quick,
                     "compile": args.compile, "sections": sections,
                     "optimizer": "SGD lr 0.1, momentum 0.9, weight decay 1e-4"},
        "method": ("Every item is timed in steady state (warm-up steps excluded) and repeated; "
                   "repeats are interleaved across items (repeat r of every item before "
                   "repeat r+1 of any) and the median is reported, because the machine is "
                   "shared and timings are noisy. Ratios are ratios of medians. "
                   + ("On the CPU the headline clock is the CPU time of this process (the "
                      "wall clock of a one-thread process on a shared machine also counts "
                      "the time the scheduler gives to other processes); DataLoader runs "
                      "with worker processes are timed, and compared, on the wall clock. "
                      "Both clocks are in the record for every item. Optimizer steps are "
                      "timed one by one and the median step is taken."
                      if device.type == "cpu" else "Wall clock, CUDA synchronized.")),
        "clock": clock,
        "loadavg_start": _loadavg(),
    }
    if "loops" in sections:
        t_sec = time.perf_counter()
        log("section 1: training loops")
        items = loop_items(args.quick, device, args.compile)
        run_interleaved(items, args.repeats, log, clock)
        n_train = {ds: len(data.load(ds, "train")) for ds in {it["dataset"] for it in items}}
        record["loops"] = {"items": items, "ratios": loop_ratios(items),
                           "epoch_estimates": epoch_estimates(items, n_train),
                           "wall_s": time.perf_counter() - t_sec}
        if not args.quick:
            ds_mnist = torchvision_dataset("mnist", data.load("mnist", "train"), False)[1]
            record["loops"]["torchvision_dataset"] = {"mnist": ds_mnist, "cifar10": "CifarLike"}
    if "data" in sections:
        log("section 1b: input pipelines alone")
        t_sec = time.perf_counter()
        items = data_items(args.quick, device)
        run_interleaved(items, args.repeats, log, clock)
        record["data"] = {"items": items, "ratios": data_ratios(items),
                          "wall_s": time.perf_counter() - t_sec}
    if "optim" in sections:
        log("section 2: sparse optimizers")
        t_sec = time.perf_counter()
        items = optim_items(args.quick, device)
        run_interleaved(items, max(args.repeats, 3), log, clock)
        record["optim"] = {"items": items, "ratios": optim_ratios(items),
                           "wall_s": time.perf_counter() - t_sec}
    if "gpu_epochs" in sections and device.type == "cuda":
        log("section 3: GPU epochs")
        record["gpu_epochs"] = [time_gpu_epoch(n, b, device, args.compile)
                                for n, b in (GPU_EPOCHS[:1] if args.quick else GPU_EPOCHS)]
    record["loadavg_end"] = _loadavg()
    record["wall_s"] = time.perf_counter() - t_start
    print_tables(record)
    print(f"\nwall time {record['wall_s']:.0f} s; load average {record['loadavg_start']} -> "
          f"{record['loadavg_end']}")
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        tag = "quick-" if args.quick else ""
        path = args.out / f"{tag}{stamp}-{device.type}{'-compile' if args.compile else ''}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
