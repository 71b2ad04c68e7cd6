"""Tasks of the proxns paper (see notebooks/proxns/): baseline, original NS, proximal NS.

- ``proxns_baseline``: train without any penalty on the BN scales (Table 2, "Baseline").
- ``proxns_original_ns``: network slimming of Liu et al.: subgradient l1 on the BN scales
  (Eq. (3b)), global pruning of the ``percent`` smallest ``|gamma|``, physical removal,
  fine-tuning without the penalty (Table 2, "Original NS").
- ``proxns_proximal_ns``: Algorithm 1 after every SGD step (alpha = 1/lr, following the LR
  schedule), removal of the channels whose scaling factor xi is exactly zero, optional
  fine-tuning (Tables 1-3, "Proximal NS").

Training follows the paper's Sec. 5.1 (SGD lr 0.1, Nesterov momentum 0.9, weight decay 1e-4 on
every parameter including gamma, batch 64, 160 epochs, LR / 10 at 50% and 75%, pad-4 crop and
flip); fine-tuning repeats that recipe on the pruned net "without l1 regularization".
"""

from __future__ import annotations

import copy
import logging

import torch

from .. import models
from ..experiments.spec import task
from ..metrics import count_params, evaluate, flops
from ..proxns import (
    MODELS,
    batchnorms,
    build_model,
    count_zeros,
    fold_pruned_constants_,
    layer_channels,
    log_histogram,
    masked_copy,
    prune_channels,
    prune_curve,
    scaling_factors,
    slimming_penalty,
    total_channels,
)
from ..sparsity.optim import ProximalSlimming
from ..sparsity.prune import bn_channel_masks
from ..train import fit, seed_everything
from .common import TRAIN_DEFAULTS, load_splits, make_optimizer, make_schedule

log = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100")
CURVE = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

# Sec. 5.1 of the paper (Nesterov momentum, batch 64) on top of the shared defaults.
SLIMMING_DEFAULTS = dict(TRAIN_DEFAULTS, batch_size=64, nesterov=True, augment=True,
                         width=1.0, curve=list(CURVE), test_subset=0)
NS_DEFAULTS = dict(SLIMMING_DEFAULTS, s=1e-4, percent=0.7, finetune_epochs=160)
PROX_DEFAULTS = dict(SLIMMING_DEFAULTS, lam=0.0045, beta=100.0, xi_low=0.47, xi_high=0.53,
                     finetune_epochs=160)


def _check(hp: dict) -> None:
    """Refuse bad settings before any training starts."""
    if not 0.0 < hp["width"] <= 1.0:
        raise ValueError(f"width={hp['width']} must lie in (0, 1]")
    if "percent" in hp and not 0.0 <= hp["percent"] < 1.0:
        raise ValueError(f"percent={hp['percent']} must lie in [0, 1)")
    if hp["test_subset"] < 0:
        raise ValueError(f"test_subset={hp['test_subset']} must be >= 0 (0: the whole split)")
    if hp.get("finetune_epochs", 0) < 0:
        raise ValueError(f"finetune_epochs={hp['finetune_epochs']} must be >= 0")
    if "xi_low" in hp and not hp["xi_low"] <= hp["xi_high"]:
        raise ValueError(f"xi_low={hp['xi_low']} must be <= xi_high={hp['xi_high']}")
    if any(not 0.0 <= float(p) < 1.0 for p in hp["curve"]):
        raise ValueError(f"curve={list(hp['curve'])}: every percent must lie in [0, 1)")


def _train(model, train, val, test, hp, epochs, ctx, stage, seed, desc, *, penalty=None,
           proximal=None):
    """One training stage with ``fit``; ``proximal(opt)`` builds a ProximalSlimming."""
    opt = make_optimizer(model.parameters(), hp)
    sched = make_schedule(opt, hp, epochs)
    slim = proximal(opt) if proximal is not None else None

    def scale_counts(m):
        row = {"zero_gamma": count_zeros(scaling_factors(m).values())}
        if slim is not None:
            row["zero_xi"] = count_zeros(slim.xi())
        return row

    pad, flip = (4, True) if hp["augment"] else (0, False)
    history = fit(
        model, train, epochs=epochs, optimizer=opt, scheduler=sched,
        batch_size=hp["batch_size"], test=test, val=val, penalty=penalty,
        after_step=(lambda m, step: slim.step()) if slim is not None else None,
        epoch_metrics=scale_counts, extra_state={"proxns": slim} if slim is not None else None,
        pad=pad, flip=flip, seed=seed, ckpt_dir=ctx.stage_dir(stage), device=ctx.device,
        desc=desc,
    )
    return history, slim


