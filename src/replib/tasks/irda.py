"""Tasks of the iRDA paper (see notebooks/irda/ and :mod:`replib.irda`).

``irda``: train ResNet-18 / VGG-16 / VGG-19 with one of the four methods compared in the
paper's Tables 1 and 7 and record top-1 / top-5 accuracy, sparsity, loss and sparsity curves:

- ``sgd``: SGD with momentum (the paper's reference, Sec. 4.2), the model's own initialization;
- ``prox_sgd``: prox-SGD / FOBOS, Eqs. (9)-(10), (18), step ``alpha_t = 1/(gamma sqrt t)``;
- ``sqrt_prox_sgd``: sqrt(t)-prox-SGD, Eqs. (21)-(22), same step, threshold ``lam sqrt(t)/gamma``;
- ``irda``: Algorithm 1. Step 1 is RDA (Eqs. (26)-(28)) from the re-scaled uniform
  initialization of Sec. 3.5 (Eq. (25), scale ``s``); Step 2 (``retrain_epochs`` > 0) continues
  the recursion with the gradients of zero weights set to zero and the zeros frozen
  (Eqs. (29)-(31), Sec. 3.6).

t counts iterations (mini-batches) in every method. The l1 term acts on conv and linear
weights only (``l1_param_groups``); biases and BatchNorm parameters follow the same rule with
``lam = 0``. For iRDA, the reading of the anchor w0 is ``anchor``: ``"init"`` (Eq. (20): w0 =
w1, the initialization) or ``"zero"`` (Algorithm 1 as printed: w0 = 0). Parameters without l1
(BN, biases) are anchored at their initialization in both readings: for them Psi = 0, so any
w0 satisfies the assumption w0 in Argmin Psi (Eq. (33)), while w0 = 0 would reset every BN
scale to zero after the first step.

``irda_convex``: notebook 01's convex toy (l1 logistic regression on two MNIST digits).
"""

from __future__ import annotations

import logging
import math

import torch

from .. import irda as IR
from ..data import num_batches
from ..experiments.spec import task
from ..metrics import count_params, prunable_weights
from ..sparsity.optim import (
    IRDA,
    ProxSGD,
    SqrtProxSGD,
    inverse_sqrt_lr,
    l1_param_groups,
    sqrt_prox_threshold,
)
from ..train import NonFiniteLossError, checkpoint_path, fit, seed_everything
from .common import load_splits, make_schedule

log = logging.getLogger(__name__)

IRDA_DEFAULTS = dict(
    method="irda",          # sgd | prox_sgd | sqrt_prox_sgd | irda
    lam=1e-6,               # Table 1, iRDA row (ResNet-18 / CIFAR-10)
    gamma=1.0,              # Table 1, iRDA row
    s=10.0,                 # Eq. (25) scale; 0 = the model's own initialization (SGD etc.)
    anchor="zero",          # iRDA only: "zero" (Alg. 1: w0 = 0, our main reading) | "init"
    retrain_epochs=0,       # iRDA Step 2 epochs after the ``epochs`` of Step 1
    # SGD-with-momentum reference (the paper states none of it: a standard CIFAR recipe)
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    milestones=[0.5, 0.75],
    batch_size=128,         # Sec. 4: "All neural networks are trained with mini-batch size 128"
    augment=True,           # pad-4 random crop + horizontal flip (CIFAR); False for MNIST
    train_subset=0,
    val_size=0,
    width_div=1,            # 1 = the paper's widths; 4 = a quarter of every layer's width
    channels_last=True,
    init_seed=0,            # generator of the Sec. 3.5 initialization
)

_CHOICES = {"method": IR.METHODS, "anchor": IR.ANCHORS,
            "schedule": ("multistep", "cosine", "constant")}


def check_hparams(hp: dict) -> None:
    """Refuse unknown choices and impossible values before any training starts."""
    for k, allowed in _CHOICES.items():
        if hp[k] not in allowed:
            raise ValueError(f"{k}={hp[k]!r} is not known; allowed values: {list(allowed)}")
    if hp["gamma"] <= 0:
        raise ValueError(f"gamma={hp['gamma']} must be > 0")
    if hp["retrain_epochs"] < 0:
        raise ValueError(f"retrain_epochs={hp['retrain_epochs']} must be >= 0")
    if hp["retrain_epochs"] and hp["method"] != "irda":
        raise ValueError("retrain_epochs > 0 is Step 2 of iRDA; it needs method='irda'")
    if hp["width_div"] < 1:
        raise ValueError(f"width_div={hp['width_div']} must be >= 1")


