"""Pieces shared by tasks: optimizers and schedules from hparams, data subsets."""

from __future__ import annotations

import torch

from ..data import Split, train_val_split
from ..experiments.runner import RunContext
from ..experiments.spec import RunSpec
from ..train import multistep_schedule

# Hyperparameters every supervised task understands, with the defaults of open_lth/He et al.
TRAIN_DEFAULTS = {
    "optimizer": "sgd",       # sgd | adam
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "schedule": "multistep",  # multistep | cosine | constant
    "milestones": [0.5, 0.75],  # fractions of the epochs where the LR is divided by 10
    "augment": False,         # pad-4 random crop + horizontal flip (CIFAR)
    "train_subset": 0,        # 0: the whole training split; n: the first n of a fixed shuffle
    "val_size": 0,            # images held out of the training split for validation
}


def make_optimizer(params, hp: dict) -> torch.optim.Optimizer:
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"],
                               weight_decay=hp["weight_decay"], nesterov=hp["nesterov"])
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    raise ValueError(f"optimizer={hp['optimizer']!r}; allowed values: ['sgd', 'adam']")


def make_schedule(opt: torch.optim.Optimizer, hp: dict, epochs: int):
    if hp["schedule"] == "multistep":
        return multistep_schedule(opt, epochs, tuple(hp["milestones"]))
    if hp["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    if hp["schedule"] == "constant":
        return None
    raise ValueError(f"schedule={hp['schedule']!r}; allowed: ['multistep', 'cosine', 'constant']")


def load_splits(spec: RunSpec, ctx: RunContext) -> tuple[Split, Split | None, Split]:
    """Training split (optionally a fixed subset), optional validation split, test split."""
    hp = spec.hp
    train = ctx.load(spec.dataset, "train")
    test = ctx.load(spec.dataset, "test")
    val = None
    if hp.get("val_size", 0):
        train, val = train_val_split(train, hp["val_size"], seed=0)
    n = hp.get("train_subset", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"train_subset={n!r} must be an integer >= 0 (0: the whole split)")
    if n:
        g = torch.Generator().manual_seed(1234)
        idx = torch.randperm(len(train), generator=g)[:n].to(train.labels.device)
        train = train.subset(idx, "train subset")
    if spec.budget == "smoke":
        test = test.subset(torch.arange(min(len(test), 500), device=test.labels.device),
                           "smoke test subset")
    return train, val, test

