"""Tasks of the l0 paper (see notebooks/l0/ and :mod:`replib.l0`).

``l0_train_prune``: train a network with the l2 / l1 / l0 / combined l2-l0 penalty (Eqs. (1),
(4), (6), (11), Sec. 3.3; hyperparameter strategies "plain", NORM or SEP of Sec. 4.2), prune it
to a list of compression rates (global, layer-wise or random magnitude pruning, Sec. 4.1),
optionally fine-tune the survivors with the zero pattern frozen, and record accuracy per
compression (Figs. 2-6, Tables 1-2).
"""

from __future__ import annotations

import hashlib
import json

import torch

from .. import l0 as L0
from .. import models
from ..experiments.spec import task
from ..experiments.store import checkpoints_root
from ..metrics import count_params, evaluate
from ..train import fit, seed_everything
from .common import TRAIN_DEFAULTS, load_splits, make_optimizer, make_schedule

L0_DEFAULTS = dict(
    TRAIN_DEFAULTS,
    optimizer="adam",        # the authors' Keras script trains with Adam (references.md, (D))
    lr=1e-3,                 # Keras' Adam default
    momentum=0.9,
    weight_decay=0.0,        # regularization is the penalty below, added to the loss
    schedule="cosine",
    reg="l2l0",              # none | l2 | l1 | l0 | l2l0
    strategy="norm",         # plain | norm | sep
    norm="sqrt",             # none | sqrt | mean (NORM's layer-size normalization)
    alpha_l2=1e-4,
    alpha_l1=0.0,
    alpha_l0=1e-6,
    beta=5.0,
    sep_alpha_l2=[],         # SEP: one value per prunable layer
    sep_alpha_l0=[],
    sep_beta=[],
    scopes=["global"],       # global | layerwise | random
    compressions=[2, 4, 8, 16, 32, 64, 128, 256],
    prune_seed=0,            # the random-pruning generator
    finetune_epochs=0,       # 0: no fine-tuning
    finetune_lr=1e-4,
    finetune_penalty="l2",   # none | l2 | same: the training penalty during fine-tuning
    finetune_compressions=[],  # [] = every compression
    finetune_scopes=[],      # [] = every scope
    finetune_subset=0,       # 0: fine-tune on the whole training split
    eval_test=True,          # False for search runs: the test set is never evaluated
    channels_last=True,      # faster conv nets on CPU (no effect on MLPs)
    model_shortcut="B",      # ResNets only: "A" or "B" shortcuts
    model_bn_init=1.0,       # ResNets only: initial BN scale (1.0 = Keras default)
    hist_bins=[-8.0, -7.0, -6.0, -5.0, -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 1.0],
)

# Hyperparameters that act after training: runs differing only in these share one trained
# network (its checkpoint is kept under data/checkpoints/l0/trained/, see _train_dir).
POST_TRAIN_KEYS = ("scopes", "compressions", "prune_seed", "finetune_epochs", "finetune_lr",
                   "finetune_penalty", "finetune_compressions", "finetune_scopes",
                   "finetune_subset", "hist_bins")

_CHOICES = {"reg": L0.REGS, "strategy": L0.STRATEGIES, "norm": L0.NORMS,
            "finetune_penalty": L0.FT_PENALTIES}


def _check_hp(hp: dict) -> None:
    for k, allowed in _CHOICES.items():
        if hp[k] not in allowed:
            raise ValueError(f"{k}={hp[k]!r} is not known; allowed values: {list(allowed)}")
    for s in list(hp["scopes"]) + list(hp["finetune_scopes"]):
        if s not in L0.SCOPES:
            raise ValueError(f"scopes={list(hp['scopes'])} / finetune_scopes: {s!r} is not "
                             f"known; allowed values: {list(L0.SCOPES)}")
    for c in list(hp["compressions"]) + list(hp["finetune_compressions"]):
        if not isinstance(c, (int, float)) or c < 1:
            raise ValueError(f"compressions: {c!r} must be a number >= 1")
    if hp["finetune_epochs"] < 0:
        raise ValueError(f"finetune_epochs={hp['finetune_epochs']} must be >= 0")


def train_key(spec) -> str:
    """Hash of everything that determines the trained (unpruned) network of a run."""
    d = spec.to_json()
    d["hparams"] = {k: v for k, v in d["hparams"].items() if k not in POST_TRAIN_KEYS}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    return f"{spec.model}-{spec.dataset}-s{spec.seed}-{digest}"


def _train_dir(spec):
    return checkpoints_root() / spec.paper / "trained" / spec.budget / train_key(spec)


_RETRAINED: set[str] = set()


def run_l0(spec, rerun: bool = False):
    """``experiments.run`` for this task, honouring ``rerun`` for the shared trained network.

    Runs that differ only after training share a checkpoint of the trained network (kept
    across runs, see :func:`train_key`). With ``rerun=True`` that checkpoint is deleted the
    first time a key is met in this process, so the network is retrained once and then shared
    again by the other runs of the same notebook.
    """
    import shutil

    from .. import experiments as ex

    if rerun and train_key(spec) not in _RETRAINED:
        shutil.rmtree(_train_dir(spec), ignore_errors=True)
        _RETRAINED.add(train_key(spec))
    return ex.run(spec, rerun=rerun)


def _build_model(spec, num_classes: int):
    hp = spec.hp
    kw = {}
    if spec.model in ("resnet20", "resnet56", "wrn20", "resnet18"):
        kw = {"shortcut": hp["model_shortcut"], "bn_init": hp["model_bn_init"]}
    return models.get(spec.model, num_classes=num_classes, **kw)