def _weights_sparsity(model) -> tuple[float, float]:
    """(sigma over conv/linear weights, sigma over all parameters) -- Eq. (32)."""
    ws = list(prunable_weights(model).values())
    zw = sum(int((w == 0).sum()) for w in ws)
    nw = sum(w.numel() for w in ws)
    za = sum(int((p == 0).sum()) for p in model.parameters())
    return zw / nw, za / count_params(model)


def layer_sparsity(model) -> list[dict]:
    """Per conv/linear layer: name, size, fraction of exact zeros."""
    return [{"layer": n, "numel": w.numel(), "sparsity": float((w == 0).double().mean())}
            for n, w in prunable_weights(model).items()]


def make_irda_optimizer(model, hp: dict):
    """The optimizer of ``hp['method']`` and, for the 1/(gamma sqrt t) step, its per-iteration
    scheduler (stepped after every optimizer step)."""
    method, lam, gamma = hp["method"], hp["lam"], hp["gamma"]
    if method == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"],
                              weight_decay=hp["weight_decay"])
        return opt, None
    if method == "prox_sgd":
        opt = ProxSGD(l1_param_groups(model, lam), lr=1.0 / gamma, lam=lam)
        return opt, inverse_sqrt_lr(opt, gamma)
    if method == "sqrt_prox_sgd":
        opt = SqrtProxSGD(l1_param_groups(model, lam), lr=1.0 / gamma, lam=lam, gamma=gamma)
        return opt, inverse_sqrt_lr(opt, gamma)
    groups = l1_param_groups(model, lam, anchor=hp["anchor"])
    if len(groups) > 1:
        groups[1]["anchor"] = "init"  # no l1 there: keep BN scales / biases at their init
    return IRDA(groups, lam=lam, gamma=gamma, anchor=hp["anchor"]), None


def _iterations(opt) -> int:
    """t of the first l1 group (the iteration counter of RDA / sqrt-prox-SGD)."""
    for p in opt.param_groups[0]["params"]:
        st = opt.state.get(p, {})
        if "step" in st:
            return int(st["step"])
    return 0


def current_threshold(opt, hp: dict) -> float:
    """The soft threshold the method applies at its next step (Sec. 3.3)."""
    lam, gamma = hp["lam"], hp["gamma"]
    if hp["method"] == "sgd":
        return 0.0
    if hp["method"] == "prox_sgd":
        return float(opt.param_groups[0]["lr"]) * lam
    return sqrt_prox_threshold(lam, gamma, max(1, _iterations(opt)))


def _best_val_index(rows: list[dict]) -> int:
    vals = [r.get("val_acc") for r in rows]
    if not rows or any(v is None for v in vals):
        return len(rows) - 1
    return max(range(len(rows)), key=lambda i: (vals[i], i))


@task("irda", defaults=IRDA_DEFAULTS, models=("resnet18", "vgg16", "vgg19"),
      train_epochs=lambda hp, e: e + (int(hp["retrain_epochs"]) if hp["method"] == "irda"
                                      else 0),  # Step 1, then Step 2 for iRDA
      datasets=("mnist", "cifar10", "cifar100", "imagenet"))