def _mean_time(history) -> float:
    return sum(h["epoch_time_s"] for h in history) / len(history)


def _start(spec, ctx):
    hp = spec.hp
    _check(hp)
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    if hp["test_subset"]:
        test = test.subset(torch.arange(min(len(test), hp["test_subset"]),
                                        device=test.labels.device), "test subset")
    model = build_model(spec.model, train.info.num_classes, hp["width"]).to(ctx.device)
    return hp, train, val, test, model


def _finish(spec, ctx, model, masks, train, val, test, history, hp, extra_metrics,
            extra_artifacts, curve_scales=None):
    """Prune (physically), measure, fine-tune: what original and proximal NS share.

    ``test_acc_pruned`` is the physically pruned net's accuracy (the official removal);
    ``test_acc_pruned_folded`` the same with the removed channels' constant outputs
    ``relu(beta)`` moved into the next layer's bias (:func:`fold_pruned_constants_`).
    """
    shape = models.input_shape(spec.model)
    acc_trained = evaluate(model, test, device=ctx.device)["acc"]
    curve = prune_curve(model, test, hp["curve"], scales=curve_scales, device=ctx.device)
    shrunk, stats = prune_channels(model, masks, shape, device=ctx.device)
    acc_pruned = evaluate(shrunk, test, device=ctx.device)["acc"]
    folded = masked_copy(fold_pruned_constants_(copy.deepcopy(model), masks), masks)
    acc_folded = evaluate(folded, test, device=ctx.device)["acc"]
    metrics = {
        "test_acc_trained": acc_trained,
        "test_acc_best_epoch": max(h["test_acc"] for h in history),
        "test_acc_pruned": acc_pruned,
        "acc_drop_pruning_pts": 100.0 * (acc_trained - acc_pruned),
        "test_acc_pruned_folded": acc_folded,
        "test_n": len(test),
        "epoch_time_s": _mean_time(history),
        **stats,
        **extra_metrics,
    }
    ft_history = []
    if hp["finetune_epochs"] > 0:
        ft_history, _ = _train(shrunk, train, val, test, hp, hp["finetune_epochs"], ctx,
                               "finetune", spec.seed + 1000, f"{spec.model} fine-tune")
        metrics.update({
            "test_acc_finetuned": ft_history[-1]["test_acc"],
            "test_acc_finetuned_best_epoch": max(h["test_acc"] for h in ft_history),
            "finetune_epoch_time_s": _mean_time(ft_history),
        })
        if count_params(shrunk) != stats["params_after"]:
            raise RuntimeError("fine-tuning changed the pruned architecture")
    return {
        "history": history,
        "metrics": metrics,
        "artifacts": {
            "curve": curve,
            "layers": layer_channels(masks),
            "finetune_history": ft_history,
            **extra_artifacts,
        },
    }


def _slimming_epochs(hp, epochs: int) -> int:
    """Training, then fine-tuning the pruned network."""
    return epochs + int(hp["finetune_epochs"])


@task("proxns_baseline", defaults=SLIMMING_DEFAULTS, models=MODELS, datasets=DATASETS)
def baseline(spec, ctx):
    """Train the unpruned network with no penalty on the BN scales (Table 2, Baseline)."""
    hp, train, val, test, model = _start(spec, ctx)
    history, _ = _train(model, train, val, test, hp, spec.epochs, ctx, "train", spec.seed,
                        f"{spec.model} baseline")
    shape = models.input_shape(spec.model)
    gammas = scaling_factors(model).values()
    return {
        "history": history,
        "metrics": {
            "test_acc": history[-1]["test_acc"],
            "test_acc_best_epoch": max(h["test_acc"] for h in history),
            "test_n": len(test),
            "channels": total_channels(model),
            "params": count_params(model),
            "flops": flops(model, shape),
            "epoch_time_s": _mean_time(history),
        },
        "artifacts": {
            "hist_gamma": log_histogram(gammas),
            "curve": prune_curve(model, test, hp["curve"], device=ctx.device),
        },
    }