def _finetuned(hp):
    """``(scope, compression) -> bool``: whether that point of the prune curve is fine-tuned
    (``finetune_scopes`` / ``finetune_compressions``; empty: every one)."""
    ft_scopes = list(hp["finetune_scopes"]) or list(hp["scopes"])
    ft_cs = [float(c) for c in hp["finetune_compressions"]]
    return lambda scope, c: scope in ft_scopes and (not ft_cs or
                                                    any(abs(c - x) < 1e-9 for x in ft_cs))


def _train_prune_epochs(hp, epochs: int) -> int:
    """Training, plus ``finetune_epochs`` for every fine-tuned point of the prune curve."""
    if not hp["finetune_epochs"]:
        return epochs
    is_ft = _finetuned(hp)
    points = sum(is_ft(s, float(c)) for s in hp["scopes"] for c in hp["compressions"])
    return epochs + int(hp["finetune_epochs"]) * points


@task("l0_train_prune", defaults=L0_DEFAULTS, train_epochs=_train_prune_epochs)
def l0_train_prune(spec, ctx):
    """Train with the l0 paper's penalty, then prune / fine-tune to a list of compressions."""
    hp = spec.hp
    _check_hp(hp)
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    if not hp["eval_test"]:
        test = None
    model = _build_model(spec, train.info.num_classes).to(ctx.device)
    coefs = L0.layer_coefs(
        model, hp["reg"], hp["strategy"], alpha_l2=hp["alpha_l2"], alpha_l1=hp["alpha_l1"],
        alpha_l0=hp["alpha_l0"], beta=hp["beta"], norm=hp["norm"],
        sep_alpha_l2=hp["sep_alpha_l2"], sep_alpha_l0=hp["sep_alpha_l0"], sep_beta=hp["sep_beta"])
    penalty = L0.make_penalty(coefs)
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    cl = bool(hp["channels_last"] and is_conv)
    pad, flip = (4, True) if hp["augment"] else (0, False)

    opt = make_optimizer(model.parameters(), hp)
    sched = make_schedule(opt, hp, spec.epochs)

    def epoch_metrics(m):
        with torch.no_grad():
            return {"small_frac_1e-3": L0.small_fraction(m, 1e-3),
                    "small_frac_1e-2": L0.small_fraction(m, 1e-2),
                    "penalty": float(penalty(m)) if penalty is not None else 0.0}

    history = fit(model, train, epochs=spec.epochs, optimizer=opt, scheduler=sched,
                  batch_size=hp["batch_size"], test=test, val=val, penalty=penalty,
                  epoch_metrics=epoch_metrics, pad=pad, flip=flip, seed=spec.seed,
                  ckpt_dir=_train_dir(spec), device=ctx.device, channels_last=cl,
                  desc=f"{spec.model}/{hp['reg']}")

    # ---- dense (unpruned) network after regularized training
    dense = {"params": count_params(model), "prunable": L0.prunable_total(model),
             "other_params": L0.other_params(model)}
    for name, split in (("val", val), ("test", test)):
        if split is not None:
            dense[f"{name}_acc"] = evaluate(model, split, device=ctx.device,
                                            channels_last=cl)["acc"]
    hist_w = L0.weight_histogram(model, hp["hist_bins"])

    # ---- prune, fine-tune
    ft_penalty = {"none": None, "same": penalty,
                  "l2": L0.make_penalty([L0.LayerCoef(c.name, c.kind, c.n, c.alpha_l2, 0.0, 0.0,
                                                      c.beta) for c in coefs])}[
        hp["finetune_penalty"]]
    ft_train = train
    if hp["finetune_subset"]:
        g = torch.Generator().manual_seed(4321)
        idx = torch.randperm(len(train), generator=g)[:hp["finetune_subset"]]
        ft_train = train.subset(idx.to(train.labels.device), "fine-tune subset")
    ft_hp = dict(hp, lr=hp["finetune_lr"])
    ft_histories: dict[str, list] = {}

    ft_points = _finetuned(hp)

    def ft_fn(pruned, scope, c):
        key = f"{scope}-{c:g}"
        h = L0.finetune(pruned, ft_train, epochs=hp["finetune_epochs"],
                        make_opt=lambda ps: make_optimizer(ps, ft_hp), penalty=ft_penalty,
                        batch_size=hp["batch_size"], seed=spec.seed + 7,
                        ckpt_dir=ctx.stage_dir(f"ft-{key}"), device=ctx.device,
                        channels_last=cl, pad=pad, flip=flip, desc=f"finetune {key}")
        ft_histories[key] = h
        return h

    curve = L0.prune_curve(
        model, scopes=hp["scopes"], compressions=hp["compressions"], val=val, test=test,
        prune_seed=hp["prune_seed"], finetune_fn=ft_fn if hp["finetune_epochs"] else None,
        finetune_points=ft_points, device=ctx.device, channels_last=cl)

    last = history[-1]
    metrics = {
        "dense_val_acc": dense.get("val_acc"),
        "dense_test_acc": dense.get("test_acc"),
        "dense_test_error_pct": 100 * (1 - dense["test_acc"]) if "test_acc" in dense else None,
        "params": dense["params"],
        "prunable": dense["prunable"],
        "other_params": dense["other_params"],
        "small_frac_1e-3": last["small_frac_1e-3"],
        "small_frac_1e-2": last["small_frac_1e-2"],
        "epoch_time_s": sum(h["epoch_time_s"] for h in history) / len(history),
        "test_n": len(test) if test is not None else 0,
        "val_n": len(val) if val is not None else 0,
        "train_key": train_key(spec),
    }
    return {
        "history": history,
        "metrics": metrics,
        "artifacts": {
            "curve": curve,
            "coefs": L0.coefs_table(coefs),
            "weight_hist": hist_w,
            "finetune_histories": ft_histories,
        },
    }