def irda(spec, ctx):
    """Train with SGD / prox-SGD / sqrt(t)-prox-SGD / iRDA (Steps 1-2); see the module doc."""
    hp = spec.hp
    check_hparams(hp)
    seed_everything(spec.seed)
    train, val, test = load_splits(spec, ctx)
    info = train.info
    model = IR.build_model(spec.model, info.num_classes, in_channels=info.shape[0],
                           width_div=hp["width_div"],
                           stem="imagenet" if spec.dataset == "imagenet" else "cifar"
                           ).to(ctx.device)
    if hp["s"] > 0:
        gen = torch.Generator().manual_seed(hp["init_seed"])
        IR.init_irda_(model, hp["s"], generator=gen)
    opt, iter_sched = make_irda_optimizer(model, hp)
    epoch_sched = make_schedule(opt, hp, spec.epochs) if hp["method"] == "sgd" else None
    pad, flip = (4, True) if hp["augment"] else (0, False)
    extra = {"iter_sched": iter_sched} if iter_sched is not None else {}

    def after_step(_model, _step):
        if iter_sched is not None:
            iter_sched.step()

    def epoch_metrics(m):
        sw, sa = _weights_sparsity(m)
        l1 = sum(float(w.detach().abs().sum()) for w in prunable_weights(m).values())
        return {"sparsity": sw, "sparsity_all": sa, "l1_norm": l1,
                "threshold": current_threshold(opt, hp)}

    common = dict(batch_size=hp["batch_size"], test=test, val=val, pad=pad, flip=flip,
                  seed=spec.seed, device=ctx.device, after_step=after_step,
                  epoch_metrics=epoch_metrics, extra_state=extra,
                  channels_last=hp["channels_last"])
    diverged = None
    history: list[dict] = []
    try:
        history = fit(model, train, epochs=spec.epochs, optimizer=opt, scheduler=epoch_sched,
                      ckpt_dir=ctx.stage_dir("step1"),
                      desc=f"{hp['method']} {spec.model}/{spec.dataset}", **common)
        for r in history:
            r["stage"] = 1
        step1_layers = layer_sparsity(model)
        if hp["retrain_epochs"]:
            opt.start_retraining()
            h2 = fit(model, train, epochs=hp["retrain_epochs"], optimizer=opt,
                     ckpt_dir=ctx.stage_dir("step2"), desc=f"iRDA step 2 {spec.model}", **common)
            for r in h2:
                r["stage"] = 2
                r["epoch"] += spec.epochs
            history += h2
    except NonFiniteLossError as exc:  # recorded, not hidden: e.g. a too large first step
        diverged = str(exc)
        log.warning("%s", exc)
        step1_layers = []
        history = _history_from_checkpoints(ctx, spec.epochs)
    steps_per_epoch = num_batches(len(train), hp["batch_size"])
    for r in history:
        r["iterations"] = r["epoch"] * steps_per_epoch  # t at the end of the epoch
        if not math.isfinite(r.get("lr", 0.0)):
            r["lr"] = None  # RDA has no learning rate
    metrics = _summarize(history, hp, spec, model, diverged, len(test))
    artifacts = {"layers_step1": step1_layers,
                 "layers_final": layer_sparsity(model) if diverged is None else []}
    return {"history": history, "metrics": metrics, "artifacts": artifacts}


def _history_from_checkpoints(ctx, epochs1: int) -> list[dict]:
    """The epochs finished before a divergence, read back from the stage checkpoints."""
    history = []
    for stage in ("step1", "step2"):
        path = checkpoint_path(ctx.stage_dir(stage))
        if path.exists():
            rows = torch.load(path, map_location="cpu", weights_only=False)["history"]
            for r in rows:
                r["stage"] = 1 if stage == "step1" else 2
                if stage == "step2":
                    r["epoch"] += epochs1
            history += rows
    return history


def _summarize(history, hp, spec, model, diverged, n_test) -> dict:
    base = {"params": count_params(model), "weights": sum(
        w.numel() for w in prunable_weights(model).values()), "test_n": n_test,
        "diverged": diverged is not None, "diverged_reason": diverged,
        "epoch_time_s": (sum(h["epoch_time_s"] for h in history) / len(history)
                         if history else None)}
    if diverged is not None or not history:
        return dict(base, test_acc=None, test_top5=None, sparsity=None)
    step1 = [r for r in history if r["stage"] == 1]
    step2 = [r for r in history if r["stage"] == 2]
    s1 = step1[-1]
    out = dict(base,
               step1_test_acc=s1["test_acc"], step1_test_top5=s1["test_top5"],
               step1_sparsity=s1["sparsity"], step1_val_acc=s1.get("val_acc"),
               step1_train_loss=s1["train_loss"], iterations=s1["iterations"])
    if step2:
        # Step 2's length is not stated in the paper: we take its epoch of best validation
        # accuracy (ties: the later one), never looking at the test set.
        chosen = step2[_best_val_index(step2)]
    else:
        chosen = s1
    out.update(test_acc=chosen["test_acc"], test_top5=chosen["test_top5"],
               test_loss=chosen["test_loss"], sparsity=chosen["sparsity"],
               sparsity_all=chosen["sparsity_all"], val_acc=chosen.get("val_acc"),
               chosen_epoch=chosen["epoch"], final_train_loss=history[-1]["train_loss"])
    if not math.isfinite(out["test_acc"]):
        out["test_acc"] = None
    return out