@task("proxns_original_ns", defaults=NS_DEFAULTS, models=MODELS, datasets=DATASETS,
      train_epochs=_slimming_epochs)
def original_ns(spec, ctx):
    """Original network slimming: subgradient l1 (Eq. (3b)), global percent pruning, fine-tune.

    ``s`` weighs ``sum |gamma|``; ``percent`` of all channels (smallest ``|gamma|`` over the
    whole net) are pruned, never a whole layer (the largest-``|gamma|`` channel stays).
    """
    hp, train, val, test, model = _start(spec, ctx)
    history, _ = _train(model, train, val, test, hp, spec.epochs, ctx, "train", spec.seed,
                        f"{spec.model} original NS", penalty=slimming_penalty(hp["s"]))
    gammas = scaling_factors(model)
    masks = bn_channel_masks(model, percent=hp["percent"])
    return _finish(spec, ctx, model, masks, train, val, test, history, hp,
                   {"zero_gamma": count_zeros(gammas.values())},
                   {"hist_gamma": log_histogram(gammas.values())})


@task("proxns_proximal_ns", defaults=PROX_DEFAULTS, models=MODELS, datasets=DATASETS,
      train_epochs=_slimming_epochs)
def proximal_ns(spec, ctx):
    """Proximal NS (Algorithm 1): prune exactly the channels whose xi is 0, then fine-tune.

    ``ProximalSlimming`` keeps xi in its state (checkpointed with the model). After training,
    the channels with ``xi == 0`` are removed; the kept channels keep their trained gamma (as
    the official code, which prunes by gamma). ``test_acc_gamma_xi`` is the other reading:
    every gamma replaced by its xi (exact zeros, nothing removed).
    """
    hp, train, val, test, model = _start(spec, ctx)
    gen = torch.Generator().manual_seed(10_000 + spec.seed)
    bns = batchnorms(model)

    def proximal(opt):
        return ProximalSlimming([bn.weight for bn in bns.values()], lam=hp["lam"],
                                beta=hp["beta"], base_optimizer=opt,
                                xi_init=(hp["xi_low"], hp["xi_high"]), generator=gen)

    history, slim = _train(model, train, val, test, hp, spec.epochs, ctx, "train", spec.seed,
                           f"{spec.model} proximal NS", proximal=proximal)
    xi = {n: x.detach().clone() for n, x in zip(bns, slim.xi())}
    gammas = scaling_factors(model)
    n_zero_gamma = count_zeros(gammas.values())
    hist_gamma = log_histogram(gammas.values())
    masks = bn_channel_masks(model, threshold=0.0, scales=xi)
    finalized = _gamma_from_xi(model, xi)
    acc_gamma_xi = evaluate(finalized, test, device=ctx.device)["acc"]
    max_gamma_pruned = max((float(gammas[n][~m.to(gammas[n].device)].abs().max())
                            for n, m in masks.items() if (~m).any()), default=0.0)
    extra = {
        "zero_xi": count_zeros(xi.values()),
        "zero_gamma": n_zero_gamma,
        "zero_xi_pct": 100.0 * count_zeros(xi.values()) / total_channels(model),
        "test_acc_gamma_xi": acc_gamma_xi,
        "max_abs_gamma_pruned": max_gamma_pruned,
    }
    return _finish(spec, ctx, model, masks, train, val, test, history, hp, extra,
                   {"hist_gamma": hist_gamma, "hist_xi": log_histogram(xi.values())},
                   curve_scales=xi)


@torch.no_grad()
def _gamma_from_xi(model, xi):
    new = copy.deepcopy(model)
    for name, bn in batchnorms(new).items():
        bn.weight.copy_(xi[name])
    return new
