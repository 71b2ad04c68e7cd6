"""``dense``: train an unpruned reference network (the papers' baselines)."""

from __future__ import annotations

import torch

from .. import models
from ..experiments.spec import task
from ..metrics import count_params, flops
from ..train import fit, seed_everything
from .common import TRAIN_DEFAULTS, load_splits, make_optimizer, make_schedule


@task("dense", defaults=dict(TRAIN_DEFAULTS))
def dense(spec, ctx):
    """Train ``spec.model`` on ``spec.dataset`` with SGD/Adam; measure test error, params, FLOPs."""
    hp = spec.hp
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    model = models.get(spec.model, num_classes=train.info.num_classes).to(ctx.device)
    opt = make_optimizer(model.parameters(), hp)
    sched = make_schedule(opt, hp, spec.epochs)
    pad, flip = (4, True) if hp["augment"] else (0, False)
    history = fit(model, train, epochs=spec.epochs, optimizer=opt, scheduler=sched,
                  batch_size=hp["batch_size"], test=test, val=val, pad=pad, flip=flip,
                  seed=spec.seed, ckpt_dir=ctx.stage_dir("train"), device=ctx.device,
                  desc=f"{spec.model}/{spec.dataset}")
    last = history[-1]
    with torch.no_grad():
        n_flops = flops(model, models.input_shape(spec.model))
    return {
        "history": history,
        "metrics": {
            "test_acc": last["test_acc"],
            "test_error_pct": 100.0 * (1.0 - last["test_acc"]),
            "test_top5": last["test_top5"],
            "test_n": len(test),
            "val_acc": last.get("val_acc"),
            "params": count_params(model),
            "flops": n_flops,
            "epoch_time_s": sum(h["epoch_time_s"] for h in history) / len(history),
        },
    }