# ------------------------------------------------------------------ notebook 01: convex toy

CONVEX_DEFAULTS = dict(
    digits=[3, 8],
    lam=1e-3,
    gamma=1.0,
    steps=20000,
    batch_size=1,
    eval_every=500,
    fista_iters=1500,
    methods=["prox_sgd", "rda", "sqrt_prox_sgd"],
    seeds=[0, 1, 2],        # sample streams; one FISTA reference serves them all
)


@task("irda_convex", defaults=CONVEX_DEFAULTS, models=("logistic",), datasets=("mnist",))
def irda_convex(spec, ctx):
    """l1 logistic regression on two MNIST digits: the exact optimum (FISTA) and the paths of
    prox-SGD, RDA and sqrt(t)-prox-SGD (Sec. 3.3) for each sample stream in ``seeds``.
    ``epochs`` and ``seed`` of the spec are unused (give 1 and 0)."""
    hp = spec.hp
    for m in hp["methods"]:
        if m not in IR.TOY_METHODS:
            raise ValueError(f"methods: {m!r} is not known; allowed values: "
                             f"{list(IR.TOY_METHODS)}")
    if not hp["seeds"]:
        raise ValueError("seeds must list at least one seed")
    ctx.load("mnist", "train")  # provenance of the copy read
    prob = IR.load_l1_logistic(tuple(hp["digits"]), "train")
    test = IR.load_l1_logistic(tuple(hp["digits"]), "test")
    lam, gamma = hp["lam"], hp["gamma"]
    w_star, b_star = IR.fista_l1_logistic(prob, lam, hp["fista_iters"])
    metrics = {"fista_objective": prob.objective(w_star, b_star, lam),
               "fista_sparsity": float((w_star == 0).double().mean()),
               "fista_test_error": test.error(w_star, b_star),
               "fista_kkt": kkt_violation(prob, w_star, b_star, lam),
               "n_train": len(prob.y), "n_test": len(test.y), "finals": []}
    history, paths = [], {}
    for seed in hp["seeds"]:
        for m in hp["methods"]:
            path = IR.l1_logistic_path(prob, m, lam, gamma, hp["steps"], hp["batch_size"],
                                       hp["eval_every"], seed=seed)
            w = torch.tensor(path.pop("w"), dtype=torch.float64)
            b = path.pop("b")
            paths[f"{m}/{seed}"] = path
            support = w_star != 0
            metrics["finals"].append({
                "method": m, "seed": seed, "objective": path["objective"][-1],
                "loss": path["loss"][-1], "sparsity": path["sparsity"][-1],
                "test_error": test.error(w, b),
                "support_recall": float(((w != 0) & support).sum() / max(1, int(support.sum()))),
                "extra_nonzeros": int(((w != 0) & ~support).sum())})
            for i in range(len(path["t"])):
                history.append({"method": m, "seed": seed,
                                **{k: v[i] for k, v in path.items()}})
    return {"history": history, "metrics": metrics,
            "artifacts": {"paths": paths, "w_star": w_star.tolist(), "b_star": b_star}}


def kkt_violation(prob: IR.L1Logistic, w: torch.Tensor, b: float, lam: float) -> float:
    """Largest violation of the l1 optimality conditions (0 at the exact minimizer).

    grad_i + lam sign(w_i) = 0 where w_i != 0, |grad_i| <= lam where w_i = 0, grad_b = 0.
    """
    wb = w.clone().requires_grad_(True)
    bb = torch.tensor(float(b), dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(prob.x @ wb + bb, prob.y)
    gw, gb = torch.autograd.grad(loss, (wb, bb))
    nz = w != 0
    v_nz = (gw[nz] + lam * torch.sign(w[nz])).abs().max() if nz.any() else torch.tensor(0.0)
    v_z = (gw[~nz].abs() - lam).clamp(min=0).max() if (~nz).any() else torch.tensor(0.0)
    return float(max(v_nz, v_z, gb.abs()))
